"""A guest that stopped for good (under TCG: its vCPU threads asleep, never woken) is told from a
slow one by the vCPU threads' CPU time, and a wait for its answer ends then, not at its deadline
(a CI run waited 660 s for a selftest VM that had stopped)."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from testbed.errors import GuestHung
from testbed.guestvm import agent_client
from testbed.guestvm.agent_client import Agent
from testbed.vm import machine as machine_module
from testbed.vm.liveness import VcpuClock, vcpu_time_ns
from testbed.vm.machine import Machine
from testbed.vm.qmp import RunState


def test_the_clock_counts_from_the_last_time_the_vcpus_ran():
    spent = iter([100, 100, 250, 250, 250, None])
    now = iter([0.0, 1.0, 5.0, 9.0, 20.0, 30.0, 31.0])
    clock = VcpuClock(lambda: next(spent), now=lambda: next(now))  # made at 0.0
    assert clock.still_for() == 0.0  # the first look: ran (from nothing)
    assert clock.still_for() == 4.0
    assert clock.still_for() == 0.0  # ran since
    assert clock.still_for() == 11.0
    assert clock.still_for() == 21.0
    assert clock.still_for() is None  # the host stopped saying


def _sleeping_thread() -> tuple[threading.Thread, threading.Event, int]:
    stop = threading.Event()
    started = threading.Event()
    tid: list[int] = []

    def sleep() -> None:
        # as a halted vCPU: no signal meant for the process (a child's SIGCHLD) wakes it
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        tid.append(threading.get_native_id())
        started.set()
        stop.wait()

    thread = threading.Thread(target=sleep, daemon=True)
    thread.start()
    started.wait(5)
    # until it is asleep: on a busy host it may run its last steps into stop.wait() late, and
    # CPU time it gets after a test's first look is a vCPU that ran
    spent, deadline = None, time.monotonic() + 10
    while time.monotonic() < deadline:
        now = vcpu_time_ns(os.getpid(), (tid[0],))
        if now == spent:
            break
        spent = now
        time.sleep(0.05)
    return thread, stop, tid[0]


def test_a_threads_cpu_time_is_read_and_a_missing_one_is_no_answer():
    thread, stop, tid = _sleeping_thread()
    try:
        assert (vcpu_time_ns(os.getpid(), (tid,)) or 0) > 0
        assert vcpu_time_ns(os.getpid(), (tid, 999_999_999)) is None
    finally:
        stop.set()
        thread.join(5)


class _Qmp:
    def __init__(self, tid: int, state: RunState) -> None:
        self.tid, self.state = tid, state

    def command(self, name, args=None, **_):
        assert name == "query-cpus-fast"
        return [{"cpu-index": 0, "thread-id": self.tid}]

    def run_state(self, timeout=None):
        return self.state


def _machine(tmp_path, tid: int, state: RunState = RunState.RUNNING) -> Machine:
    machine = Machine.__new__(Machine)
    machine.name = "kselftest"
    machine.console_log = tmp_path / "console.log"
    machine.console_log.write_text("[  157.01] kselftest vfio/vfio_dma_mapping_mmio_test@shm0: #  RUN ...\n")
    machine.process = SimpleNamespace(pid=os.getpid())  # type: ignore[assignment]
    machine.qmp = _Qmp(tid, state)  # type: ignore[assignment]
    machine._vcpu_clock = None
    return machine


@pytest.fixture
def still_vcpu(monkeypatch):
    """A 'vCPU' that never runs (a thread asleep), and a still time short enough to see."""
    monkeypatch.setattr(machine_module, "GUEST_STILL_S", 0.2)
    thread, stop, tid = _sleeping_thread()
    yield tid
    stop.set()
    thread.join(5)


def test_vcpus_that_do_not_run_while_qemu_runs_are_a_stopped_guest(tmp_path, still_vcpu):
    machine = _machine(tmp_path, still_vcpu)
    assert machine.hung() is None  # the first look
    time.sleep(0.3)
    said = machine.hung()
    assert said is not None and "the guest has stopped: no vCPU has run for 0 s while QEMU says it runs" in said
    assert "vfio_dma_mapping_mmio_test@shm0" in said  # with the console's tail


def test_a_paused_guest_is_not_judged(tmp_path, still_vcpu):
    machine = _machine(tmp_path, still_vcpu, RunState.PAUSED)
    machine.hung()
    time.sleep(0.3)
    assert machine.hung() is None


def test_a_wait_for_an_answer_ends_when_the_guest_has_stopped(monkeypatch):
    monkeypatch.setattr(agent_client, "HUNG_LOOK_S", 0.05)
    looks: list[float] = []

    def hung() -> str | None:
        looks.append(time.monotonic())
        return "kselftest: the guest has stopped" if len(looks) >= 3 else None

    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader, open(os.devnull, "wb") as writer:
        agent = Agent(writer, reader, "kselftest", hung=hung)
        started = time.monotonic()
        with pytest.raises(
            GuestHung, match=r"no answer to kselftest run .* after 0s: kselftest: the guest has stopped"
        ):
            agent.call("kselftest", ["run", "{}"], timeout=600)
        assert time.monotonic() - started < 5 and len(looks) == 3
        os.close(write_end)
