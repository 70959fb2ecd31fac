"""Where things live: the repository's data directories and the user's cache."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES_DIR = REPO_ROOT / "topologies"
KERNEL_CONFIGS_DIR = REPO_ROOT / "kernel-configs"
GUEST_IMAGES_DIR = REPO_ROOT / "guest-images"
KNOWN_SPLATS_FILE = REPO_ROOT / "known-splats.yaml"
UPSTREAM_FIXES_DIR = REPO_ROOT / "upstream-fixes"


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/testbed` (default `~/.cache/testbed`); `TESTBED_CACHE` overrides."""
    override = os.environ.get("TESTBED_CACHE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "testbed"


def cache_dir(kind: str) -> Path:
    """A sub-directory of the cache for one kind of artifact (kernel, image, ...), created."""
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_root() -> Path:
    """Per-run results (console logs, QMP event logs, JUnit); `TESTBED_RESULTS` overrides."""
    override = os.environ.get("TESTBED_RESULTS")
    return Path(override) if override else REPO_ROOT / "results"


def runtime_dir() -> Path:
    """Sockets and pid files of running VMs (short paths: unix sockets cap at 107 bytes).

    Without XDG_RUNTIME_DIR it lives in the shared temp folder, where anyone could have made
    `testbed-<uid>` first: it must be a directory (not a link) of ours with mode 0700, or the
    QMP sockets and the VM registry in it would be someone else's to read and replace."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"testbed-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    """A ConfigError unless `path` is a real directory owned by us, closed to everyone else."""
    from .errors import ConfigError

    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} is not a directory (a link or a file): refusing to keep VM sockets there")
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"{path} belongs to uid {info.st_uid}, not to you ({os.getuid()}): remove it or set XDG_RUNTIME_DIR"
        )
    if info.st_mode & 0o077:
        raise ConfigError(f"{path} has mode {stat.S_IMODE(info.st_mode):o}; it must be 700 (chmod 700 {path})")
