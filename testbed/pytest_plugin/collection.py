"""Which VM test runs on which topology (its need against each topology of the session), and
the order: a topology's tests one after another, on one xdist worker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from ..errors import ConfigError
from ..topology.load import load_topology_once
from ..topology.model import Topology
from ..topology.needs import Need
from ..vm.launch import QemuLacks, for_qemu
from ..vm.qemu import probe
from .state import state_of

# not user_properties: xunit2 JUnit has properties per suite only (run.json has the rest)
TOPOLOGY_KEY = pytest.StashKey[str]()


def _topology(name: str) -> Topology:
    """A shipped name or a user's file, loaded once per session (problems are usage errors), as
    this session's QEMU runs it (the needs bind to what it will do). QemuLacks passes through."""
    try:
        topo = load_topology_once(name)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    return for_qemu(topo, probe())


def _on_other_qemu(need: Need, topo: Topology) -> bool:
    """The test would apply with the other routing behaviour: its QEMU, not its declaration,
    keeps it out (the distro QEMU's declared fault does not happen on the built one)."""
    return need.bind(replace(topo, peer_routing=not topo.peer_routing)) is not None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each VM test runs on every topology of the session that has what it needs: by default the
    shipped ones it names (and its `matrix` under --matrix), with --topology the ones given."""
    if "testbed_topology" not in metafunc.fixturenames:
        return
    nodeid = metafunc.definition.nodeid
    mark = metafunc.definition.get_closest_marker("topology")
    if mark is None or not isinstance(mark.kwargs.get("needs"), Need):
        pytest.fail(
            f"{nodeid}: a VM test declares what it needs: @pytest.mark.topology(<defaults>, needs=<Need>) "
            "(testbed/topology/needs/)",
            pytrace=False,
        )
    need: Need = mark.kwargs["needs"]
    state = state_of(metafunc.config)
    state.vm_tests_declared = True
    chosen = metafunc.config.getoption("topology")
    names = list(mark.args)
    if metafunc.config.getoption("matrix"):
        names = list(dict.fromkeys(names + list(mark.kwargs.get("matrix", ()))))
    applicable = []
    for name in chosen or names:
        try:
            topo = _topology(name)
        except QemuLacks as exc:  # a topology for another QEMU (switch ACS): not here, said why
            state.not_applicable[(name, nodeid)] = str(exc)
            continue
        if need.bind(topo) is not None:
            applicable.append(name)
        elif _on_other_qemu(need, topo):  # before `chosen`: the reason names the QEMU
            state.not_applicable[(topo.name, nodeid)] = f"{need.why_not(topo)} (not on {probe().banner})"
        elif chosen:
            state.not_applicable[(topo.name, nodeid)] = need.why_not(topo)
        else:  # a shipped default that lost what the test needs: the declaration is wrong
            pytest.fail(
                f"{nodeid}: declared for topology '{name}', which lacks what it needs: {need.why_not(topo)}",
                pytrace=False,
            )
    if not applicable:  # not a skip: this test does not apply to the chosen topologies
        state.not_here.add(nodeid)
    ids = [_topology(name).name for name in applicable]
    cases = mark.kwargs.get("cases")
    if cases is not None and "topology_case" in metafunc.fixturenames:
        params = []
        for name, ident in zip(applicable, ids, strict=True):
            listed = cases(_topology(name), metafunc.config)
            params += [
                pytest.param(name, case, id=f"{ident}-{case_id}", marks=_group(name)) for case_id, case in listed
            ]
        # function scope: the case must not split the VM's session-scoped topology group
        metafunc.parametrize(
            ("testbed_topology", "topology_case"), params, indirect=["testbed_topology"], scope="function"
        )
        return
    # session scope groups the tests by topology, so each VM boots once
    params = [pytest.param(name, id=ident, marks=_group(name)) for name, ident in zip(applicable, ids, strict=True)]
    metafunc.parametrize("testbed_topology", params, indirect=True, scope="session")


def _group(topology: str) -> pytest.MarkDecorator:
    """pytest -n N --dist loadgroup: a topology's tests on one worker, so its VMs are shared
    there and its warm spares are used. A mark on the parameter is on the item from its
    creation (one added in collection_modifyitems came too late for xdist's workers)."""
    return pytest.mark.xdist_group(name=topology)


def _not_selected(item: pytest.Item) -> bool:
    """A `cases` function answers None for an item that its own options leave out."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return "topology_case" in params and params["topology_case"] is None


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Deselect first; order last, after pytest's own reordering by the session-scoped topology
    parameter (which would undo an order made before it)."""
    placeholders = [i for i in items if _not_selected(i)]
    if placeholders:
        config.hook.pytest_deselected(items=placeholders)
        items[:] = [i for i in items if not _not_selected(i)]
    not_here = state_of(config).not_here
    if not_here:
        keep = [i for i in items if i.nodeid.split("[")[0] not in not_here]
        dropped = [i for i in items if i.nodeid.split("[")[0] in not_here]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
    yield
    items[:] = group_by_topology(items)
    for item in items:
        topology = _topology_of(item)
        if topology is not None:  # on the call's report: how the end of the run counts the VM tests that ran
            item.stash[TOPOLOGY_KEY] = _topology(topology).name


def _topology_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("testbed_topology") if callspec is not None else None


def group_by_topology(items: list[pytest.Item]) -> list[pytest.Item]:
    """The VM tests of one topology run one after another, so the pool's shared VMs are not
    evicted and rebooted between test files; other items keep their place. Within a topology
    the tests that take a VM of their own (fresh_vm) come last, each group in its collected
    order: the first one's VM boots as a warm spare beside the shared tests, not in its setup."""
    first: dict[str, int] = {}
    keys = []
    for index, item in enumerate(items):
        topology = _topology_of(item)
        keys.append(index if topology is None else first.setdefault(topology, index))
    fresh = [_topology_of(item) is not None and "fresh_vm" in getattr(item, "fixturenames", ()) for item in items]
    order = sorted(range(len(items)), key=lambda i: (keys[i], fresh[i], i))
    return [items[i] for i in order]
