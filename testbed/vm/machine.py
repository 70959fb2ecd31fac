"""One running VM: QEMU process + QMP + console log + SSH, torn down in stages on exit."""

from __future__ import annotations

import fcntl
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import paramiko

from ..errors import GuestError, InfraError, TestbedError
from ..render.argv import inherited_monitor_args
from ..render.runtime import Runtime
from ..timeouts import Deadline, Timeouts
from . import console, registry
from .exits import QemuExit, StopStage
from .liveness import GUEST_STILL_S, VcpuClock, vcpu_time_ns
from .process import QemuProcess, StopReport
from .qmp import QMP, RunState
from .ssh import SSH, RunResult
from .usernet import host_port_for

__all__ = ["BootStalled", "Machine", "RunResult"]

log = logging.getLogger(__name__)  # a QEMU that ended unasked (pytest shows the record with the failure)

# A broken SSH or QMP connection is often seen a moment before QEMU's exit status: how long an
# error met talking to the guest waits for it, to say why QEMU ended (or that it still runs).
GONE_GRACE_S = 1.0
HUNG_QMP_S = 5.0  # hung()'s QMP questions: a look must not hold up the wait it is part of
SHUTDOWN_EVENT_WAIT_S = 0.5  # for QMP to read QEMU's last words (SHUTDOWN) after its exit


class BootStalled(InfraError):
    """The guest stalled while booting, under TCG: an RCU stall before sshd came up (a vCPU
    starved of host CPU), or a kernel silent before init (a lost wakeup between vCPUs). The
    pool boots such a VM once more and says so."""


def _monitor_socketpair() -> tuple[socket.socket, socket.socket]:
    """(ours, QEMU's): a connected pair, QEMU's end above stdio (were our stdin closed, the
    pair could land on fd 0, which QEMU's stdin redirection would overwrite)."""
    ours, qemus = socket.socketpair()
    if qemus.fileno() < 3:
        high = fcntl.fcntl(qemus.fileno(), fcntl.F_DUPFD_CLOEXEC, 3)
        qemus.close()
        qemus = socket.socket(fileno=high)
    return ours, qemus


class Machine:
    """
    with Machine(argv, runtime, ssh_key, timeouts, name) as vm:
        vm.wait_ssh().run("uname -r", check=True)
        vm.qmp.command("device_del", {"id": "nvme1"}); vm.qmp.wait_event("DEVICE_DELETED", ...)

    Artifacts sit next to the console log: qemu.log (QEMU's stderr), qmp-events.jsonl, and
    exit.txt once QEMU has ended: its status or signal, when, and who (`death`), also appended
    to qemu.log and, when nobody here asked for it, logged as an ERROR and added to the errors
    that its end causes (`explain`).

    Two QMP monitors: the testbed's own, on a socketpair QEMU inherits (`vm.qmp`, connected as
    QEMU starts, no socket to wait for), and the rendered `-qmp unix:PATH` one that `testbed boot
    --paused` users and other processes reach through the registry's `qmp_socket`. `argv` is the
    rendered command; `process.argv` is what ran (with the inherited monitor added).
    """

    death: str | None = None  # why QEMU ended, once it has

    def __init__(self, argv: list[str], runtime: Runtime, ssh_key: Path, timeouts: Timeouts, name: str) -> None:
        self.argv = list(argv)
        self.runtime = runtime
        self.ssh_key = ssh_key
        self.timeouts = timeouts
        self.name = name
        self.console_log = runtime.console_log
        self.artifacts_dir = runtime.console_log.parent
        self.qemu_log = self.artifacts_dir / "qemu.log"
        self.events_log = self.artifacts_dir / "qmp-events.jsonl"
        self.exit_file = self.artifacts_dir / "exit.txt"
        self.process = QemuProcess(self.argv, self.qemu_log)  # replaced in start(), with the monitor
        self.qmp = QMP(self.events_log, timeouts.qmp_command, name, event_timeout=timeouts.event)
        self.qmp.gone = self.gone
        self.ssh_port: int | None = None
        self._ssh: SSH | None = None
        self._registered = False
        self.stop_report: StopReport | None = None
        self.started_at: float | None = None
        self.ssh_ready_seconds: float | None = None  # launch → first SSH login
        self.ready_seconds: float | None = None  # launch → ready for tests (the guest agent answering)
        self._vcpu_clock: VcpuClock | None = None  # hung()'s looks

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Machine:
        try:
            self.start()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    def start(self) -> None:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.runtime.qmp_socket.unlink(missing_ok=True)  # a stale socket from a dead run
        self.started_at = time.monotonic()
        ours, qemus = _monitor_socketpair()
        with qemus:  # closed here once QEMU has its copy: QEMU's exit is then EOF on ours
            fd = qemus.fileno()
            argv = self.argv + inherited_monitor_args(fd)
            self.process = QemuProcess(argv, self.qemu_log, pass_fds=(fd,), on_exit=self._qemu_ended)
            try:
                self.process.start()
            except BaseException:
                ours.close()
                raise
        try:
            self.qmp.connect(ours, self.timeouts.qmp_connect)
        except InfraError as exc:
            ended = self.gone(GONE_GRACE_S) or f"QEMU pid {self.process.pid} still running"  # EOF: it is exiting
            raise InfraError(f"{exc}\n{ended}\n{self._qemu_said()}") from None
        self.ssh_port = self._read_ssh_port()
        registry.register(
            registry.VmRecord(
                name=self.name,
                pid=self.process.pid,
                ssh_port=self.ssh_port,
                ssh_key=str(self.ssh_key),
                qmp_socket=str(self.runtime.qmp_socket),
                console_log=str(self.console_log),
                started=time.time(),
            )
        )
        self._registered = True

    def _read_ssh_port(self) -> int:
        if self.runtime.ssh_host_port:
            return self.runtime.ssh_host_port
        # hostfwd=tcp:127.0.0.1:0-:22 lets the kernel pick a free port (no collisions between
        # parallel VMs); slirp shows the real one in `info usernet`, even while paused at -S.
        return host_port_for(self.qmp.hmp("info usernet"), guest_port=22)

    def shutdown(self) -> StopReport | None:
        """Staged teardown: QMP quit → SIGTERM group → SIGKILL group. Idempotent."""
        if self.stop_report is not None:
            return self.stop_report
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        quit_fn = None
        if self.qmp.connected and self.process.alive():
            quit_fn = lambda: self.qmp.command("quit", timeout=self.timeouts.quit)  # noqa: E731
        self.stop_report = self.process.stop(quit_fn, self.timeouts.quit, self.timeouts.terminate, self.timeouts.kill)
        self.qmp.close()
        if self._registered:
            registry.unregister(self.name, self.process.pid)
            self._registered = False
        else:
            registry.unreserve(self.name)  # the name launch reserved, if QEMU never registered
        self.runtime.qmp_socket.unlink(missing_ok=True)
        if self.runtime.agent_socket is not None:
            self.runtime.agent_socket.unlink(missing_ok=True)
        if self.stop_report.stage is StopStage.SURVIVED:
            raise InfraError(
                f"QEMU pid {self.process.pid} survived SIGKILL (stuck in the kernel?); console: {self.console_log}"
            )
        return self.stop_report

    # -- guest ----------------------------------------------------------------------------

    @property
    def ssh(self) -> SSH:
        if self._ssh is None:
            raise InfraError(f"{self.name}: SSH not connected yet (call wait_ssh())")
        return self._ssh

    def wait_ssh(self, timeout: float | None = None) -> SSH:
        """Log in over SSH, retrying until the guest's sshd answers or the deadline.

        A kernel panic on the console or QEMU exiting ends the wait at once (GuestError /
        InfraError); a plain timeout is an InfraError. Both show the console tail."""
        if self._ssh is not None:
            return self._ssh
        if self.ssh_port is None:
            raise InfraError(f"{self.name}: not started")
        if self.runtime.paused and self.qmp.run_state() is RunState.PRELAUNCH:
            self.qmp.command("cont")
        timeout = self.timeouts.boot_to_ssh if timeout is None else timeout
        deadline = Deadline(timeout)
        self._wait_sshd_listening(deadline)
        ssh = SSH(self.ssh_port, self.ssh_key, command_timeout=self.timeouts.guest_command)
        try:
            ssh.connect(
                max(deadline.remaining(), self.timeouts.ssh_attempt),
                attempt_timeout=self.timeouts.ssh_attempt,
                interval=self.timeouts.ssh_retry_interval,
                check=self._check_alive,
            )
        except InfraError as exc:
            self._check_alive()
            panic = console.find_panic(console.read_text(self.console_log))
            kind = GuestError if panic else InfraError
            raise kind(f"{self.name}: {exc}\n{console.describe(self.console_log)}") from None
        if self.started_at is not None:
            self.ssh_ready_seconds = time.monotonic() - self.started_at
        self._ssh = ssh
        return ssh

    def _wait_sshd_listening(self, deadline: Deadline) -> None:
        """Until the guest's init logs that sshd listens. Connecting before that parks the
        TCP connection in QEMU's user-mode network, which retries the guest with TCP's
        back-off: the login then came 1.5-4 s after sshd was up. A panic, an RCU stall under
        TCG (BootStalled) and a dead QEMU end the wait at once; a console that never says it
        leaves the SSH retries to decide."""
        sshd_ready = lambda line: console.SSHD_READY in line  # noqa: E731
        self.watch_boot(deadline, console.ConsoleLines(self.console_log), line_done=sshd_ready)

    def watch_boot(
        self,
        deadline: Deadline,
        lines: console.ConsoleLines,
        line_done: Callable[[str], bool] = lambda _: False,
        done: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Watch the booting guest's console, the lines `lines` has not handed out yet, until
        one satisfies `line_done` or `done()` holds (True), or the deadline passes (False). A
        panic (GuestError), a dead QEMU (InfraError), and under TCG an RCU stall or a kernel
        silent for timeouts.boot_silence before init (BootStalled) end the watch at once. A
        caller that watches in turns passes the same reader each time."""
        while not deadline.expired:
            exited = self.process.poll() is not None  # before the read: its last words are read
            for line in lines.new():
                if line_done(line):
                    return True
                panic = console.find_panic(line)
                if panic:
                    raise GuestError(
                        f"{self.name}: guest kernel panicked: {panic.reason}\n{console.describe(self.console_log)}"
                    )
                if console.find_stall(line) and self.runtime.accel == "tcg":
                    raise BootStalled(
                        f"{self.name}: the guest stalled while booting ({line.strip()}); under TCG a vCPU "
                        f"that gets no host CPU stops taking timer interrupts\n{console.describe(self.console_log)}"
                    )
            if exited:
                self._check_exited()
            silent_after = lines.early_boot_silence(self.timeouts.boot_silence)
            if silent_after is not None and self.runtime.accel == "tcg":
                raise BootStalled(
                    f"{self.name}: the guest stalled while booting (no console line for "
                    f"{self.timeouts.boot_silence:.0f} s before init, after {silent_after.strip()!r}); under TCG "
                    f"a boot now and then loses a wakeup between vCPUs\n{console.describe(self.console_log)}"
                )
            if done():
                return True
            time.sleep(0.02)
        return False

    def _check_alive(self) -> None:
        """Raise if waiting longer is pointless: the kernel panicked or QEMU is gone."""
        panic = console.find_panic(console.read_text(self.console_log))
        if panic:
            raise GuestError(
                f"{self.name}: guest kernel panicked: {panic.reason}\n{console.describe(self.console_log)}"
            )
        self._check_exited()

    def _check_exited(self) -> None:
        code = self.process.poll()
        if code is not None:
            ended = self.death or f"QEMU exited with status {code}"
            raise InfraError(
                f"{self.name}: QEMU ended before SSH came up: {ended}\n{self._qemu_said()}\n"
                f"{console.describe(self.console_log)}"
            )

    def run(self, cmd: str | list[str], timeout: float | None = None, check: bool = False) -> RunResult:
        try:
            return self.wait_ssh().run(cmd, timeout=timeout, check=check)
        except (TestbedError, OSError, EOFError, paramiko.SSHException) as exc:
            explained = self.explain(exc)
            if explained is exc:
                raise
            raise explained from exc

    def hung(self) -> str | None:
        """Why the guest is taken for stopped, if it is: no vCPU has run for GUEST_STILL_S
        (counted from the first look) while QEMU says the guest runs; else None. A look costs a
        read of /proc per vCPU (and QMP once, and when it looks stopped)."""
        try:
            if self._vcpu_clock is None:
                cpus = self.qmp.command("query-cpus-fast", timeout=HUNG_QMP_S)
                tids = tuple(int(cpu["thread-id"]) for cpu in cpus)
                pid = self.process.pid
                self._vcpu_clock = VcpuClock(lambda: vcpu_time_ns(pid, tids))
            still = self._vcpu_clock.still_for()
            if still is None or still < GUEST_STILL_S or self.qmp.run_state(HUNG_QMP_S) is not RunState.RUNNING:
                return None
        except (TestbedError, KeyError, TypeError, ValueError):  # no answer is no verdict
            return None
        return (
            f"{self.name}: the guest has stopped: no vCPU has run for {still:.0f} s while QEMU says it runs "
            f"(under TCG a guest has been seen to lose its wakeups for good)\n{console.describe(self.console_log)}"
        )

    # -- QEMU's end -----------------------------------------------------------------------

    def gone(self, grace: float = 0.0) -> str | None:
        """Why QEMU ended, if it has (waiting up to `grace` seconds for an end under way);
        None while it runs."""
        if self.process.poll() is None and (grace <= 0 or self.process.wait(grace) is None):
            return None
        return self.death or f"QEMU exited with status {self.process.poll()}"

    def explain(self, exc: BaseException, grace: float = GONE_GRACE_S) -> BaseException:
        """`exc`, an error met talking to the guest, with why QEMU ended appended if it has
        (a TestbedError keeps its type; anything else becomes an InfraError). A GuestError
        (a command that failed or timed out) does not wait for an end under way."""
        why = self.gone(0.0 if isinstance(exc, GuestError) else grace)
        if why is None or why in str(exc):
            return exc
        if isinstance(exc, TestbedError):
            exc.args = (f"{exc}\n{self.name}: {why}",)
            return exc
        return InfraError(f"{self.name}: {type(exc).__name__}: {exc}\n{self.name}: {why}")

    def _qemu_ended(self, end: QemuExit) -> None:
        """On the process's watcher thread, as QEMU ends: say why, in the artifacts and errors."""
        said = self._shutdown_event()
        text = end.describe() + (f"; before it, {said}" if said else "")
        self.death = text
        try:
            self.exit_file.write_text(text + "\n")
            with open(self.qemu_log, "a") as f:
                f.write(f"[testbed] {text}\n")
        except OSError as exc:
            log.warning("%s: cannot record QEMU's end in %s: %s", self.name, self.artifacts_dir, exc)
        if not end.expected:  # a clean exit is the guest's doing (poweroff, reset); anything else is not
            level = logging.WARNING if end.returncode == 0 else logging.ERROR
            log.log(level, "%s: %s (console: %s)", self.name, text, self.console_log)

    def _shutdown_event(self) -> str | None:
        """QEMU's SHUTDOWN event, if it sent one before it ended (why the guest or QEMU quit:
        guest-shutdown, guest-reset, guest-panic, host-qmp-quit, host-signal, ...)."""
        deadline = Deadline(SHUTDOWN_EVENT_WAIT_S)
        while self.qmp.connected and not deadline.expired:  # its EOF comes after its last event
            time.sleep(0.02)
        for event in reversed(self.qmp.events):
            if event.get("event") == "SHUTDOWN":
                data = event.get("data") or {}
                return f"QMP said SHUTDOWN (reason {data.get('reason', '?')}, guest {data.get('guest', '?')})"
        return None

    def _qemu_said(self) -> str:
        said = self.process.log_tail(20).strip()
        return f"--- QEMU output ({self.qemu_log}) ---\n{said or '(nothing)'}"
