"""A selftest program whose guest stopped under it (GuestHung: under TCG a lost wakeup) says
nothing about the program: it runs once more on a fresh VM, and the summary lists it (a CI run's
selftest VM stopped during a vfio-pci reset and 39 cases failed with it)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from testbed.errors import GuestHung
from testbed.pytest_plugin import kselftest as plugin
from testbed.pytest_plugin.kselftest import KselftestSession

STOPPED = "no answer to kselftest run after 70s: kselftest: the guest has stopped\n--- last 40 console lines ---"
PROGRAM = SimpleNamespace(id="vfio/vfio_dma_mapping_mmio_test@shm0")


def _vm(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, topology=SimpleNamespace(name="kselftest"))


def _session(monkeypatch, stops: int) -> tuple[KselftestSession, list[str]]:
    """A session whose program runs stop `stops` times first; the VM names each run used."""
    session = KselftestSession(config=None, known=(), known_skips=())  # type: ignore[arg-type]
    fresh = iter([_vm("kselftest-2"), _vm("kselftest-3")])
    monkeypatch.setattr(session, "build", lambda progress: "build")
    monkeypatch.setattr(session, "vm", lambda pool, topology: next(fresh))
    monkeypatch.setattr(session, "programs", lambda: ())
    ran_on: list[str] = []

    def run_program(vm, build, program, device, dest, known):  # noqa: ANN001, ANN202
        ran_on.append(vm.name)
        if len(ran_on) <= stops:
            raise GuestHung(STOPPED)
        return f"the run on {vm.name}"

    monkeypatch.setattr(plugin, "run_program", run_program)
    return session, ran_on


def test_the_program_runs_once_more_on_a_fresh_vm_and_the_summary_says_so(monkeypatch, tmp_path):
    session, ran_on = _session(monkeypatch, stops=1)
    run = session.run(_vm("kselftest"), "kselftest", PROGRAM, "shm0", tmp_path, (), pool="the pool")
    assert run == "the run on kselftest-2" and ran_on == ["kselftest", "kselftest-2"]
    assert session.run(_vm("kselftest-2"), "kselftest", PROGRAM, "shm0", tmp_path, ()) == run  # once per run
    assert session.summary()[:2] == [
        "1 program(s) run again on a fresh VM after their guest stopped:",
        f"  {PROGRAM.id} on kselftest: {STOPPED.splitlines()[0]}",
    ]


def test_a_second_stop_is_the_programs_error(monkeypatch, tmp_path):
    session, ran_on = _session(monkeypatch, stops=2)
    with pytest.raises(GuestHung):
        session.run(_vm("kselftest"), "kselftest", PROGRAM, "shm0", tmp_path, (), pool="the pool")
    assert ran_on == ["kselftest", "kselftest-2"]
    with pytest.raises(pytest.fail.Exception, match="could not run: no answer to kselftest run"):
        session.run(_vm("kselftest-3"), "kselftest", PROGRAM, "shm0", tmp_path, (), pool="the pool")


def test_without_the_pool_a_stop_is_the_error(monkeypatch, tmp_path):
    session, ran_on = _session(monkeypatch, stops=1)
    with pytest.raises(GuestHung):
        session.run(_vm("kselftest"), "kselftest", PROGRAM, "shm0", tmp_path, ())
    assert ran_on == ["kselftest"] and session.reruns == []
