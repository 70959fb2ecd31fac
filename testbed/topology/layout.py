"""Where every device lands: QEMU bus, slot/function, chassis/slot numbers, guest bus numbers.

Deterministic from the model alone. Guest bus numbers follow the firmware's depth-first
enumeration in devfn order (SeaBIOS), which Linux keeps on x86, so the guest BDF of every
device is known before boot; `pci=disable_acs_redir=` paths are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cache

from .model import ROOT_BUS, Endpoint, EndpointKind, Topology


class NodeKind(str, Enum):
    HOST_BRIDGE = "host-bridge"  # a pxb-pcie expander (pcie.0 is implicit)
    ROOT_PORT = "root-port"
    SWITCH_UP = "switch-upstream"
    SWITCH_DOWN = "switch-downstream"
    ENDPOINT = "endpoint"


# Slots of pcie.0 the testbed owns: 0 is q35's host bridge, 1 holds a PCI IOMMU
# (virtio-iommu-pci, or the function amd-iommu creates), 0x1b the guest agent's virtio-serial
# port, 0x1c an entropy source (sshd would otherwise wait seconds for the CRNG under TCG),
# 0x1d/0x1e the root disk and the NIC, 0x1f the ICH9 LPC/SATA/SMBus functions q35 always has.
ROOT_BUS_RESERVED = {
    0: "q35 host bridge",
    1: "IOMMU",
    0x1B: "guest agent's virtio-serial port",
    0x1C: "entropy source",
    0x1D: "root disk",
    0x1E: "network",
    0x1F: "ICH9 LPC/SATA/SMBus",
}
FIRST_AUTO_SLOT = {True: 2, False: 0}  # on pcie.0 / on a pxb root bus
RNG_SLOT, DISK_SLOT, NET_SLOT, IOMMU_SLOT, AGENT_SLOT = 0x1C, 0x1D, 0x1E, 0x01, 0x1B

Q35_HOST_BRIDGE_ID = "8086:29c0"
DEVICE_IDS = {
    NodeKind.HOST_BRIDGE: "1b36:000b",
    NodeKind.ROOT_PORT: "1b36:000c",
    NodeKind.SWITCH_UP: "104c:8232",
    NodeKind.SWITCH_DOWN: "104c:8233",
}
ENDPOINT_IDS = {
    EndpointKind.NVME: "1b36:0010",
    EndpointKind.IVSHMEM: "1af4:1110",
    EndpointKind.EDU: "1234:11e8",
}
# virtio-blk is transitional (1001) on a root bus, modern-only (1042) behind a PCIe port
VIRTIO_BLK_IDS = {True: "1af4:1001", False: "1af4:1042"}


@dataclass(frozen=True)
class Placement:
    id: str
    kind: NodeKind
    device_id: str  # vendor:device as lspci -n prints it
    qemu_bus: str  # the QEMU bus id it plugs into (pcie.0, a pxb id or a port id)
    host_bridge: str  # pcie.0 or the pxb it sits below
    upstream: str | None  # the PCI bridge above it (None on a root bus): pci_upstream_bridge()
    bus_nr: int  # guest number of the bus it sits on
    slot: int
    function: int
    secondary: int | None = None  # bridges only
    subordinate: int | None = None
    port_number: int | None = None  # ports: PCIe port number
    slot_number: int | None = None  # hot-plug-capable ports: the pciehp slot name
    acs: bool = False  # has an ACS capability (pcie-root-port; a switch's ports with `acs: true`)
    plugged: bool = True

    @property
    def bdf(self) -> str:
        return f"0000:{self.bus_nr:02x}:{self.slot:02x}.{self.function}"

    @property
    def addr(self) -> str:
        """QEMU's addr= property."""
        return f"{self.slot:#04x}.{self.function}"

    @property
    def is_bridge(self) -> bool:
        return self.kind in (NodeKind.ROOT_PORT, NodeKind.SWITCH_UP, NodeKind.SWITCH_DOWN)

    @property
    def subsystem_id(self) -> str:
        """Subsystem vendor:device as Linux reads it (sysfs subsystem_vendor/_device)."""
        return SUBSYSTEM_IDS.get(self.kind, DEFAULT_SUBSYSTEM_ID)


# Read in a QEMU 7.2 guest (topology acs): a type-0 device gets QEMU's default subsystem, Red Hat
# 1af4:1100; a pcie-root-port has none in its header and Linux reads its SSVID capability,
# 1b36:0000. pci=disable_acs_redir=pci:V:D:SV:SD matches on these.
DEFAULT_SUBSYSTEM_ID = "1af4:1100"
SUBSYSTEM_IDS = {NodeKind.ROOT_PORT: "1b36:0000"}


@dataclass(frozen=True)
class Layout:
    placements: dict[str, Placement]
    bus_ranges: dict[str, tuple[int, int]]  # host bridge id -> (first, last) guest bus number

    def __getitem__(self, ident: str) -> Placement:
        return self.placements[ident]

    def chain(self, ident: str) -> list[Placement]:
        """The device and its upstream bridges, nearest first (what pci_upstream_bridge walks)."""
        out = []
        node: str | None = ident
        while node is not None:
            out.append(self.placements[node])
            node = self.placements[node].upstream
        return out

    def device_path(self, ident: str) -> str:
        """The kernel's `pci=` device path: root-bus BDF, then /slot.fn per bridge below."""
        chain = list(reversed(self.chain(ident)))
        head, rest = chain[0], chain[1:]
        return head.bdf + "".join(f"/{p.slot:02x}.{p.function}" for p in rest)

    def on_bus(self, qemu_bus: str) -> list[Placement]:
        return sorted(
            (p for p in self.placements.values() if p.qemu_bus == qemu_bus), key=lambda p: (p.slot, p.function)
        )

    def in_order(self) -> list[Placement]:
        """Every placement, parents before children, siblings in devfn order (render order)."""
        out: list[Placement] = []

        def visit(bus: str) -> None:
            for p in self.on_bus(bus):
                out.append(p)
                if p.kind is not NodeKind.ENDPOINT:
                    visit(p.id)

        visit(ROOT_BUS)
        return out


def endpoint_device_id(ep: Endpoint, on_root_bus: bool) -> str:
    if ep.kind is EndpointKind.VIRTIO_BLK:
        return VIRTIO_BLK_IDS[on_root_bus]
    return ENDPOINT_IDS[ep.kind]


@cache
def topology_layout(topo: Topology) -> Layout:
    """build_layout() once per topology: needs, reliances and the oracle's verdicts share it
    for every collected test (the result is not modified by its users)."""
    return build_layout(topo)


def build_layout(topo: Topology) -> Layout:
    """Place every device. Assumes validate() passed (ids unique, buses exist)."""
    root_buses = [ROOT_BUS] + [hb.id for hb in topo.host_bridges]
    items = _items(topo)
    slots = _assign_slots(items, root_buses)
    host_of = {ROOT_BUS: ROOT_BUS, **{hb.id: hb.id for hb in topo.host_bridges}}
    buses = {i[0]: i[2] for i in items}

    def host_bridge(bus: str) -> str:
        while bus not in host_of:
            bus = buses[bus]
        return bus

    numbering = _BusNumbering(topo, items, slots)
    numbers, bus_of_id, bus_start = numbering.numbers, numbering.bus_of_id, numbering.bus_start

    endpoints = {ep.id: ep for ep in topo.endpoints}
    root_ports = {rp.id: rp for rp in topo.root_ports}
    switch_of_down = {d: sw for sw in topo.switches for d in sw.downstream}
    slot_numbers = _slot_numbers(items)

    placements: dict[str, Placement] = {}
    for ident, kind, bus, _, fn, plugged in items:
        on_root = bus in host_of
        if kind is NodeKind.ENDPOINT:
            device_id = endpoint_device_id(endpoints[ident], on_root)
        else:
            device_id = DEVICE_IDS[kind]
        sec = numbers.get(ident)
        port_number = None
        if kind is NodeKind.ROOT_PORT:
            port_number = slot_numbers[ident]
        elif kind is NodeKind.SWITCH_DOWN:
            port_number = switch_of_down[ident].downstream.index(ident)
        hotplug_capable = (kind is NodeKind.ROOT_PORT and root_ports[ident].hotplug) or (
            kind is NodeKind.SWITCH_DOWN and switch_of_down[ident].hotplug
        )
        placements[ident] = Placement(
            id=ident,
            kind=kind,
            device_id=device_id,
            qemu_bus=bus,
            host_bridge=host_bridge(bus) if kind is not NodeKind.HOST_BRIDGE else ident,
            upstream=None if on_root else bus,
            bus_nr=bus_of_id.get(ident, _planned_bus(bus, numbers, bus_start)),
            slot=slots[ident],
            function=fn,
            secondary=sec[1] if sec else None,
            subordinate=sec[2] if sec else None,
            port_number=port_number,
            slot_number=slot_numbers.get(ident) if hotplug_capable else None,
            acs=(kind is NodeKind.ROOT_PORT and root_ports[ident].acs)
            or (kind is NodeKind.SWITCH_DOWN and switch_of_down[ident].acs),
            plugged=plugged,
        )
    return Layout(placements, numbering.ranges)


Item = tuple[str, "NodeKind", str, int | None, int, bool]


def _items(topo: Topology) -> list[Item]:
    """(id, kind, qemu bus, explicit slot or None, function, plugged) in declaration order."""
    ports = {rp.id for rp in topo.root_ports} | {d for sw in topo.switches for d in sw.downstream}
    items: list[Item] = []
    items += [(hb.id, NodeKind.HOST_BRIDGE, ROOT_BUS, None, 0, True) for hb in topo.host_bridges]
    items += [(rp.id, NodeKind.ROOT_PORT, rp.bus, rp.slot, 0, True) for rp in topo.root_ports]
    for sw in topo.switches:
        items.append((sw.id, NodeKind.SWITCH_UP, sw.bus, 0, 0, True))
        items += [(d, NodeKind.SWITCH_DOWN, sw.id, n, 0, True) for n, d in enumerate(sw.downstream)]
    items += [
        (ep.id, NodeKind.ENDPOINT, ep.bus, ep.slot if ep.bus not in ports else 0, ep.function, ep.plugged)
        for ep in topo.endpoints
    ]
    return items


class _BusNumbering:
    """Guest bus numbers: depth-first in devfn order from each root bus, as the firmware numbers."""

    def __init__(self, topo: Topology, items: list[Item], slots: dict[str, int]) -> None:
        self.kinds = {i[0]: i[1] for i in items}
        self.children: dict[str, list[tuple[int, int, str]]] = {}
        for ident, _, bus, _, fn, plugged in items:
            if plugged:
                self.children.setdefault(bus, []).append((slots[ident], fn, ident))
        self.reserve = {rp.id: rp.reserve.bus or 0 for rp in topo.root_ports}
        self.numbers: dict[str, tuple[int, int, int]] = {}  # id -> (bus_nr it sits on, secondary, subordinate)
        self.bus_of_id: dict[str, int] = {}
        self.ranges: dict[str, tuple[int, int]] = {}
        self.bus_start = {ROOT_BUS: 0, **{hb.id: hb.bus_nr for hb in topo.host_bridges}}
        for root in [ROOT_BUS] + [hb.id for hb in topo.host_bridges]:
            end = self.number(root, self.bus_start[root], self.bus_start[root] + 1)
            self.ranges[root] = (self.bus_start[root], end - 1)
        for hb in topo.host_bridges:
            self.bus_of_id[hb.id] = 0

    def number(self, bus: str, bus_nr: int, next_free: int) -> int:
        for _, _, ident in sorted(self.children.get(bus, [])):
            self.bus_of_id[ident] = bus_nr
            if self.kinds[ident] in (NodeKind.ROOT_PORT, NodeKind.SWITCH_UP, NodeKind.SWITCH_DOWN):
                secondary = next_free
                last = self.number(ident, secondary, secondary + 1) - 1
                last = max(last, secondary + self.reserve.get(ident, 0))
                self.numbers[ident] = (bus_nr, secondary, last)
                next_free = last + 1
        return next_free


def _planned_bus(bus: str, numbers: dict, bus_start: dict) -> int:
    """Bus number for a device absent at boot: the secondary bus of its port."""
    if bus in bus_start:
        return bus_start[bus]
    return numbers[bus][1] if bus in numbers else 0


def _assign_slots(items: list[Item], root_buses: list[str]) -> dict[str, int]:
    slots: dict[str, int] = {}
    taken: dict[str, set[int]] = {bus: set() for bus in root_buses}
    taken[ROOT_BUS] |= set(ROOT_BUS_RESERVED)
    for ident, _, bus, slot, _fn, _ in items:
        if slot is not None:
            slots[ident] = slot
            if bus in taken:
                taken[bus].add(slot)
    for ident, _, bus, slot, _fn, _ in items:
        if slot is None:
            free = FIRST_AUTO_SLOT[bus == ROOT_BUS]
            while free in taken.setdefault(bus, set()):
                free += 1
            slots[ident] = free
            taken[bus].add(free)
    return slots


def _slot_numbers(items: list[Item]) -> dict[str, int]:
    """pciehp slot numbers: one sequence over all ports, so /sys/bus/pci/slots/N is unique."""
    ports = [i[0] for i in items if i[1] in (NodeKind.ROOT_PORT, NodeKind.SWITCH_DOWN)]
    return {ident: n for n, ident in enumerate(ports, start=1)}
