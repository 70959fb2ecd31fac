"""Where things live: the repository's data directories and the user's cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES_DIR = REPO_ROOT / "topologies"
KERNEL_CONFIGS_DIR = REPO_ROOT / "kernel-configs"
GUEST_IMAGES_DIR = REPO_ROOT / "guest-images"
KNOWN_SPLATS_FILE = REPO_ROOT / "known-splats.yaml"


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
    """Sockets and pid files of running VMs (short paths: unix sockets cap at 107 bytes)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    path = Path(base) / f"testbed-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
