"""Start QEMU in its own session, tied to our life; stop it in stages."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InfraError

log = logging.getLogger(__name__)  # DEBUG: each teardown stage

PR_SET_PDEATHSIG = 1
# Loaded here, not in the child: dlopen between fork and exec can deadlock on loader locks.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn (runs in the child between fork and exec): SIGKILL us when the parent dies.

    Only async-signal-safe work here: one prctl and a getppid. The death signal fires when the
    *thread* that forked exits, so launch from a thread that lives as long as the VM.
    """
    if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(127)


@dataclass(frozen=True)
class StopReport:
    """How the process ended: the stage that ended it and its exit status."""

    stage: str  # "exited" | "quit" | "sigterm" | "sigkill" | "survived"
    returncode: int | None


class QemuProcess:
    """A QEMU process leading its own process group (so Ctrl-C at the terminal does not hit
    it, and our teardown can signal every child it forks, e.g. helpers).

    `pass_fds`: descriptors QEMU inherits under the same numbers (its end of the QMP
    socketpair, named in argv as `fd=N`); every other descriptor of ours is closed in it.
    """

    def __init__(self, argv: list[str], log: Path, pass_fds: Iterable[int] = ()) -> None:
        if not argv:
            raise InfraError("empty QEMU command")
        self.argv = list(argv)
        self.log = log  # QEMU's own stdout+stderr ("could not open ...")
        self.pass_fds = tuple(pass_fds)
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=self.pass_fds,
                    preexec_fn=_preexec_for(os.getpid()),
                )
            except OSError as exc:
                raise InfraError(f"cannot start {self.argv[0]}: {exc}") from None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise InfraError("QEMU not started")
        return self._popen.pid

    @property
    def started(self) -> bool:
        return self._popen is not None

    def poll(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after `timeout` seconds."""
        if self._popen is None:
            return None
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(
        self, quit_fn: Callable[[], object] | None, quit_timeout: float, term_timeout: float, kill_timeout: float
    ) -> StopReport:
        """Staged teardown: `quit_fn()` (QMP quit) → SIGTERM the group → SIGKILL the group.

        Each stage gets its own deadline; a failing stage just moves on to the next one.
        """
        if self._popen is None:
            return StopReport("exited", None)
        if self._popen.poll() is not None:
            self._reap_group()
            return StopReport("exited", self._popen.returncode)
        stages = [("sigterm", term_timeout), ("sigkill", kill_timeout)]
        if quit_fn is not None:
            stages.insert(0, ("quit", quit_timeout))
        for stage, timeout in stages:
            try:
                if stage == "quit" and quit_fn is not None:
                    quit_fn()
                else:
                    self._signal_group(signal.SIGTERM if stage == "sigterm" else signal.SIGKILL)
            except Exception:  # noqa: BLE001 - a dead monitor must not stop the next stage
                pass
            code = self.wait(timeout)
            log.debug(
                "qemu pid %d: %s, then %s within %.1fs",
                self.pid,
                stage,
                "gone" if code is not None else "still running",
                timeout,
            )
            if code is not None:
                self._reap_group()
                return StopReport(stage, code)
        return StopReport("survived", None)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)  # start_new_session: the pgid is QEMU's pid
        except ProcessLookupError:
            pass

    def _reap_group(self) -> None:
        # QEMU is gone; anything it forked into its group goes too.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _preexec_for(parent_pid: int) -> Callable[[], None]:
    return lambda: _die_with_parent(parent_pid)


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)
