"""The serial console log: its tail for error messages, and what the kernel said in it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Lines that mean the guest kernel is dead or dying: the boot failed because of the thing under
# test, not the machinery.
_FATAL = re.compile(
    r"Kernel panic - not syncing|"
    r"end Kernel panic|"
    r"BUG: kernel NULL pointer dereference|"
    r"Kernel Offset: |"
    r"---\[ end trace"
)
_PANIC = re.compile(r"Kernel panic - not syncing: ?(.*)")
SSHD_READY = "testbed-init: sshd ready"  # guest-images/rootfs/sbin/testbed-init, once sshd listens


@dataclass(frozen=True)
class Panic:
    line: str  # the "Kernel panic - not syncing: ..." line
    reason: str


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def tail(path: Path, n: int = 40) -> str:
    """The last n lines of the log (carriage returns from the serial port dropped)."""
    lines = read_text(path).replace("\r", "").splitlines()
    return "\n".join(lines[-n:])


def find_panic(text: str) -> Panic | None:
    for line in text.replace("\r", "").splitlines():
        m = _PANIC.search(line)
        if m:
            return Panic(line=line.strip(), reason=m.group(1).strip())
    return None


def describe(path: Path, n: int = 40) -> str:
    """Console tail plus its path, for error messages."""
    body = tail(path, n) or "(console log is empty)"
    return f"--- last {n} console lines ({path}) ---\n{body}\n--- end of console ---"
