"""Warm spares (VmPool.fresh, prefetch_spare): a destructive test's VM booted beside the tests
before it, one boot per spare however often it is asked for, handed over once."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from testbed.kernel.request import KernelRequest
from testbed.pytest_plugin.pool import BootOptions, VmPool


@dataclass
class FakeProcess:
    def alive(self) -> bool:
        return True


@dataclass
class FakeMachine:
    console_log: Path
    name: str
    process: FakeProcess = field(default_factory=FakeProcess)


@dataclass
class FakeVM:
    machine: FakeMachine
    model_problems: tuple = ()


def _pool(tmp_path: Path, booted: list[str]) -> VmPool:
    pool = VmPool(BootOptions(None, KernelRequest("default")), lambda line: None)
    lock = threading.Lock()

    def boot(topology, variant=None):
        with lock:
            booted.append(topology)
            name = f"{topology}-{len(booted)}"
        log = tmp_path / f"{name}.log"
        log.write_text("[    0.000000] Linux version 7.2.13-testbed\n")
        return FakeVM(FakeMachine(log, name))

    pool.boot = boot  # type: ignore[method-assign]
    return pool


def test_a_prefetched_spare_is_booted_once_and_taken_by_the_next_destructive_test(tmp_path):
    booted: list[str] = []
    pool = _pool(tmp_path, booted)
    pool.prefetch_spare("two-switch")
    pool.prefetch_spare("two-switch")  # every shared test before it asks again
    first = pool.fresh("two-switch", spare_next=True)
    assert booted[:1] == ["two-switch"] and first.machine.name == "two-switch-1"
    assert [w.how for w in pool.fresh_waits] == ["spare"]
    second = pool.fresh("two-switch", spare_next=False)  # the spare booted while the first ran
    assert second.machine.name == "two-switch-2" and [w.how for w in pool.fresh_waits] == ["spare", "spare"]
    assert booted == ["two-switch", "two-switch"] and not pool.spares
    pool._spare_thread.shutdown()


def test_without_a_spare_a_destructive_test_boots_its_own(tmp_path):
    booted: list[str] = []
    pool = _pool(tmp_path, booted)
    pool.prefetch_spare("acs")  # another topology's spare is no use here
    vm = pool.fresh("two-switch", spare_next=False)
    assert vm.machine.name.startswith("two-switch") and [w.how for w in pool.fresh_waits] == ["booted"]
    assert [topology for topology, _variant in pool.spares] == ["acs"]
    pool._spare_thread.shutdown()


def test_a_spare_whose_boot_hangs_is_given_up_on_and_released_when_it_ends(tmp_path, monkeypatch):
    """A guest that stops answering during a spare's boot (seen once: the agent never came,
    and the destructive test waited the whole 180 s boot deadline): the test boots its own
    VM after SPARE_PATIENCE_S, and the spare is released once its boot does end."""
    from testbed.pytest_plugin import pool as pool_module

    monkeypatch.setattr(pool_module, "SPARE_PATIENCE_S", 0.05)
    booted: list[str] = []
    pool = _pool(tmp_path, booted)
    fast_boot = pool.boot
    hung = threading.Event()

    def hanging_spare(topology, variant=None):
        hung.wait(10)
        return fast_boot(topology, variant)

    released: list[str] = []
    pool.release = lambda vm, *a, **k: released.append(vm.machine.name)  # type: ignore[method-assign]
    pool.spares[("two-switch", pool_module.DEFAULT_VARIANT)] = pool._spare_thread.submit(hanging_spare, "two-switch")
    vm = pool.fresh("two-switch", spare_next=False)
    assert [w.how for w in pool.fresh_waits] == ["spare stuck"] and pool.fresh_waits[0].seconds < 5
    assert vm.machine.name == "two-switch-1" and released == []
    hung.set()
    pool._spare_thread.shutdown()  # the boot ends; its VM goes
    assert released == ["two-switch-2"]
