"""What a VM test needs from a topology, and which devices play its roles there.

A test declares one Need (`@pytest.mark.topology(..., needs=TRANSFERRING_PAIR)`) instead of
device ids: on any topology (a shipped one or a user's file) `bind` answers the roles
({"provider": "nvme0", "client": "nvme1"}) or None, and `text` says what was missing. The
answers come from the model and the verdict oracle only, so a file without `expect:` is
judged the same way as a shipped one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache

from . import reliance as R
from .layout import Layout, build_layout
from .model import Endpoint, EndpointKind, HotplugMode, IommuMode, IommuType, Topology
from .oracle import Verdict, topology_verdicts
from .outcome import Outcome, expected_outcome
from .reliance import Reliance, unmet
from .slots import alone_below_port, below_switch, hot_pluggable


class Roles(Mapping[str, str]):
    """Role name -> device id; `roles.provider` reads like the test's prose."""

    def __init__(self, bound: Mapping[str, str]) -> None:
        self._bound = dict(bound)

    def __getitem__(self, role: str) -> str:
        return self._bound[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._bound)

    def __len__(self) -> int:
        return len(self._bound)

    def __getattr__(self, role: str) -> str:
        try:
            return self._bound[role]
        except KeyError:
            raise AttributeError(f"no role '{role}' (bound: {', '.join(self._bound) or 'none'})") from None

    def __repr__(self) -> str:
        return f"Roles({self._bound})"


@dataclass(frozen=True)
class Need:
    text: str  # what the test needs, as the end of the run says it when a topology lacks it
    find: Callable[[Topology, Layout], Mapping[str, str] | None]
    relies: tuple[Reliance, ...] = ()  # what the test relies on once bound (reliance.py)

    def found(self, topology: Topology) -> tuple[Roles | None, list[str]]:
        """The roles `find` picked, and the reliances they break (a testbed bug when any)."""
        found = self.find(topology, _layout(topology))
        if found is None:
            return None, []
        return Roles(found), unmet(self.relies, topology, found)

    def bind(self, topology: Topology) -> Roles | None:
        """The roles, or None where the topology lacks them. Roles that break a reliance are
        not used: the test would be a false red (`why_not` says it)."""
        roles, broken = self.found(topology)
        return None if broken else roles

    def why_not(self, topology: Topology) -> str:
        roles, broken = self.found(topology)
        if not broken:
            return self.text
        return f"{self.text}; the testbed picked {dict(roles or {})}, which break: {'; '.join(broken)} (a testbed bug)"


@cache
def _layout(topology: Topology) -> Layout:
    return build_layout(topology)


_verdicts = topology_verdicts


# -- facts about devices -------------------------------------------------------------------


def _plugged(topo: Topology, *kinds: EndpointKind) -> list[Endpoint]:
    return [ep for ep in topo.endpoints if ep.plugged and (not kinds or ep.kind in kinds)]


def _cmb_nvme(topo: Topology) -> list[Endpoint]:
    return [ep for ep in _plugged(topo, EndpointKind.NVME) if ep.cmb > 0]


def _translating(topo: Topology) -> bool:
    return topo.iommu.type is not IommuType.NONE and topo.iommu.mode is IommuMode.TRANSLATED


def _pairs(topo: Topology, outcome: Outcome) -> list[Verdict]:
    """NVMe -> other NVMe pairs (both plugged) whose P2P the oracle expects to end so."""
    nvme = {ep.id for ep in _plugged(topo, EndpointKind.NVME)}
    return [
        v
        for v in _verdicts(topo)
        if v.provider in nvme and v.client in nvme and v.provider != v.client and expected_outcome(topo, v) is outcome
    ]


# -- the needs the suites declare ------------------------------------------------------------


def _any(topo: Topology, layout: Layout) -> dict[str, str]:
    return {}


ANY = Need("nothing (any topology)", _any)


def _cmb(topo: Topology, layout: Layout) -> dict[str, str] | None:
    found = _cmb_nvme(topo)
    return {"provider": found[0].id} if found else None


CMB_NVME = Need("an NVMe with a CMB", _cmb, (R.kind("provider", EndpointKind.NVME), R.cmb("provider")))


def _nvme_pairs(topo: Topology, layout: Layout) -> dict[str, str] | None:
    blocks = _plugged(topo, EndpointKind.NVME, EndpointKind.VIRTIO_BLK)
    for provider in _cmb_nvme(topo):
        for client in blocks:
            if client.id != provider.id:
                return {"provider": provider.id, "client": client.id}
    return None


NVME_PAIRS = Need(
    "an NVMe with a CMB and a second block device (NVMe or virtio-blk) at boot",
    _nvme_pairs,
    (
        R.kind("provider", EndpointKind.NVME),
        R.cmb("provider"),
        R.kind("client", EndpointKind.NVME, EndpointKind.VIRTIO_BLK),
        R.plugged("client"),
        R.distinct("provider", "client"),
    ),
)


def _transferring(topo: Topology, layout: Layout) -> dict[str, str] | None:
    found = _pairs(topo, Outcome.TRANSFERRED)
    return {"provider": found[0].provider, "client": found[0].client} if found else None


_NVME_PAIR = (
    R.kind("provider", EndpointKind.NVME),
    R.kind("client", EndpointKind.NVME),
    R.distinct("provider", "client"),
)
TRANSFERRING_PAIR = Need(
    "an NVMe with a CMB and a second NVMe it does P2P with (the oracle expects the bytes to land)",
    _transferring,
    (*_NVME_PAIR, R.pair_ends("provider", "client", Outcome.TRANSFERRED)),
)


def _faulting(topo: Topology, layout: Layout) -> dict[str, str] | None:
    found = _pairs(topo, Outcome.DMA_FAULT)
    return {"provider": found[0].provider, "client": found[0].client} if found else None


FAULTING_PAIR = Need(
    "an NVMe pair the kernel maps BUS_ADDR behind a translating vIOMMU (the declared DMA fault)",
    _faulting,
    (*_NVME_PAIR, R.behind_iommu(translating=True), R.pair_ends("provider", "client", Outcome.DMA_FAULT)),
)

_ACS_ARG = re.compile(r"disable_acs_redir=")


def _acs_cleared(topo: Topology, layout: Layout) -> dict[str, str] | None:
    if not any(_ACS_ARG.search(arg) for arg in topo.kernel_args):
        return None
    without = replace(topo, kernel_args=tuple(a for a in topo.kernel_args if not _ACS_ARG.search(a)))
    refused_without = {(v.provider, v.client) for v in _pairs(without, Outcome.EINVAL)}
    cleared = [v for v in _pairs(topo, Outcome.TRANSFERRED) if (v.provider, v.client) in refused_without]
    redirected = [v for v in _pairs(topo, Outcome.EINVAL) if v.acs_ports]
    if not cleared or not redirected:
        return None
    return {
        "cleared_provider": cleared[0].provider,
        "cleared_client": cleared[0].client,
        "redirected_provider": redirected[0].provider,
        "redirected_client": redirected[0].client,
    }


ACS_REDIR_CLEARED = Need(
    "pci=disable_acs_redir= letting one NVMe pair do P2P that ACS redirect refuses without it, "
    "and a pair still refused by ACS redirect",
    _acs_cleared,
    (
        *(R.kind(role, EndpointKind.NVME) for role in ("cleared_provider", "cleared_client")),
        *(R.kind(role, EndpointKind.NVME) for role in ("redirected_provider", "redirected_client")),
        R.pair_ends("cleared_provider", "cleared_client", Outcome.TRANSFERRED),
        R.pair_ends("redirected_provider", "redirected_client", Outcome.EINVAL),
    ),
)


def _virtio_blk(topo: Topology, layout: Layout) -> dict[str, str] | None:
    providers, disks = _cmb_nvme(topo), _plugged(topo, EndpointKind.VIRTIO_BLK)
    return {"provider": providers[0].id, "client": disks[0].id} if providers and disks else None


VIRTIO_BLK_CLIENT = Need(
    "an NVMe with a CMB and a virtio-blk disk",
    _virtio_blk,
    (R.kind("provider", EndpointKind.NVME), R.cmb("provider"), R.kind("client", EndpointKind.VIRTIO_BLK)),
)


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


def vfio_pair(
    translating: bool = False,
    intel: bool = False,
    hotplug: bool = False,
    native: bool = False,
    alone: bool = False,
    bar_size: int | None = None,
    iommu: bool = True,
    lands: bool = False,
) -> Need:
    """An ivshmem (the exporter, its BAR2 a host file) and an edu (the DMA engine), behind an
    IOMMU unless `iommu=False` (VFIO needs its groups); roles `exporter` and `dma`. `lands`: the
    kernel maps that BAR for that edu (the oracle's map type is BUS_ADDR or THRU_HOST_BRIDGE)
    and QEMU delivers the edu's DMA there (no declared divergence): what a test needs that
    imports, writes and then revokes; on a topology where the kernel rightly refuses the pair
    such a test would be a false red."""
    behind = "a translating intel-iommu" if intel else "a translating IOMMU" if translating else "an IOMMU"
    about = []
    if bar_size is not None:
        about.append(f"{bar_size >> 20} MiB BAR2" if bar_size % (1 << 20) == 0 else f"{bar_size} B BAR2")
    if hotplug or native:
        about.append("in a hot-pluggable slot" + (" with native (pciehp) hotplug" if native else ""))
    if alone:
        about.append("alone below its port, for a bus reset")
    text = "an ivshmem" + (f" ({', '.join(about)})" if about else "") + " and an edu"
    text += f" behind {behind}" if iommu else ""
    text += ", the edu's DMA into that BAR mapped by the kernel and delivered by QEMU" if lands else ""

    def find(topo: Topology, layout: Layout) -> dict[str, str] | None:
        if (iommu and topo.iommu.type is IommuType.NONE) or ((translating or intel) and not _translating(topo)):
            return None
        if intel and topo.iommu.type is not IommuType.INTEL:
            return None
        if native and topo.hotplug is not HotplugMode.NATIVE:
            return None
        shm = [
            ep
            for ep in _plugged(topo, EndpointKind.IVSHMEM)
            if (not (hotplug or native) or hot_pluggable(topo, ep.id))
            and (not alone or alone_below_port(topo, ep.id))
            and (bar_size is None or ep.size == bar_size)
        ]
        edu = _plugged(topo, EndpointKind.EDU)
        pairs = [(s.id, e.id) for s in shm for e in edu]
        if lands:
            delivered = {(v.provider, v.client) for v in _verdicts(topo) if v.p2p_allowed and not v.divergence}
            pairs = [p for p in pairs if p in delivered]
        return {"exporter": pairs[0][0], "dma": pairs[0][1]} if pairs else None

    return Need(text, find, _vfio_relies(translating or intel, intel, hotplug, native, alone, bar_size, iommu, lands))


def _vfio_relies(
    translating: bool,
    intel: bool,
    hotplug: bool,
    native: bool,
    alone: bool,
    bar_size: int | None,
    iommu: bool,
    lands: bool,
) -> tuple[Reliance, ...]:
    relies = [R.kind("exporter", EndpointKind.IVSHMEM), R.kind("dma", EndpointKind.EDU)]
    if iommu or translating:
        relies.append(R.behind_iommu(translating, IommuType.INTEL if intel else None))
    if native:
        relies.append(R.native_hotplug())
    if hotplug or native:
        relies.append(R.hot_pluggable("exporter"))
    if alone:
        relies.append(R.alone_below_port("exporter"))
    if bar_size is not None:
        relies.append(R.bar_size("exporter", bar_size))
    if lands:
        relies.append(R.pair_ends("exporter", "dma", Outcome.TRANSFERRED))
    return tuple(relies)


def written_for(name: str, why: str) -> Need:
    """A test about one shipped topology's particulars (its assertions name that file's facts)."""
    return Need(f"the shipped topology '{name}' ({why})", lambda t, layout: {} if t.name == name else None)
