"""The runtime directory (QMP sockets, VM registry) is ours and private, or nothing starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.paths import runtime_dir


def test_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = runtime_dir()
    assert path == tmp_path / f"testbed-{os.getuid()}"
    assert path.stat().st_mode & 0o777 == 0o700
    assert runtime_dir() == path  # a second call accepts what the first made


def test_wider_mode_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / f"testbed-{os.getuid()}").mkdir(mode=0o755)
    os.chmod(tmp_path / f"testbed-{os.getuid()}", 0o755)
    with pytest.raises(ConfigError, match="mode 755; it must be 700"):
        runtime_dir()


def test_a_link_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / f"testbed-{os.getuid()}").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="not a directory"):
        runtime_dir()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the directory to another uid")
def test_someone_elses_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = tmp_path / f"testbed-{os.getuid()}"
    path.mkdir(mode=0o700)
    os.chown(path, 12345, 12345)
    with pytest.raises(ConfigError, match="belongs to uid 12345"):
        runtime_dir()
