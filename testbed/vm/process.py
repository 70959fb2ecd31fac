"""Start QEMU in its own session, tied to our life; stop it in stages; say why it ended."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import InfraError
from .exits import QemuExit, StopStage, note_sent, oom_kill_counter, qemu_kill_report, read_oom_kills, sent_to
from .launcher import LAUNCHER

log = logging.getLogger(__name__)  # DEBUG: each teardown stage

PR_SET_PDEATHSIG = 1
PDEATHSIG = signal.SIGKILL
# Loaded here, not in the child: dlopen between fork and exec can deadlock on loader locks.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn (runs in the child between fork and exec): SIGKILL us when the parent dies.

    Only async-signal-safe work here: one prctl and a getppid. The death signal fires when the
    *thread* that forked exits, so QemuProcess.start() forks on the launcher thread, which
    lives as long as the process (launcher.py).
    """
    if _LIBC.prctl(PR_SET_PDEATHSIG, PDEATHSIG, 0, 0, 0) != 0:
        os._exit(127)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(127)


@dataclass(frozen=True)
class StopReport:
    """How the process ended: the stage that ended it and its exit status."""

    stage: StopStage
    returncode: int | None


class QemuProcess:
    """A QEMU process leading its own process group (so Ctrl-C at the terminal does not hit
    it, and our teardown can signal every child it forks, e.g. helpers).

    `pass_fds`: descriptors QEMU inherits under the same numbers (its end of the QMP
    socketpair, named in argv as `fd=N`); every other descriptor of ours is closed in it.

    A watcher thread waits for QEMU's end from the moment it starts: it takes the status
    (os.waitid), kills what is left of its process group while QEMU is still an unreaped
    zombie (so the group's id cannot have been reused by then), reaps it, keeps `exit` (a
    QemuExit: status or signal, when, who if that can be known) and calls `on_exit` with it.
    Only then do poll()/wait() report the end; nothing else reaps QEMU.
    """

    def __init__(
        self,
        argv: list[str],
        log: Path,
        pass_fds: Iterable[int] = (),
        on_exit: Callable[[QemuExit], None] | None = None,
    ) -> None:
        if not argv:
            raise InfraError("empty QEMU command")
        self.argv = list(argv)
        self.log = log  # QEMU's own stdout+stderr ("could not open ...")
        self.pass_fds = tuple(pass_fds)
        self.on_exit = on_exit  # called on the watcher thread, before poll() reports the end
        self.exit: QemuExit | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._gone = threading.Event()  # set once `exit` is known and on_exit has run
        self._reap_lock = threading.RLock()  # a signal to the group never races the reap
        self._reaped = False
        self._stage: StopStage | None = None  # the teardown stage under way: an end from now on is ours
        self._forker: threading.Thread | None = None
        self._started_at = 0.0
        self._oom_counter: Path | None = None
        self._oom_before: int | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._oom_counter = oom_kill_counter()
        self._oom_before = read_oom_kills(self._oom_counter)
        with open(self.log, "ab") as out:
            try:
                LAUNCHER.call(lambda: self._spawn(out), undo=lambda _: self._abandon())
            except OSError as exc:
                raise InfraError(f"cannot start {self.argv[0]}: {exc}") from None

    def _spawn(self, out: IO[bytes]) -> subprocess.Popen[bytes]:
        """On the launcher thread (QEMU's parent-death signal follows the thread that forks),
        with its watcher: nothing between the two can be interrupted."""
        self._forker = threading.current_thread()
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
        self._started_at = time.time()
        threading.Thread(target=self._watch, name=f"qemu-{self._popen.pid}-exit", daemon=True).start()
        return self._popen

    def _abandon(self) -> None:
        """Its starter was interrupted (Ctrl-C) while QEMU started: it goes at once."""
        self._stage = StopStage.SIGKILL
        self._kill_group(signal.SIGKILL, f"the interrupted start of QEMU pid {self.pid}")

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise InfraError("QEMU not started")
        return self._popen.pid

    @property
    def started(self) -> bool:
        return self._popen is not None

    def poll(self) -> int | None:
        return self._popen.returncode if self._popen is not None and self._gone.is_set() else None

    def alive(self) -> bool:
        return self._popen is not None and not self._gone.is_set()

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after `timeout` seconds."""
        if self._popen is None or not self._gone.wait(timeout):
            return None
        return self._popen.returncode

    def describe_exit(self) -> str | None:
        """Why QEMU ended (None while it runs)."""
        return self.exit.describe() if self.exit is not None and self._gone.is_set() else None

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    # -- its end --------------------------------------------------------------------------

    def _watch(self) -> None:
        popen = self._popen
        assert popen is not None
        info: os.waitid_result | None = None
        try:
            info = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)  # ended; not reaped yet
        except ChildProcessError:
            pass  # reaped behind our back (a stray waitpid(-1)): the status is lost
        ended = time.time()
        stage = self._stage
        with self._reap_lock:
            if info is not None:
                self._kill_group(signal.SIGKILL)  # what QEMU forked into its group goes too
            popen.wait()
            self._reaped = True
        try:
            self.exit = self._exit_record(info, ended, stage)
            log.debug("%s", self.exit.describe())
            if self.on_exit is not None:
                self.on_exit(self.exit)
        except Exception:  # poll() must still see the end
            log.exception("qemu pid %d: recording its end failed", popen.pid)
        finally:
            self._gone.set()

    def _exit_record(self, info: os.waitid_result | None, ended: float, stage: StopStage | None) -> QemuExit:
        returncode, dumped = None, False
        if info is not None:
            killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
            returncode = -info.si_status if killed else info.si_status
            dumped = info.si_code == os.CLD_DUMPED
        after = read_oom_kills(self._oom_counter)
        oom = None
        if self._oom_counter is not None and self._oom_before is not None and after is not None:
            oom = (self._oom_counter, self._oom_before, after)
        sig = -returncode if returncode is not None and returncode < 0 else None
        return QemuExit(
            pid=self.pid,
            returncode=returncode,
            core_dumped=dumped,
            started=self._started_at,
            ended=ended,
            stage=stage,
            forker=self._forker.name if self._forker is not None else "?",
            forker_alive=self._forker is not None and self._forker.is_alive(),
            pdeathsig=PDEATHSIG,
            oom_kills=oom,
            qemu_said=qemu_kill_report(self.log),
            sent_by_us=sent_to(self.pid, sig, self._started_at) if sig else None,
        )

    # -- teardown -------------------------------------------------------------------------

    def stop(
        self, quit_fn: Callable[[], object] | None, quit_timeout: float, term_timeout: float, kill_timeout: float
    ) -> StopReport:
        """Staged teardown: `quit_fn()` (QMP quit) → SIGTERM the group → SIGKILL the group.

        Each stage gets its own deadline; a failing stage just moves on to the next one.
        """
        if self._popen is None:
            return StopReport(StopStage.EXITED, None)
        if self._gone.is_set() or self._ended_unseen():
            return StopReport(StopStage.EXITED, self.wait(5.0))
        stages = [(StopStage.SIGTERM, term_timeout), (StopStage.SIGKILL, kill_timeout)]
        if quit_fn is not None:
            stages.insert(0, (StopStage.QUIT, quit_timeout))
        for stage, timeout in stages:
            self._stage = stage
            try:
                if stage is StopStage.QUIT and quit_fn is not None:
                    quit_fn()
                else:
                    sig = signal.SIGTERM if stage is StopStage.SIGTERM else signal.SIGKILL
                    self._kill_group(sig, f"the teardown of QEMU pid {self.pid} ({stage})")
            except Exception:  # a dead monitor must not stop the next stage
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
                return StopReport(stage, code)
        return StopReport(StopStage.SURVIVED, None)

    def _ended_unseen(self) -> bool:
        """QEMU has ended though the watcher has not said so yet (its end is not our teardown's)."""
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _kill_group(self, sig: int, by: str | None = None) -> None:
        """Signal QEMU's process group (start_new_session: its id is QEMU's pid), only while
        QEMU is unreaped: after that the id is free and could name somebody else's group."""
        with self._reap_lock:
            if self._reaped:
                return
            if by is not None:
                note_sent(self.pid, sig, by)
            try:
                os.killpg(self.pid, sig)
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
