"""Every VM test's need, walked against every shipped topology and its IOMMU variants.

Where a need binds, what its test relies on (the need's `relies`: device kinds, the oracle's
verdict for a pair, slots) holds there, and every role it binds is spoken about. This is the
unit-level side of "a correct kernel never gets a red test": `pytest --topology T` runs a test
only where the oracle says what the test will assert.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.topology import load_topology, shipped_names
from testbed.topology import needs as N
from testbed.topology import reliance as R
from testbed.topology.model import EndpointKind
from testbed.topology.oracle import topology_verdicts
from testbed.topology.outcome import Outcome
from testbed.topology.variants import iommu_modes

VM_TESTS = Path(__file__).resolve().parents[1] / "vm"


def _declared() -> Iterator[tuple[str, N.Need]]:
    """(test name, need) for every VM test function that declares a topology."""
    for path in sorted(VM_TESTS.glob("test_*.py")):
        module = importlib.import_module(f"tests.vm.{path.stem}")
        for name, func in vars(module).items():
            if not name.startswith("test_") or not callable(func):
                continue
            for mark in getattr(func, "pytestmark", []):
                if mark.name == "topology":
                    yield f"{path.stem}::{name}", mark.kwargs["needs"]


def _topologies() -> list:
    shipped = [load_topology(name) for name in shipped_names()]
    variants = [load_topology(f"{t.name}.iommu-{mode}") for t in shipped for mode in iommu_modes(t)]
    return shipped + variants


def test_every_vm_test_declares_a_need_and_roles_come_with_reliances():
    declared = dict(_declared())
    assert len(declared) >= 40, sorted(declared)  # the walk found the suites
    for test, need in declared.items():
        assert isinstance(need, N.Need), test
        if need.find is not N.ANY.find and "the shipped topology" not in need.text:
            assert need.relies, f"{test}: its need binds roles but says nothing it relies on"


def test_what_every_vm_test_relies_on_holds_wherever_it_runs():
    topologies = _topologies()
    bound = 0
    problems = []
    for test, need in _declared():
        for topo in topologies:
            roles, broken = need.found(topo)
            if roles is None:
                continue
            bound += 1
            problems += [f"{test} on {topo.name} ({dict(roles)}): {b}" for b in broken]
    assert not problems, "\n".join(problems)
    assert bound > 100  # the walk reached real bindings, not only topologies that lack them


def test_a_find_that_picks_the_wrong_device_is_caught():
    """The false red of wave 2: on p2pdma-thru-iommu a hot-unplug test took the edu as its
    block-device client. A need whose find does that breaks its reliance, and `bind` refuses it
    with a reason the end of the run prints."""
    topo = load_topology("p2pdma-thru-iommu")

    def careless(t, layout):  # any P2P client the oracle lets map the provider's BAR
        verdict = next(v for v in topology_verdicts(t) if v.p2p_allowed and v.provider != v.client)
        return {"provider": verdict.provider, "client": verdict.client}

    need = N.Need(
        "a provider and a block client",
        careless,
        (R.kind("provider", EndpointKind.NVME, EndpointKind.IVSHMEM), R.kind("client", EndpointKind.NVME)),
    )
    roles, broken = need.found(topo)
    assert roles is not None and broken == ["client is a nvme"]
    assert need.bind(topo) is None
    assert "break: client is a nvme (a testbed bug)" in need.why_not(topo)


def test_a_role_nobody_speaks_about_is_a_problem():
    need = N.Need(
        "two NVMe", lambda t, layout: {"provider": "nvme0", "client": "nvme1"}, (R.distinct("provider", "client"),)
    )
    _, broken = need.found(load_topology("two-switch"))
    assert broken == ["no reliance says what role 'provider' is", "no reliance says what role 'client' is"]


@pytest.mark.parametrize(
    ("name", "provider", "client", "outcome"),
    [
        ("two-switch", "nvme0", "nvme1", Outcome.TRANSFERRED),
        ("vfio-dmabuf", "shm0", "edu0", Outcome.EINVAL),  # two root ports, qemu64 is AMD family 15
        ("two-switch-iommu", "nvme0", "nvme1", Outcome.DMA_FAULT),
    ],
)
def test_pair_reliance_reads_the_oracle(name, provider, client, outcome):
    topo = load_topology(name)
    roles = {"p": provider, "c": client}
    assert R.pair_ends("p", "c", outcome).holds(topo, roles)
    others = [o for o in Outcome if o is not outcome]
    assert not R.pair_ends("p", "c", *others).holds(topo, roles)
