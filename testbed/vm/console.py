"""The serial console log: its tail for error messages, and what the kernel said in it."""

from __future__ import annotations

import re
import time
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
# An RCU stall before init has sshd up: seen under TCG with more busy guests than host cores,
# a vCPU that stops taking timer interrupts ("Possible timer handling issue on cpu=1"); the
# boot then waits out every deadline (NVMe admin commands time out one a minute).
_STALL = re.compile(r"rcu: INFO: rcu_\w+ (?:self-)?detected stalls?")
_INIT_RUN = re.compile(r"Run \S+ as init process")  # init/main.c, the kernel's last boot step
# A KTAP line (KUnit at boot): a test may run silently for seconds after one (test_wait_forward
# ran 9 s under TCG), so early-boot silence after it is not a stall.
_KTAP = re.compile(r"^(?:\[\s*\d+\.\d+\])?\s*(?:K?TAP version \d+|1\.\.\d+|(?:not )?ok \d+|# )")


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


def find_stall(line: str) -> bool:
    return _STALL.search(line) is not None


def _read_from(path: Path, offset: int) -> bytes:
    """The log's bytes from `offset` on (none while QEMU has not created it yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


class ConsoleLines:
    """The complete lines the console gained since the last look (the boot wait looks every
    20 ms; reading the whole log each time took host CPU from the guest it waited for), and
    how long the kernel has said nothing before running init."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self._last_at = time.monotonic()
        self._last_line: str | None = None  # none yet
        self.init_started = False

    def new(self) -> list[str]:
        data = _read_from(self.path, self._offset)
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        text = [line.decode("utf-8", errors="replace").replace("\r", "") for line in lines]
        if text:
            self._last_at = time.monotonic()
            self._last_line = text[-1]
            self.init_started = self.init_started or any(_INIT_RUN.search(line) for line in text)
        return text

    def early_boot_silence(self, at_least: float) -> str | None:
        """If the kernel, not yet at init, has said nothing more for `at_least` seconds (and its
        last line is no KUnit test's): that line; else None. A console still empty is left to
        the deadlines (a kernel of the user's may print nothing on ttyS0 and boot fine)."""
        if self._last_line is None or self.init_started or _KTAP.match(self._last_line):
            return None
        return self._last_line if time.monotonic() - self._last_at >= at_least else None


class NumberedLines:
    """The console's complete lines with their 1-based numbers, read on from where the last
    look stopped. Numbered as `str.splitlines()` of the whole log numbers them (the per-test
    windows index the log that way): every chunk handed to splitlines() ends in a newline, so
    no line break falls between two chunks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._count = 0

    def new(self) -> list[tuple[int, str]]:
        data = _read_from(self.path, self._offset)
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        lines = complete.decode("utf-8", errors="replace").splitlines()
        first = self._count + 1
        self._count += len(lines)
        return list(enumerate(lines, first))

    def count(self) -> int:
        """The number of complete lines in the log now."""
        self.new()
        return self._count


# DEBUG_KOBJECT_RELEASE (the debug sets) delays each kobject's release: "kobject: 'x' (...):
# kobject_release, parent ... (delayed 750)", 250-1000 jiffies seen on 7.2 (HZ=1000). A splat
# such a release brings (the known ODEBUG in bdev_free_inode) then prints up to a second after
# the test that unplugged the device ended; a shutdown in that second cut one report in half.
_DELAYED_RELEASE = re.compile(r"kobject_release, parent \S+ \(delayed \d+\)")
SETTLE_QUIET_S = 1.2
SETTLE_MAX_S = 5.0
_SETTLE_TAIL_LINES = 300


def settle(path: Path, quiet_s: float = SETTLE_QUIET_S, max_s: float = SETTLE_MAX_S) -> float:
    """Before a shutdown: if the console's tail shows delayed kobject releases, wait until it
    has printed nothing for `quiet_s` (at most `max_s`), so what those releases print is
    read whole. Nothing to wait for on kernels without DEBUG_KOBJECT_RELEASE. Seconds waited."""
    lines = read_text(path).splitlines()[-_SETTLE_TAIL_LINES:]
    if not any(_DELAYED_RELEASE.search(line) for line in lines):
        return 0.0
    start = time.monotonic()
    while time.monotonic() - start < max_s:
        try:
            idle = time.time() - path.stat().st_mtime
        except OSError:
            break
        if idle >= quiet_s:
            break
        time.sleep(min(quiet_s - idle, 0.1) + 0.01)
    return time.monotonic() - start
