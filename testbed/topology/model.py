"""The topology model: typed, frozen, validated. Built by `load.py`, read by everything else."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

ROOT_BUS = "pcie.0"


class IommuType(str, Enum):
    NONE = "none"
    INTEL = "intel"
    VIRTIO = "virtio"
    AMD = "amd"


class IommuMode(str, Enum):
    TRANSLATED = "translated"
    PASSTHROUGH = "passthrough"


class HotplugMode(str, Enum):
    NATIVE = "native"  # pciehp: attention button, 5 s wait in the guest
    ACPI = "acpi"  # q35's default in QEMU 7.2


class EndpointKind(str, Enum):
    NVME = "nvme"
    IVSHMEM = "ivshmem"
    EDU = "edu"
    VIRTIO_BLK = "virtio-blk"


@dataclass(frozen=True)
class Cpu:
    model: str
    vendor: str  # "AuthenticAMD" | "GenuineIntel" | ...: pinned so KVM hosts agree with TCG
    family: int


@dataclass(frozen=True)
class MachineSpec:
    cpus: int
    memory: int  # bytes
    cpu: Cpu


@dataclass(frozen=True)
class Iommu:
    type: IommuType
    mode: IommuMode
    # strict: an unmap's IOTLB flush is done before it returns; False (iommu.strict=0): queued,
    # the flush queue flushes within its timeout (10 ms); the IOVA is reused only after it
    strict: bool = True

    @property
    def enabled(self) -> bool:
        return self.type is not IommuType.NONE


@dataclass(frozen=True)
class HostBridge:
    """A pxb-pcie expander (pcie.0 itself is implicit)."""

    id: str
    bus_nr: int
    line: int = 0


@dataclass(frozen=True)
class Reserve:
    """Hot-plug window reservations of an (empty) root port, in bytes; None leaves QEMU's default."""

    bus: int | None = None
    mem: int | None = None
    pref64: int | None = None


@dataclass(frozen=True)
class RootPort:
    id: str
    bus: str  # pcie.0 or a host bridge id
    acs: bool  # False renders disable-acs=on: the port has no ACS capability at all
    hotplug: bool
    reserve: Reserve = field(default_factory=Reserve)
    slot: int | None = None  # device number on the root bus; None = assigned in order
    line: int = 0


@dataclass(frozen=True)
class Switch:
    """An x3130 upstream port plus its xio3130 downstream ports."""

    id: str
    bus: str  # a root port or a downstream port of another switch
    downstream: tuple[str, ...]
    hotplug: bool
    acs: bool = False  # the downstream ports have an ACS capability (a QEMU with switch ACS)
    line: int = 0


@dataclass(frozen=True)
class Endpoint:
    id: str
    kind: EndpointKind
    bus: str  # a root port, a switch downstream port, pcie.0 or a host bridge
    plugged: bool  # False: declared for a later device_add, absent at boot
    slot: int | None = None  # only on root buses
    function: int = 0
    size: int = 0  # nvme namespace / ivshmem BAR2 / virtio-blk disk, bytes
    cmb: int = 0  # nvme Controller Memory Buffer, bytes (0 = none)
    dma_mask: int | None = None  # edu
    line: int = 0

    @property
    def is_p2p_provider(self) -> bool:
        """Has a BAR the kernel can hand out as P2P memory (NVMe CMB, ivshmem BAR2)."""
        return (self.kind is EndpointKind.NVME and self.cmb > 0) or self.kind is EndpointKind.IVSHMEM

    @property
    def is_dma_client(self) -> bool:
        """Can master DMA, so can be the client of a P2P mapping."""
        return self.kind in (EndpointKind.NVME, EndpointKind.EDU, EndpointKind.VIRTIO_BLK)


class MapType(str, Enum):
    """`enum pci_p2pdma_map_type` values a (provider, client) pair can get."""

    BUS_ADDR = "BUS_ADDR"
    THRU_HOST_BRIDGE = "THRU_HOST_BRIDGE"
    NOT_SUPPORTED = "NOT_SUPPORTED"


@dataclass(frozen=True)
class Expectation:
    provider: str
    client: str
    map_type: MapType
    distance: int | None = None
    line: int = 0


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    source: Path
    machine: MachineSpec
    iommu: Iommu
    hotplug: HotplugMode
    kernel_args: tuple[str, ...]
    host_bridges: tuple[HostBridge, ...]
    root_ports: tuple[RootPort, ...]
    switches: tuple[Switch, ...]
    endpoints: tuple[Endpoint, ...]
    expectations: tuple[Expectation, ...]
    # Not from the file: the QEMU that runs the topology routes P2P inside switches as hardware
    # does (the testbed's built QEMU); the oracle then declares no divergence for those pairs.
    peer_routing: bool = False

    def endpoint(self, id_: str) -> Endpoint:
        for ep in self.endpoints:
            if ep.id == id_:
                return ep
        raise KeyError(id_)
