"""`testbed cache key`: the keys a build would get, from Debian's package index alone (the kernel
source is neither downloaded nor extracted), for every --kernel-config name including the boot
profiles (debug-full boots the debug build), and equal to what kernel/build.py's plan() gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import testbed.cache.keys as keys
import testbed.kernel.build as build
from testbed.cli import main
from testbed.errors import ConfigError, InfraError
from testbed.kernel import debian
from testbed.kernel.configsets import KERNEL_CONFIGS, build_set
from testbed.kernel.source import SourceTree

VERSION, SHA256 = "7.2.13-1", "ab" * 32
IDENTITY = f"debian:{debian.PACKAGE}={VERSION}:sha256={SHA256}"


@pytest.fixture
def index(monkeypatch, tmp_path):
    """A package index that lists the source, apt calls recorded, and no way to fetch it."""
    calls: list[list[str]] = []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(keys, "debian_mirror", lambda: "http://mirror.example/debian")
    monkeypatch.setattr(debian.PrivateApt, "run", lambda self, args, cwd=None: calls.append(args) or "")
    monkeypatch.setattr(debian.PrivateApt, "cache_show", lambda self, pkg: {"Version": VERSION, "SHA256": SHA256})

    def no_fetch(*args, **kwargs):
        raise AssertionError("the key must not fetch the source")

    monkeypatch.setattr(debian, "fetch", no_fetch)
    monkeypatch.setattr(debian, "extract", no_fetch)
    for module in (keys, build):
        monkeypatch.setattr(module, "compiler_version", lambda: "gcc (test) 1.0")
    return calls


def test_the_source_identity_comes_from_the_index(index):
    assert keys.index_source_identity(progress=lambda _: None) == IDENTITY
    assert index == [["update"]]  # the index, nothing downloaded


@pytest.mark.parametrize("base_fixes", ["1", "0"])
def test_keys_equal_the_builds_keys_for_every_name(index, monkeypatch, base_fixes):
    # plan() resolves the same source through the fetch path; the two must never drift apart
    monkeypatch.setenv("TESTBED_BASE_FIXES", base_fixes)
    monkeypatch.setattr(
        build.sourcemod, "debian_tree", lambda root, progress=print: SourceTree(Path("/src"), IDENTITY, "debian")
    )
    for name in KERNEL_CONFIGS:
        got = keys.kernel_key(name, IDENTITY)
        planned = build.plan(build_set(name), progress=lambda _: None)
        assert planned is not None and (got.build, got.key) == (build_set(name), planned.key), name


def test_cache_key_command_takes_boot_profiles_and_writes_the_ci_key(index, tmp_path, capsys):
    outputs = tmp_path / "github-output"
    argv = ["cache", "key", "--kernel-config", "debug-full", "--selftest", "--github-output", str(outputs)]
    assert main(argv) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert list(lines) == ["kernel-debug-full", "kernel-debug-full-selftest", "image"]
    assert lines["kernel-debug-full"] == keys.kernel_key("debug", IDENTITY).key  # the debug build
    assert re.fullmatch(r"key=testbed-debug-full-[0-9a-f]{32}\n", outputs.read_text())
    assert main(argv) == 0 and len(set(outputs.read_text().splitlines())) == 1  # appended, and stable


def test_config_names():
    assert keys.config_names(["default", "debug-full"], selftest=True) == (
        "default",
        "selftest",
        "debug-full",
        "debug-full-selftest",
    )
    assert keys.config_names(["selftest", "default", "default"], selftest=True) == ("selftest", "default")
    with pytest.raises(ConfigError, match="unknown kernel config debug-fast; allowed: default, "):
        keys.config_names(["debug-fast"], selftest=False)


def test_an_index_without_the_checksum_is_an_infra_error(index, monkeypatch):
    monkeypatch.setattr(debian.PrivateApt, "cache_show", lambda self, pkg: {"Version": VERSION})
    with pytest.raises(InfraError, match="without a Version and SHA256"):
        keys.index_source_identity(progress=lambda _: None)
