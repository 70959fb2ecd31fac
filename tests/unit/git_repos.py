"""Tiny git repositories for unit tests of what works on kernel trees (patches, base fixes, bisect)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def tiny_kernel(path: Path, files: dict[str, str] | None = None) -> Path:
    """A git repository that passes for a kernel tree (Makefile, Kconfig, `files`), one commit."""
    path.mkdir()
    (path / "Makefile").write_text("VERSION = 7\n")
    (path / "Kconfig").write_text('mainmenu "x"\n')
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    git(path, "init", "-q")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "base")
    return path
