"""What a failed VM test leaves behind, under the results directory, with its path in the report."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from ..guestvm import GuestVM
from ..logs.known import RELEASE_RE

EXCERPT_LINES = 200


def test_dir(results: Path, nodeid: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")
    path = results / "tests" / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def collect(vm: GuestVM, dest: Path, window: tuple[int, int] | None) -> list[str]:
    """Write console excerpt, dmesg, QEMU command and QMP events; returns what was written."""
    written = []
    lines = vm.machine.console_log.read_text(errors="replace").splitlines()
    first, last = window if window else (max(1, len(lines) - EXCERPT_LINES), len(lines))
    # the boot banner first: `testbed scan-log` reads the kernel release from it (known splats)
    banner = [line for line in lines[:200] if RELEASE_RE.search(line)][:1]
    (dest / "console-excerpt.log").write_text("\n".join(banner + lines[first - 1 : last]) + "\n")
    written.append(f"console-excerpt.log (boot banner + lines {first}-{last} of {vm.machine.console_log})")
    (dest / "qemu-command.txt").write_text(shlex.join(vm.machine.argv) + "\n")
    written.append("qemu-command.txt")
    if vm.machine.events_log.exists():
        shutil.copy(vm.machine.events_log, dest / "qmp-events.jsonl")
        written.append("qmp-events.jsonl")
    try:
        (dest / "dmesg.txt").write_text(vm.dmesg())
        written.append("dmesg.txt")
    except Exception as exc:  # the guest may be the thing that died
        (dest / "dmesg.txt").write_text(f"(dmesg unavailable: {exc})\n")
    return written
