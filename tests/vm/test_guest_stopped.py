"""A guest whose vCPUs stop for good while QEMU runs (seen under TCG: both vCPU threads asleep,
never woken) ends a wait for its agent's answer within HUNG_LOOK_S of GUEST_STILL_S, not at the
call's deadline. The stop is made here as the hang looks from the host: the vCPU threads halted
by ptrace (QEMU's main loop and QMP go on, the run state stays "running"), then let go."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from testbed.errors import GuestHung, TestbedError
from testbed.guestvm import agent_client
from testbed.topology.needs import ANY
from testbed.vm import machine as machine_module

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000  # __WALL: wait for threads too


def _ptrace(request: int, tid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
    if libc.ptrace(request, tid, None, None) == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, f"ptrace({request:#x}, {tid}): {os.strerror(errno)}")


def _stop(tids: list[int]) -> list[int]:
    """The threads stopped, each a tracee of this thread, interrupted and waited for."""
    seized = []
    try:
        for tid in tids:
            _ptrace(PTRACE_SEIZE, tid)
            seized.append(tid)
            _ptrace(PTRACE_INTERRUPT, tid)
            os.waitpid(tid, WALL)
    except BaseException:
        _let_go(seized)
        raise
    return seized


def _let_go(tids: list[int]) -> None:
    for tid in tids:
        _ptrace(PTRACE_DETACH, tid)


@contextmanager
def vcpus_halted(vm, tids: list[int]) -> Iterator[None]:  # noqa: ANN001
    """The vCPU threads stopped while QEMU's main loop goes on, as in the hang: a vCPU thread
    stopped while it held QEMU's big lock (emulating a device access) would stop the main loop
    and QMP too, so such a stop is undone and tried again."""
    for _ in range(20):
        stopped = _stop(tids)
        try:
            vm.machine.qmp.run_state(timeout=2.0)
            break
        except TestbedError:
            _let_go(stopped)
            time.sleep(0.3)
    else:
        pytest.fail("every stop of the vCPU threads also stopped QEMU's main loop")
    try:
        yield
    finally:
        _let_go(stopped)


@pytest.mark.topology("two-switch", needs=ANY)
def test_a_stopped_guest_ends_the_wait_for_its_answer(fresh_vm, monkeypatch):
    vm = fresh_vm
    monkeypatch.setattr(machine_module, "GUEST_STILL_S", 3.0)
    monkeypatch.setattr(agent_client, "HUNG_LOOK_S", 1.0)
    tids = [int(cpu["thread-id"]) for cpu in vm.machine.qmp.command("query-cpus-fast")]
    assert vm.agent("kmsg", "cursor")["next"] > 0  # it answers while its vCPUs run
    started = time.monotonic()
    with vcpus_halted(vm, tids), pytest.raises(GuestHung, match=r"the guest has stopped: no vCPU has run for \d+ s"):
        vm.agent("kmsg", "cursor", timeout=120)
    assert time.monotonic() - started < 30
    assert vm.dirty  # the pool boots another VM for the tests after this one
    assert vm.run("true", check=True).status == 0  # let go, the guest runs on
