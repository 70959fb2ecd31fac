"""What ends a QEMU, and what the harness says when one ends.

The parent-death signal (PR_SET_PDEATHSIG) follows the *thread* that forked the child: a VM
started from a thread that then ended was SIGKILLed at that moment, silently. QemuProcess forks
on one long-lived launcher thread instead; QEMU must still die with the testbed process. And
whenever QEMU ends, the harness says how (status or signal), when, and who where it can know.
`sleep` stands in for QEMU (started exactly the way QEMU is), a Python fake QEMU where a
monitor is needed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import InfraError
from testbed.vm import exits, process
from testbed.vm.process import QemuProcess, pid_alive, wait_gone

from .test_vm_qmp import _machine

REPO = Path(__file__).resolve().parents[2]


def _start_on_a_thread_that_ends(proc: QemuProcess) -> str:
    """proc.start() on a thread of its own, which then exits; that thread's name."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            proc.start()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=start, name="short-lived-starter")
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and not errors, errors
    return thread.name


def test_the_kernel_sends_the_death_signal_when_the_forking_thread_ends(tmp_path):
    """The mechanism itself: a child forked with QEMU's preexec_fn from a thread that ends is
    SIGKILLed then, though the process lives on."""
    children: list[subprocess.Popen[bytes]] = []

    def fork() -> None:
        children.append(subprocess.Popen(["sleep", "60"], preexec_fn=process._preexec_for(os.getpid())))

    thread = threading.Thread(target=fork)
    thread.start()
    thread.join(10)
    (child,) = children
    try:
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def test_qemu_started_from_a_thread_that_ends_lives_on(tmp_path):
    proc = QemuProcess(["sleep", "60"], tmp_path / "qemu.log")
    _start_on_a_thread_that_ends(proc)
    try:
        assert proc.wait(1.0) is None, proc.describe_exit()  # before the launcher: killed at once, -9
        assert proc.alive() and pid_alive(proc.pid)
        assert os.getpgid(proc.pid) == proc.pid  # still its own process group
    finally:
        report = proc.stop(None, 0, 5.0, 5.0)
    assert report.stage == "sigterm" and not proc.alive()
    assert proc.exit is not None and proc.exit.expected


class _ShortLivedThreads:
    """The old way: each start forked on a thread of its own, which then ends."""

    def call(self, fn: Callable[[], Any], undo: Callable[[Any], object] = lambda _: None) -> Any:
        out: list[Any] = []
        thread = threading.Thread(target=lambda: out.append(fn()), name="per-call-worker")
        thread.start()
        thread.join(10)
        return out[0]


def test_a_death_by_the_forking_threads_end_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "LAUNCHER", _ShortLivedThreads())
    proc = QemuProcess(["sleep", "60"], tmp_path / "qemu.log")
    proc.start()
    assert proc.wait(10) == -signal.SIGKILL
    said = proc.describe_exit()
    assert said is not None
    assert "killed by signal 9 (SIGKILL)" in said
    assert "the parent-death signal: the thread that started QEMU (per-call-worker) has ended" in said


PARENT = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from testbed.vm.process import QemuProcess
    p = QemuProcess(["sleep", "600"], Path({log!r}))
    t = threading.Thread(target=p.start)  # a starter thread that ends at once
    t.start()
    t.join()
    time.sleep(0.5)
    Path({pidfile!r}).write_text(str(p.pid) if p.alive() else "dead")
    if {then!r} == "sleep":
        time.sleep(600)
    # "exit": the interpreter ends without stopping it
    """
)


@pytest.mark.parametrize("then", ["sleep", "exit"])
def test_qemu_still_dies_with_the_testbed_process(tmp_path, then):
    """Killed (no finally, no atexit runs) or exiting without a teardown: QEMU goes with it."""
    pidfile = tmp_path / "pid"
    script = PARENT.format(repo=str(REPO), log=str(tmp_path / "qemu.log"), pidfile=str(pidfile), then=then)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the parent never started its child"
            time.sleep(0.05)
        assert pidfile.read_text() != "dead", "the child died with the thread that started it"
        child = int(pidfile.read_text())
        if then == "sleep":
            assert pid_alive(child)
            parent.kill()
        assert parent.wait(30) in (0, -signal.SIGKILL)
        assert wait_gone(child, 5.0), f"pid {child} outlived the testbed process that started it"
    finally:
        parent.kill()
        parent.wait(10)


def test_an_unexpected_sigkill_says_what_is_known(tmp_path):
    proc = QemuProcess(["sleep", "60"], tmp_path / "qemu.log")
    proc.start()
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    assert proc.exit is not None and not proc.exit.expected
    said = proc.describe_exit()
    assert said is not None
    assert f"QEMU pid {proc.pid} was killed by signal 9 (SIGKILL)" in said
    assert "sender unknown" in said and "not this testbed's teardown" in said
    assert "not the parent-death signal (the thread that started it, qemu-launcher, still runs)" in said
    assert "OOM" in said  # a rise of the memory cgroup's oom_kill counter, none, or cannot tell
    assert proc.stop(None, 0, 1.0, 1.0).stage == "exited"


def test_a_signal_this_process_sent_is_named(tmp_path):
    proc = QemuProcess(["sleep", "60"], tmp_path / "qemu.log")
    proc.start()
    exits.note_sent(proc.pid, signal.SIGKILL, "the teardown of another VM")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    said = proc.describe_exit()
    assert said is not None and "sent by this testbed process at" in said
    assert "the teardown of another VM" in said


def test_qemus_own_word_on_a_caught_signal_is_quoted(tmp_path):
    log = tmp_path / "qemu.log"
    line = "qemu-system-x86_64: terminating on signal 15 from pid 4242 (kill)"
    proc = QemuProcess(["sh", "-c", f"echo '{line}'; exit 0"], log)
    proc.start()
    assert proc.wait(10) == 0
    said = proc.describe_exit()
    assert said is not None and "exited with status 0" in said
    assert "terminating on signal 15 from pid 4242 (kill)" in said


def test_a_crash_and_an_error_exit_are_told_apart(tmp_path):
    crash = QemuProcess(["sh", "-c", "kill -SEGV $$"], tmp_path / "a.log")
    crash.start()
    assert crash.wait(10) == -signal.SIGSEGV
    assert "SIGSEGV" in (crash.describe_exit() or "") and "QEMU crashed" in (crash.describe_exit() or "")
    failed = QemuProcess(["sh", "-c", "exit 1"], tmp_path / "b.log")
    failed.start()
    assert failed.wait(10) == 1
    assert "exited with status 1" in (failed.describe_exit() or "")


def test_what_qemu_left_in_its_group_goes_when_it_ends(tmp_path):
    """Its group is killed before QEMU is reaped (the group's id cannot name anybody else yet)."""
    pidfile = tmp_path / "helper"
    proc = QemuProcess(["sh", "-c", f"sleep 600 & echo $! > {pidfile}; exit 0"], tmp_path / "qemu.log")
    proc.start()
    assert proc.wait(10) == 0
    assert wait_gone(int(pidfile.read_text()), 5.0)


def test_a_dead_qemu_is_explained_in_the_machines_errors_and_artifacts(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with _machine(tmp_path) as vm:
        assert vm.gone() is None and vm.explain(EOFError("x")).__class__ is EOFError  # alive: as it was
        with caplog.at_level(logging.ERROR, logger="testbed.vm.machine"):
            os.kill(vm.process.pid, signal.SIGKILL)
            with pytest.raises(InfraError) as err:
                vm.qmp.command("query-status")
        message = str(err.value)
        assert "killed by signal 9 (SIGKILL)" in message and "not this testbed's teardown" in message
        assert vm.death is not None and vm.death in message
        assert vm.exit_file.read_text() == vm.death + "\n"
        assert f"[testbed] {vm.death}" in vm.qemu_log.read_text()
        assert [r.levelno for r in caplog.records if vm.death in r.getMessage()] == [logging.ERROR]
        explained = vm.explain(EOFError("the channel closed"))
        assert isinstance(explained, InfraError) and "EOFError: the channel closed" in str(explained)
        assert vm.death in str(explained)
    assert vm.stop_report is not None and vm.stop_report.stage == "exited"


def test_a_clean_teardown_is_recorded_not_reported(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="testbed.vm.machine"):
        with _machine(tmp_path) as vm:
            pass
    assert vm.stop_report is not None and vm.stop_report.stage == "quit"
    assert vm.death is not None and "during the testbed's teardown, after our QMP quit" in vm.death
    assert vm.exit_file.read_text() == vm.death + "\n"
    assert not [r for r in caplog.records if r.name == "testbed.vm.machine"]


def test_every_start_forks_on_the_one_launcher_thread(tmp_path):
    from testbed.vm.launcher import LAUNCHER, THREAD_NAME

    forkers = set()
    for _ in range(2):
        proc = QemuProcess(["true"], tmp_path / "qemu.log")
        _start_on_a_thread_that_ends(proc)
        assert proc.wait(10) == 0 and proc.exit is not None
        forkers.add(proc.exit.forker)
    assert forkers == {THREAD_NAME} and LAUNCHER.thread.daemon
    with pytest.raises(InfraError, match="cannot start /nonexistent/qemu"):
        QemuProcess(["/nonexistent/qemu"], tmp_path / "qemu.log").start()  # the launcher's error, ours
    assert LAUNCHER.thread.is_alive()


def test_a_start_interrupted_meanwhile_is_undone():
    """Ctrl-C while the launcher starts QEMU: what it started is stopped, not left running."""
    from testbed.vm.launcher import LAUNCHER

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    undone: list[str] = []
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupted):
            LAUNCHER.call(lambda: (time.sleep(0.5), "qemu")[1], undo=undone.append)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert undone == ["qemu"]
