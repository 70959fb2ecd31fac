"""The hot-unplug suite's needs: hot-pluggable slots, survivors, whole switches, hot-adds."""

from __future__ import annotations

from .. import reliance as R
from ..layout import Layout
from ..model import EndpointKind, Topology
from ..outcome import Outcome
from ..slots import below_switch, hot_pluggable
from .core import Need, _cmb_nvme, _pairs, _plugged
from .p2p import _NVME_PAIR


def _hotplug_cmb(topo: Topology, layout: Layout) -> dict[str, str] | None:
    found = [ep for ep in _cmb_nvme(topo) if hot_pluggable(topo, ep.id)]
    return {"provider": found[0].id} if found else None


HOTPLUG_CMB = Need(
    "an NVMe with a CMB in a hot-pluggable slot",
    _hotplug_cmb,
    (R.kind("provider", EndpointKind.NVME), R.cmb("provider"), R.hot_pluggable("provider")),
)


def _hotplug_cmb_and_survivor(topo: Topology, layout: Layout) -> dict[str, str] | None:
    for provider in _cmb_nvme(topo):
        if not hot_pluggable(topo, provider.id):
            continue
        others = [ep for ep in _plugged(topo, EndpointKind.NVME) if ep.id != provider.id]
        if others:
            return {"provider": provider.id, "survivor": others[0].id}
    return None


HOTPLUG_CMB_AND_SURVIVOR = Need(
    "an NVMe with a CMB in a hot-pluggable slot and a second NVMe that stays",
    _hotplug_cmb_and_survivor,
    (
        R.kind("provider", EndpointKind.NVME),
        R.cmb("provider"),
        R.hot_pluggable("provider"),
        R.kind("survivor", EndpointKind.NVME),
        R.plugged("survivor"),
        R.distinct("provider", "survivor"),
    ),
)


def _unplug_during_io(topo: Topology, layout: Layout) -> dict[str, str] | None:
    for v in _pairs(topo, Outcome.TRANSFERRED):
        if not (hot_pluggable(topo, v.provider) and hot_pluggable(topo, v.client)):
            continue
        others = [ep for ep in _plugged(topo, EndpointKind.NVME) if ep.id not in (v.provider, v.client)]
        if others:
            return {"provider": v.provider, "client": v.client, "survivor": others[0].id}
    return None


UNPLUG_DURING_IO = Need(
    "an NVMe pair doing P2P, both in hot-pluggable slots, and a third NVMe that stays",
    _unplug_during_io,
    (
        *_NVME_PAIR,
        R.pair_ends("provider", "client", Outcome.TRANSFERRED),
        R.hot_pluggable("provider"),
        R.hot_pluggable("client"),
        R.kind("survivor", EndpointKind.NVME),
        R.distinct("provider", "client", "survivor"),
    ),
)


def _replug(topo: Topology, layout: Layout) -> dict[str, str] | None:
    refused = {v.provider: v.client for v in reversed(_pairs(topo, Outcome.EINVAL))}
    for v in _pairs(topo, Outcome.TRANSFERRED):
        if hot_pluggable(topo, v.provider) and v.provider in refused:
            return {"provider": v.provider, "peer": v.client, "refused": refused[v.provider]}
    return None


REPLUG_PROVIDER = Need(
    "an NVMe with a CMB in a hot-pluggable slot, a peer NVMe it does P2P with and a peer the kernel refuses",
    _replug,
    (
        *(R.kind(role, EndpointKind.NVME) for role in ("provider", "peer", "refused")),
        R.hot_pluggable("provider"),
        R.pair_ends("provider", "peer", Outcome.TRANSFERRED),
        R.pair_ends("provider", "refused", Outcome.EINVAL),
    ),
)


def _whole_switch(topo: Topology, layout: Layout) -> dict[str, str] | None:
    nvme = _plugged(topo, EndpointKind.NVME)
    for sw in topo.switches:
        if not hot_pluggable(topo, sw.id):
            continue
        inside = below_switch(topo, sw.id)
        below = [ep for ep in nvme if ep.id in inside]
        outside = [ep for ep in nvme if ep.id not in inside]
        if below and outside:
            return {"switch": sw.id, "inside": below[0].id, "survivor": outside[0].id}
    return None


WHOLE_SWITCH = Need(
    "a switch on a hot-pluggable port with an NVMe below it, and an NVMe outside it",
    _whole_switch,
    (
        R.Reliance("switch is a switch", lambda t, r: r["switch"] in {sw.id for sw in t.switches}, ("switch",)),
        R.hot_pluggable("switch"),
        R.kind("inside", EndpointKind.NVME),
        R.kind("survivor", EndpointKind.NVME),
        R.inside_switch("inside", "switch"),
        R.inside_switch("survivor", "switch", inside=False),
    ),
)


def _hot_add(topo: Topology, layout: Layout) -> dict[str, str] | None:
    later = [ep for ep in topo.endpoints if ep.kind is EndpointKind.NVME and ep.cmb > 0 and not ep.plugged]
    clients = _plugged(topo, EndpointKind.NVME)
    return {"added": later[0].id, "client": clients[0].id} if later and clients else None


HOT_ADD_CMB = Need(
    "an NVMe with a CMB declared `plugged: false` (added later), and a plugged NVMe",
    _hot_add,
    (
        R.kind("added", EndpointKind.NVME),
        R.cmb("added"),
        R.plugged("added", at_boot=False),
        R.kind("client", EndpointKind.NVME),
        R.plugged("client"),
    ),
)
