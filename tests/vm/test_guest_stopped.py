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

from testbed.errors import GuestHung
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


@contextmanager
def vcpus_halted(tids: list[int]) -> Iterator[None]:
    """The threads stopped (each a tracee of this thread, interrupted and waited for), and let
    go afterwards."""
    seized = []
    try:
        for tid in tids:
            _ptrace(PTRACE_SEIZE, tid)
            seized.append(tid)
            _ptrace(PTRACE_INTERRUPT, tid)
            os.waitpid(tid, WALL)
        yield
    finally:
        for tid in seized:
            _ptrace(PTRACE_DETACH, tid)


@pytest.mark.topology("two-switch", needs=ANY)
def test_a_stopped_guest_ends_the_wait_for_its_answer(fresh_vm, monkeypatch):
    vm = fresh_vm
    monkeypatch.setattr(machine_module, "GUEST_STILL_S", 3.0)
    monkeypatch.setattr(agent_client, "HUNG_LOOK_S", 1.0)
    tids = [int(cpu["thread-id"]) for cpu in vm.machine.qmp.command("query-cpus-fast")]
    assert vm.agent("kmsg", "cursor")["next"] > 0  # it answers while its vCPUs run
    started = time.monotonic()
    with vcpus_halted(tids), pytest.raises(GuestHung, match=r"the guest has stopped: no vCPU has run for \d+ s"):
        vm.agent("kmsg", "cursor", timeout=120)
    assert time.monotonic() - started < 30
    assert vm.dirty  # the pool boots another VM for the tests after this one
    assert vm.run("true", check=True).status == 0  # let go, the guest runs on
