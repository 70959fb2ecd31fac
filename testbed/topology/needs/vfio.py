"""VFIO pairs: an ivshmem exporter and an edu DMA engine, with what the test relies on."""

from __future__ import annotations

from .. import reliance as R
from ..layout import Layout
from ..model import EndpointKind, HotplugMode, IommuType, MapType, Topology
from ..outcome import Outcome
from ..reliance import Reliance
from ..slots import alone_below_port, hot_pluggable
from .core import Need, _plugged, _translating, _verdicts


def vfio_pair(
    translating: bool = False,
    intel: bool = False,
    hotplug: bool = False,
    native: bool = False,
    alone: bool = False,
    bar_size: int | None = None,
    iommu: bool = True,
    lands: bool = False,
    via_iommu: bool = False,
) -> Need:
    """An ivshmem (the exporter, its BAR2 a host file) and an edu (the DMA engine), behind an
    IOMMU unless `iommu=False` (VFIO needs its groups); roles `exporter` and `dma`. `lands`: the
    kernel maps that BAR for that edu (the oracle's map type is BUS_ADDR or THRU_HOST_BRIDGE)
    and QEMU delivers the edu's DMA there (no declared divergence): what a test needs that
    imports, writes and then revokes; on a topology where the kernel rightly refuses the pair
    such a test would be a false red. `via_iommu`: the kernel maps the pair through the host bridge,
    so the edu's DMA goes through the IOMMU and faults once unmapped (a revoke test asserts it);
    a BUS_ADDR pair routed inside a switch bypasses the IOMMU, as on hardware."""
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
    text += " through the IOMMU (THRU_HOST_BRIDGE)" if via_iommu else ""

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
        if via_iommu:
            through = {(v.provider, v.client) for v in _verdicts(topo) if v.map_type is MapType.THRU_HOST_BRIDGE}
            pairs = [p for p in pairs if p in through]
        return {"exporter": pairs[0][0], "dma": pairs[0][1]} if pairs else None

    relies = _vfio_relies(translating or intel, intel, hotplug, native, alone, bar_size, iommu, lands)
    return Need(text, find, relies + ((R.through_iommu("exporter", "dma"),) if via_iommu else ()))


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
