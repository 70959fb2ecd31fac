"""The kernel's P2P verdict for every (provider, client) pair, from the model alone.

Mirrors Linux 7.2 drivers/pci/p2pdma.c, calc_map_type_and_dist(): walk up from the provider;
at each bridge note ACS redirect, stop at the first bridge also above the client; then walk
the client's side to it. A common bridge and no ACS redirect on the way → BUS_ADDR. Otherwise
the host bridge decides: an AMD CPU of family >= 0x17, or an allow-listed host bridge →
THRU_HOST_BRIDGE, else NOT_SUPPORTED. Distance = hops from each side to the meeting point
(or to the top of each hierarchy when there is none).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from .kernel_args import parse_kernel_args
from .layout import Q35_HOST_BRIDGE_ID, Layout, NodeKind, Placement, build_layout, topology_layout
from .model import EndpointKind, IommuMode, IommuType, MapType, Topology

ZEN_FAMILY = 0x17
GOOGLE_VENDOR = 0x1AE0
# pci_p2pdma_whitelist[] of Linux 7.2: (vendor, device or None for any, needs same host bridge)
HOST_BRIDGE_ALLOWLIST: tuple[tuple[int, int | None, bool], ...] = (
    (0x8086, 0x3C00, True),
    (0x8086, 0x3C01, True),  # Xeon E5 / Core i7
    (0x8086, 0x2F00, True),
    (0x8086, 0x2F01, True),  # Xeon E7 v3 / E5 v3 / Core i7
    (0x8086, 0x2030, False),
    (0x8086, 0x2031, False),
    (0x8086, 0x2032, False),  # Skylake-E
    (0x8086, 0x2033, False),
    (0x8086, 0x2020, False),
    (0x8086, 0x09A2, False),
    (0x8086, 0x0B25, False),
    (0x8086, 0x0CFE, False),  # DSA SPR0, IAX SPR0
    (0x8086, 0x11FB, False),
    (0x8086, 0x1212, False),
    (0x8086, 0x1216, False),  # DSA GNRD/DMR, IAA DMR
    (0x8086, 0x4940, False),
    (0x8086, 0x4942, False),
    (0x8086, 0x4944, False),  # QAT 4xxx/401xx/402xx
    (0x8086, 0x4946, False),
    (0x8086, 0x4948, False),  # QAT 420xx/6xxx
    (GOOGLE_VENDOR, None, False),
)


@dataclass(frozen=True)
class Verdict:
    provider: str
    client: str
    map_type: MapType
    distance: int
    reason: str
    common_bridge: str | None
    acs_ports: tuple[str, ...]  # ids of ports whose ACS redirect forced the host-bridge path
    divergence: str | None = None  # where QEMU's emulation will not do what hardware would
    note: str | None = None  # facts about the client or provider beyond the map type

    @property
    def p2p_allowed(self) -> bool:
        return self.map_type is not MapType.NOT_SUPPORTED


def acs_redirect_ports(topo: Topology, layout: Layout) -> set[str]:
    """Ports whose ACS P2P Request/Completion Redirect Linux turns on.

    Linux enables ACS (RR|CR among others) on every port with an ACS capability when an IOMMU
    asked for it at boot (pci_request_acs(): DMAR, IVRS or VIOT present) — in passthrough mode
    too. `pci=disable_acs_redir=` clears RR|CR|EC again on the ports it names.
    """
    options = parse_kernel_args(topo.kernel_args)
    if topo.iommu.type is IommuType.NONE:
        return set()
    if topo.iommu.type is IommuType.INTEL and options.intel_iommu_off:
        return set()
    redirect = set()
    for p in layout.placements.values():
        if p.acs and p.plugged:
            path = layout.device_path(p.id)
            if not any(spec.matches(path, p.device_id, p.subsystem_id) for spec in options.disable_acs_redir):
                redirect.add(p.id)
    return redirect


def host_bridge_device(layout: Layout, host_bridge: str) -> str | None:
    """pci_host_bridge_dev(): the first device on the root bus if it is 00.0 or a root port."""
    if host_bridge == "pcie.0":
        return Q35_HOST_BRIDGE_ID
    first = next((p for p in layout.on_bus(host_bridge) if p.plugged), None)
    if first is None:
        return None
    if (first.slot, first.function) == (0, 0) or first.kind is NodeKind.ROOT_PORT:
        return first.device_id
    return None


def _allowlisted(device_id: str | None, same_host_bridge: bool) -> bool:
    if device_id is None:
        return False
    vendor, device = (int(x, 16) for x in device_id.split(":"))
    for entry_vendor, entry_device, needs_same in HOST_BRIDGE_ALLOWLIST:
        if vendor != entry_vendor or (entry_device is not None and device != entry_device):
            continue
        return same_host_bridge or not needs_same
    return False


def _describe(p: Placement) -> str:
    return f"{p.id} ({p.kind.value} {p.bdf})"


def calc_map_type(
    topo: Topology, layout: Layout, provider: str, client: str, redirect: set[str] | None = None
) -> Verdict:
    if redirect is None:
        redirect = acs_redirect_ports(topo, layout)
    a_chain = layout.chain(provider)
    b_chain = layout.chain(client)
    b_ids = [p.id for p in b_chain]
    acs: list[str] = []
    common: Placement | None = None
    distance = len(a_chain) + len(b_chain)
    for dist_a, a in enumerate(a_chain):
        if a.id in redirect:
            acs.append(a.id)
        if a.id in b_ids:
            common = a
            dist_b = b_ids.index(a.id)
            acs += [bb.id for bb in b_chain[:dist_b] if bb.id in redirect]
            distance = dist_a + dist_b
            break

    if common is not None and not acs:
        if provider == client:
            reason = "provider and client are the same function"
        else:
            reason = (
                f"provider and client share upstream bridge {_describe(common)}"
                " and no port on the path has ACS redirect"
            )
        return Verdict(provider, client, MapType.BUS_ADDR, distance, reason, common.id, ())

    if common is not None:
        paths = ";".join(layout.device_path(x) for x in acs)
        why = (
            f"they share upstream bridge {_describe(common)}, but ACS redirect is enabled on "
            f"{', '.join(acs)} (an IOMMU made Linux request ACS), so traffic goes up to the host "
            f"bridge; pci=disable_acs_redir={paths} would make it BUS_ADDR"
        )
    else:
        tops = (a_chain[-1].id, b_chain[-1].id)
        why = (
            f"no common upstream bridge: the provider's hierarchy tops out at {tops[0]} on "
            f"{a_chain[-1].host_bridge}, the client's at {tops[1]} on {b_chain[-1].host_bridge}"
        )

    cpu = topo.machine.cpu
    if cpu.vendor == "AuthenticAMD" and cpu.family >= ZEN_FAMILY:
        return Verdict(
            provider,
            client,
            MapType.THRU_HOST_BRIDGE,
            distance,
            f"{why}; the CPU is AMD family {cpu.family:#x} (>= {ZEN_FAMILY:#x}), which "
            "allows P2P through the host bridge",
            common.id if common else None,
            tuple(acs),
        )
    hb_a = a_chain[-1].host_bridge
    hb_b = b_chain[-1].host_bridge
    dev_a = host_bridge_device(layout, hb_a)
    dev_b = host_bridge_device(layout, hb_b)
    if hb_a == hb_b:
        allowed = _allowlisted(dev_a, True)
    else:
        allowed = _allowlisted(dev_a, False) and _allowlisted(dev_b, False)
    cpu_text = f"the CPU ({cpu.vendor} family {cpu.family:#x}) is not AMD Zen or newer"
    bridges = sorted(
        {
            f"{hb} ({dev or 'no 00.0 device or root port first on its bus'})"
            for hb, dev in ((hb_a, dev_a), (hb_b, dev_b))
        }
    )
    if allowed:
        return Verdict(
            provider,
            client,
            MapType.THRU_HOST_BRIDGE,
            distance,
            f"{why}; {cpu_text}, but host bridge {' and '.join(bridges)} is on the P2PDMA allowlist",
            common.id if common else None,
            tuple(acs),
        )
    return Verdict(
        provider,
        client,
        MapType.NOT_SUPPORTED,
        distance,
        f"{why}; {cpu_text} and host bridge {' and '.join(bridges)} is not on the P2PDMA allowlist",
        common.id if common else None,
        tuple(acs),
    )


def _divergence(topo: Topology, verdict: Verdict) -> str | None:
    translated = topo.iommu.type is not IommuType.NONE and topo.iommu.mode is IommuMode.TRANSLATED
    if verdict.map_type is not MapType.BUS_ADDR or not translated or verdict.provider == verdict.client:
        return None
    # BUS_ADDR means no ACS redirect on the path, so a routing switch keeps the request below it
    if topo.peer_routing and verdict.common_bridge in {sw.id for sw in topo.switches}:
        return None
    if topo.peer_routing:
        where = f"{verdict.common_bridge} is not a switch, so nothing routes the request below it"
    else:
        where = "this QEMU's switches do not route P2P below themselves (the testbed's built QEMU's do)"
    return (
        f"{where}: the client's DMA to the provider's bus address goes through the translating "
        f"{topo.iommu.type.value} vIOMMU, which has no mapping for it, so it faults (hardware "
        "would deliver it below the switch)"
    )


def _note(topo: Topology, verdict: Verdict) -> str | None:
    client = topo.endpoint(verdict.client)
    provider = topo.endpoint(verdict.provider)
    if client.kind is EndpointKind.VIRTIO_BLK:
        return "virtio-blk's queue does not support P2P: block I/O from P2P memory fails with -EREMOTEIO"
    if provider.kind is EndpointKind.IVSHMEM:
        return (
            "as a VFIO dma-buf imported by iommufd the BAR is mapped by its CPU physical address "
            "in the IOMMU, without asking this rule; other importers go through it"
        )
    return None


def verdict(topo: Topology, layout: Layout, provider: str, client: str, redirect: set[str] | None = None) -> Verdict:
    """The full verdict for any pair of devices: map type, distance, QEMU divergence, notes."""
    v = calc_map_type(topo, layout, provider, client, redirect)
    return Verdict(**{**v.__dict__, "divergence": _divergence(topo, v), "note": _note(topo, v)})


def verdicts(topo: Topology, layout: Layout | None = None) -> list[Verdict]:
    """Every (P2P provider, DMA client) pair of devices present at boot, in file order."""
    layout = layout or build_layout(topo)
    redirect = acs_redirect_ports(topo, layout)
    return [
        verdict(topo, layout, provider.id, client.id, redirect)
        for provider in topo.endpoints
        if provider.is_p2p_provider
        for client in topo.endpoints
        if client.is_dma_client
    ]


@cache
def topology_verdicts(topo: Topology) -> tuple[Verdict, ...]:
    """verdicts() once per topology: every need binds, and checks its reliances, for every
    collected test."""
    return tuple(verdicts(topo, topology_layout(topo)))


@dataclass(frozen=True)
class Disagreement:
    line: int
    provider: str
    client: str
    declared: str
    computed: str


def check_expectations(topo: Topology, layout: Layout | None = None) -> list[Disagreement]:
    layout = layout or build_layout(topo)
    computed = {(v.provider, v.client): v for v in verdicts(topo, layout)}
    out = []
    for exp in topo.expectations:
        v = computed.get((exp.provider, exp.client))
        if v is None:
            continue  # validation already reported the pair
        if v.map_type is not exp.map_type or (exp.distance is not None and exp.distance != v.distance):
            declared = exp.map_type.value + (f" distance {exp.distance}" if exp.distance is not None else "")
            out.append(
                Disagreement(exp.line, exp.provider, exp.client, declared, f"{v.map_type.value} distance {v.distance}")
            )
    return out
