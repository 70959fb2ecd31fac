"""Why a QEMU ended: its exit status or the signal, when, and what can be said about who.

Linux tells a parent which signal ended its child (waitid: CLD_KILLED/CLD_DUMPED and the
signal number), never who sent it; a SIGCHLD's siginfo names the child, not the killer, and a
SIGKILL leaves QEMU no chance to say anything. So the sender is named only where it can be
known: our own teardown, a signal this process sent to that process group, QEMU's own line
for the signals it catches ("terminating on signal 15 from pid P (cmd)"), the parent-death
signal when the thread that forked QEMU has ended, the kernel's OOM killer when the memory
cgroup's oom_kill counter rose meanwhile. Anything else is said to be unknown.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

# QEMU 7.2 softmmu/runstate.c qemu_kill_report(), for SIGTERM, SIGINT, SIGHUP
_QEMU_KILL_REPORT = re.compile(r"terminating on signal \d+(?: from pid \d+ \(.*\))?")


class StopStage(str, Enum):
    """How a QEMU ended, as far as our teardown goes: on its own, or at which of our steps."""

    EXITED = "exited"  # before any step of ours
    QUIT = "quit"
    SIGTERM = "sigterm"
    SIGKILL = "sigkill"
    SURVIVED = "survived"  # every step done, still alive

    def __str__(self) -> str:  # reports print the word
        return self.value


STAGE_WORDS = {
    StopStage.QUIT: "our QMP quit",
    StopStage.SIGTERM: "our SIGTERM to its process group",
    StopStage.SIGKILL: "our SIGKILL to its process group",
}


@dataclass(frozen=True)
class SentSignal:
    at: float  # time.time()
    pgid: int
    signal: int
    by: str  # what sent it, in words


_SENT: deque[SentSignal] = deque(maxlen=256)
_SENT_LOCK = threading.Lock()


def note_sent(pgid: int, sig: int, by: str) -> None:
    """Remember a signal this process sent to a process group (the sender a death can name)."""
    with _SENT_LOCK:
        _SENT.append(SentSignal(time.time(), pgid, sig, by))


def sent_to(pid: int, sig: int, since: float) -> SentSignal | None:
    """The last `sig` this process sent to group `pid` after `since`, if any."""
    with _SENT_LOCK:
        return next((s for s in reversed(_SENT) if s.pgid == pid and s.signal == sig and s.at >= since), None)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def oom_kill_counter() -> Path | None:
    """The file counting OOM kills in this process's memory cgroup (QEMU inherits it):
    cgroup v2 memory.events or v1 memory.oom_control, each with an `oom_kill N` line; both
    count kills by the global OOM killer too. None where there is none to read."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:
            candidates += [Path(f"/sys/fs/cgroup{root}{path}/memory.events") for root in ("", "/unified")]
        elif "memory" in controllers.split(","):
            candidates.append(Path(f"/sys/fs/cgroup/memory{path}/memory.oom_control"))
    return next((c for c in candidates if read_oom_kills(c) is not None), None)


def read_oom_kills(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    m = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def qemu_kill_report(log: Path) -> str | None:
    """QEMU's own last words on a signal it caught, from its log."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = _QEMU_KILL_REPORT.findall(text)
    return found[-1] if found else None


@dataclass(frozen=True)
class QemuExit:
    """How one QEMU ended, as its parent saw it (os.waitid), with the circumstances."""

    pid: int
    returncode: int | None  # Popen's convention: -N for signal N; None: status unknown
    core_dumped: bool
    started: float  # time.time()
    ended: float
    stage: StopStage | None  # our teardown step under way when it ended; None: nobody here asked
    forker: str  # the thread that forked it
    forker_alive: bool
    pdeathsig: int
    oom_kills: tuple[Path, int, int] | None  # counter file, at start, at exit
    qemu_said: str | None  # QEMU's "terminating on signal N from pid P (cmd)"
    sent_by_us: SentSignal | None  # the same signal, sent by this process to its group

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None

    @property
    def expected(self) -> bool:
        return self.stage is not None

    def how(self) -> str:
        if self.returncode is None:
            return "ended, status unknown (reaped by someone else)"
        if self.signal is None:
            return f"exited with status {self.returncode}"
        dumped = ", core dumped" if self.core_dumped else ""
        return f"was killed by signal {self.signal} ({signal_name(self.signal)}{dumped})"

    def describe(self) -> str:
        """One paragraph: what ended QEMU, when, and who, as far as can be known."""
        took = self.ended - self.started
        return f"QEMU pid {self.pid} {self.how()} {took:.1f} s after it started (at {clock(self.ended)}): {self.who()}"

    def who(self) -> str:
        sig = self.signal
        if self.stage is not None:
            return f"during the testbed's teardown, after {STAGE_WORDS.get(self.stage, str(self.stage))}"
        if self.sent_by_us is not None:
            return f"sent by this testbed process at {clock(self.sent_by_us.at)}: {self.sent_by_us.by}"
        if self.qemu_said:
            return f"QEMU logged: {self.qemu_said!r}"
        if sig is not None and sig == self.pdeathsig and not self.forker_alive:
            return (
                f"the parent-death signal: the thread that started QEMU ({self.forker}) has ended, and Linux "
                "sends PR_SET_PDEATHSIG when the forking *thread* exits, not the process"
            )
        if self.returncode is None:
            return "nothing more is known"
        if sig is None:
            if self.returncode == 0:
                return (
                    "QEMU ended by itself: the guest powered off or reset (-no-reboot turns a reboot or a "
                    "triple fault into an exit)"
                )
            return "QEMU's own error (its words, if any, are in qemu.log)"
        if sig in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
            return "QEMU crashed (an assertion, abort or fault; what it printed is in qemu.log)"
        parts = [
            "sender unknown: Linux tells a parent which signal ended its child, not who sent it"
            + (", and a SIGKILL leaves QEMU no word to log" if sig == signal.SIGKILL else ""),
            "not this testbed's teardown",
        ]
        if sig == self.pdeathsig:
            parts.append(f"not the parent-death signal (the thread that started it, {self.forker}, still runs)")
        parts.append(self._oom_words())
        return "; ".join(p for p in parts if p)

    def _oom_words(self) -> str:
        if self.oom_kills is None:
            return "whether the OOM killer did it is unknown (no memory cgroup counter to read; see the host's dmesg)"
        path, before, after = self.oom_kills
        if after > before:
            return (
                f"the kernel's OOM killer killed {after - before} process(es) of this memory cgroup while QEMU ran "
                f"({path}: oom_kill {before} -> {after}): most likely QEMU (the host's dmesg names its victims)"
            )
        return f"no OOM kill in this memory cgroup meanwhile ({path}: oom_kill {after})"
