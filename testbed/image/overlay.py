"""Per-VM disks: a qcow2 overlay on the shared base image, so the base is never written."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import InfraError
from ..timeouts import Timeouts
from .model import GuestImage
from .steps import overlay_argv

OVERLAY_NAME = "overlay.qcow2"


def make_overlay(image: GuestImage, dest_dir: Path) -> Path:
    """A fresh overlay in dest_dir (an old one there is replaced: each boot starts clean)."""
    if not image.base.is_file():
        raise InfraError(f"{image.base}: base image missing; run `testbed image build`")
    dest_dir.mkdir(parents=True, exist_ok=True)
    overlay = dest_dir / OVERLAY_NAME
    overlay.unlink(missing_ok=True)
    argv = overlay_argv(image.base, image.format, overlay)
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=Timeouts().host_tool
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfraError(f"qemu-img create {overlay}: {exc}") from None
    if proc.returncode != 0:
        raise InfraError(f"qemu-img create {overlay} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return overlay
