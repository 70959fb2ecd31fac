"""A VM's kernel coverage counters onto the host: one snapshot directory per call.

The guest's /sys/kernel/debug/gcov mirrors the kernel's build directory as it was at compile time
(`<build dir>/drivers/pci/p2pdma.gcda`); a snapshot stores each `.gcda` at its path relative to
that build directory, which the coverage build's manifest names (`coverage.gcov_root`), so the
notes kept with the kernel (`<cache entry>/coverage/gcno/`) pair with them by path.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import GuestError
from ..kernel.artifact import read_manifest
from .guest import GUEST_AGENT_DIR, GuestVM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    directory: Path  # .gcda files, by path relative to the kernel's build directory
    files: int  # how many .gcda files the guest had


def coverage_manifest(bzimage: Path | None) -> dict | None:
    """The `coverage` record of a testbed-built coverage kernel's manifest, or None."""
    if bzimage is None:
        return None
    manifest = read_manifest(bzimage.parent)
    return manifest.coverage if manifest is not None else None


def _snapshot(guest: GuestVM) -> dict:
    """gcov.py snapshot through the agent; over SSH if a test stopped the agent (the helper
    modules stay where the agent unpacked them), so its counters are still read."""
    if guest.agent_running:
        return dict(guest.agent("gcov", "snapshot"))
    said = guest.run(f"python3 {GUEST_AGENT_DIR}/gcov.py snapshot", check=True)
    lines = said.stdout.strip().splitlines()
    if not lines:
        raise GuestError(f"{guest.machine.name}: gcov.py snapshot over SSH printed nothing: {said.stderr[-500:]}")
    return dict(json.loads(lines[-1]))


def take(guest: GuestVM, directory: Path, gcov_root: str) -> Snapshot | None:
    """The counters since the last snapshot (or boot) into `directory`, then zeroed in the
    guest. None when the guest's kernel has no gcov."""
    answer = _snapshot(guest)
    if not answer.get("ok"):
        raise GuestError(f"{guest.machine.name}: reading the gcov counters failed: {answer}")
    if not answer.get("present"):
        return None
    prefix = gcov_root.strip("/") + "/"
    directory.mkdir(parents=True, exist_ok=True)
    for rel, data in answer["files"].items():
        # a file outside the build directory (none expected) keeps its full path
        path = directory / (rel[len(prefix) :] if rel.startswith(prefix) else rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
    return Snapshot(directory, len(answer["files"]))
