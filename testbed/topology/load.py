"""Topology YAML → `Topology`: schema checks here, cross-reference checks in validate.py."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError
from ..located import YamlError, load_located
from ..paths import TOPOLOGIES_DIR, data_root
from .model import (
    ROOT_BUS,
    Cpu,
    Endpoint,
    EndpointKind,
    Expectation,
    HostBridge,
    HotplugMode,
    Iommu,
    IommuMode,
    IommuType,
    MachineSpec,
    MapType,
    Reserve,
    RootPort,
    Switch,
    Topology,
)
from .problems import TopologyError
from .reader import Reader
from .units import GiB
from .variants import VARIANT_RE, iommu_variant

# QEMU CPU models we know the CPUID vendor/family of. The kernel's P2P verdict depends on
# them (AMD family >= 0x17 allows P2P through the host bridge), and under KVM an unpinned
# vendor would follow the host CPU, so the rendered -cpu always spells both out.
KNOWN_CPUS: dict[str, tuple[str, int]] = {
    "qemu64": ("AuthenticAMD", 15),
    "kvm64": ("GenuineIntel", 15),
    "EPYC": ("AuthenticAMD", 23),
    "EPYC-Rome": ("AuthenticAMD", 23),
    "EPYC-Milan": ("AuthenticAMD", 25),
    "Skylake-Server": ("GenuineIntel", 6),
    "Cascadelake-Server": ("GenuineIntel", 6),
    "Icelake-Server": ("GenuineIntel", 6),
}
VENDORS = ("AuthenticAMD", "GenuineIntel", "HygonGenuine")
UNPINNABLE_CPUS = ("host", "max")

TOP_KEYS = (
    "name",
    "description",
    "machine",
    "iommu",
    "hotplug",
    "kernel_args",
    "host_bridges",
    "root_ports",
    "switches",
    "endpoints",
    "expect",
)
ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
MAX_CPUS = 8  # kernel-configs/base.config: CONFIG_NR_CPUS=8

ENDPOINT_KEYS = {
    EndpointKind.NVME: ("size", "cmb"),
    EndpointKind.IVSHMEM: ("size",),
    EndpointKind.EDU: ("dma_mask",),
    EndpointKind.VIRTIO_BLK: ("size",),
}
COMMON_ENDPOINT_KEYS = ("id", "kind", "bus", "plugged", "slot", "function")


def resolve(name_or_path: str | Path) -> Path:
    """A shipped topology name (`two-switch`) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"topology file not found: {candidate}")
        return candidate
    shipped = TOPOLOGIES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(shipped_names())
    raise ConfigError(f"unknown topology '{name_or_path}' (shipped: {names}; or give a path to a .yaml file)")


def shipped_names() -> list[str]:
    return sorted(p.stem for p in (data_root() / "topologies").glob("*.yaml"))


def load_topology(name_or_path: str | Path, text: str | None = None) -> Topology:
    """Load, schema-check and cross-check a topology; raises TopologyError listing every problem.
    `NAME.iommu-MODE` (a shipped name or a file) is that topology under another IOMMU."""
    from .validate import validate  # validate needs the model built here

    variant = VARIANT_RE.match(str(name_or_path)) if text is None else None
    if variant is not None:
        return iommu_variant(load_topology(variant["base"]), variant["mode"])
    path = resolve(name_or_path) if text is None else Path(name_or_path)
    try:
        located = load_located(path, text)
    except YamlError as exc:  # a topology's YAML problems are the topology's
        raise TopologyError(exc.problems) from None
    reader = Reader(located)
    topology = _build(reader, path)
    problems = reader.problems + (validate(topology, reader) if topology else [])
    if problems:
        raise TopologyError(problems)
    assert topology is not None
    return topology


def _build(r: Reader, path: Path) -> Topology | None:
    r.mapping((), TOP_KEYS, required=("description", "endpoints"))
    if not isinstance(r.located.data, dict):
        return None
    name = r.string(("name",), default=path.stem)
    description = r.string(("description",), default="")
    machine = _machine(r)
    iommu = _iommu(r)
    hotplug = r.choice(("hotplug",), HotplugMode, HotplugMode.ACPI)
    kernel_args = tuple(
        arg
        for i, _ in enumerate(r.sequence(("kernel_args",)))
        if (arg := r.string(("kernel_args", i), allowed="a kernel command-line argument")) is not None
    )
    return Topology(
        name=name,
        description=description.strip(),
        source=path,
        machine=machine,
        iommu=iommu,
        hotplug=hotplug,
        kernel_args=kernel_args,
        host_bridges=tuple(_host_bridges(r)),
        root_ports=tuple(_root_ports(r)),
        switches=tuple(_switches(r)),
        endpoints=tuple(_endpoints(r)),
        expectations=tuple(_expectations(r)),
    )


def _machine(r: Reader) -> MachineSpec:
    r.mapping(("machine",), ("cpus", "memory", "cpu"))
    cpus = r.integer(("machine", "cpus"), default=2, lo=1, hi=MAX_CPUS)
    memory = r.size(("machine", "memory"), default=2 * GiB)
    if memory < 512 << 20:
        r.problem(("machine", "memory"), "too little memory for the guest", "512M or more")
    return MachineSpec(cpus=cpus, memory=memory, cpu=_cpu(r))


def _cpu(r: Reader) -> Cpu:
    path = ("machine", "cpu")
    raw = r.value(path)
    if isinstance(raw, str):
        model, vendor, family = raw, None, None
    else:
        r.mapping(path, ("model", "vendor", "family"))
        model = r.string(path + ("model",), default="qemu64")
        vendor = r.string(path + ("vendor",), allowed=", ".join(VENDORS))
        family = r.integer(path + ("family",), lo=1, hi=0xFF)
    if model in UNPINNABLE_CPUS:
        r.problem(
            path,
            f"CPU model '{model}' follows the host, so the P2P verdict would too",
            "a named model such as " + ", ".join(KNOWN_CPUS),
        )
        model = "qemu64"
    known = KNOWN_CPUS.get(model)
    if vendor is not None and vendor not in VENDORS:
        r.problem(path + ("vendor",), f"unknown CPU vendor '{vendor}'", ", ".join(VENDORS))
        vendor = None
    if known is None and (vendor is None or family is None):
        r.problem(
            path,
            f"CPU model '{model}' is not one the testbed knows the vendor and family of; "
            "give vendor and family explicitly",
            ", ".join(KNOWN_CPUS),
        )
    vendor_of, family_of = known if known is not None else ("AuthenticAMD", 15)
    return Cpu(model=model, vendor=vendor or vendor_of, family=family if family is not None else family_of)


def _iommu(r: Reader) -> Iommu:
    raw = r.value(("iommu",))
    if isinstance(raw, str):  # shorthand: `iommu: intel`
        return Iommu(r.choice(("iommu",), IommuType, IommuType.NONE), IommuMode.TRANSLATED)
    r.mapping(("iommu",), ("type", "mode", "strict"))
    iommu = Iommu(
        r.choice(("iommu", "type"), IommuType, IommuType.NONE),
        r.choice(("iommu", "mode"), IommuMode, IommuMode.TRANSLATED),
        r.boolean(("iommu", "strict"), True),
    )
    if not iommu.strict and (not iommu.enabled or iommu.mode is not IommuMode.TRANSLATED):
        r.problem(("iommu", "strict"), "strict: false (lazy IOTLB flushes) needs a translating IOMMU")
    return iommu


def _ident(r: Reader, path: tuple) -> str | None:
    ident = r.string(path + ("id",))
    if ident is not None and not ID_RE.match(ident):
        r.problem(
            path + ("id",),
            f"invalid id '{ident}'",
            "lower-case letters, digits, '-' and '_', starting with a letter, at most 31 characters",
        )
        return None
    return ident


def _host_bridges(r: Reader) -> Iterator[HostBridge]:
    for i, _ in enumerate(r.sequence(("host_bridges",))):
        path = ("host_bridges", i)
        r.mapping(path, ("id", "bus_nr"), required=("id", "bus_nr"))
        ident = _ident(r, path)
        bus_nr = r.integer(path + ("bus_nr",), lo=1, hi=254)
        if ident and bus_nr is not None:
            yield HostBridge(id=ident, bus_nr=bus_nr, line=r.line(path))


def _root_ports(r: Reader) -> Iterator[RootPort]:
    for i, _ in enumerate(r.sequence(("root_ports",))):
        path = ("root_ports", i)
        r.mapping(path, ("id", "bus", "acs", "hotplug", "slot", "reserve"), required=("id",))
        ident = _ident(r, path)
        r.mapping(path + ("reserve",), ("bus", "mem", "pref64"))
        reserve = Reserve(
            bus=r.integer(path + ("reserve", "bus"), lo=0, hi=254),
            mem=r.size(path + ("reserve", "mem")),
            pref64=r.size(path + ("reserve", "pref64")),
        )
        port = RootPort(
            id=ident or f"?root_ports[{i}]",
            bus=r.string(path + ("bus",), default=ROOT_BUS),
            acs=r.boolean(path + ("acs",), True),
            hotplug=r.boolean(path + ("hotplug",), True),
            reserve=reserve,
            slot=r.integer(path + ("slot",), lo=0, hi=31),
            line=r.line(path),
        )
        if ident:
            yield port


def _switches(r: Reader) -> Iterator[Switch]:
    for i, _ in enumerate(r.sequence(("switches",))):
        path = ("switches", i)
        r.mapping(path, ("id", "bus", "downstream", "hotplug", "acs"), required=("id", "bus", "downstream"))
        ident = _ident(r, path)
        downstream = []
        raw = r.value(path + ("downstream",))
        if isinstance(raw, int) and not isinstance(raw, bool):
            # `downstream: 2` names the ports <id>-d0, <id>-d1
            if raw < 1:
                r.problem(
                    path + ("downstream",),
                    "a switch needs at least one downstream port",
                    "a count from 1 to 32 or a list of port ids",
                )
            elif raw > 32:
                r.problem(
                    path + ("downstream",),
                    f"{raw} downstream ports do not fit on one bus",
                    "a count from 1 to 32 or a list of port ids",
                )
            else:
                downstream = [f"{ident}-d{n}" for n in range(raw)]
        elif isinstance(raw, list):
            if not raw:
                r.problem(
                    path + ("downstream",),
                    "a switch needs at least one downstream port",
                    "a count from 1 to 32 or a list of port ids",
                )
            for j, _ in enumerate(raw):
                port = r.string(path + ("downstream", j))
                if port is not None and not ID_RE.match(port):
                    r.problem(
                        path + ("downstream", j),
                        f"invalid id '{port}'",
                        "lower-case letters, digits, '-' and '_', starting with a letter",
                    )
                elif port is not None:
                    downstream.append(port)
            if len(raw) > 32:
                r.problem(path + ("downstream",), f"{len(raw)} downstream ports do not fit on one bus", "at most 32")
        elif raw is not None:
            r.problem(
                path + ("downstream",),
                "expected a port count or a list of port ids",
                "a count from 1 to 32 or a list of port ids",
            )
        bus = r.string(path + ("bus",))
        if ident and bus:
            yield Switch(
                id=ident,
                bus=bus,
                downstream=tuple(downstream),
                hotplug=r.boolean(path + ("hotplug",), True),
                acs=r.boolean(path + ("acs",), False),
                line=r.line(path),
            )


def _endpoints(r: Reader) -> Iterator[Endpoint]:
    for i, _ in enumerate(r.sequence(("endpoints",))):
        path = ("endpoints", i)
        node = r.mapping(path, COMMON_ENDPOINT_KEYS + ("size", "cmb", "dma_mask"), required=("id", "kind", "bus"))
        ident = _ident(r, path)
        kind = r.choice(path + ("kind",), EndpointKind, None)
        if kind is None:
            continue
        for key in node:
            if key in ("size", "cmb", "dma_mask") and key not in ENDPOINT_KEYS[kind]:
                r.problem(
                    path + (key,), f"'{key}' does not apply to a {kind.value} endpoint", ", ".join(ENDPOINT_KEYS[kind])
                )
        bus = r.string(path + ("bus",))
        endpoint = Endpoint(
            id=ident or "",
            kind=kind,
            bus=bus or "",
            plugged=r.boolean(path + ("plugged",), True),
            slot=r.integer(path + ("slot",), lo=0, hi=31),
            function=r.integer(path + ("function",), default=0, lo=0, hi=7),
            size=r.size(path + ("size",), default=_default_size(kind)),
            cmb=r.size(path + ("cmb",), default=0),
            dma_mask=r.integer(path + ("dma_mask",), lo=1) if kind is EndpointKind.EDU else None,
            line=r.line(path),
        )
        if ident and bus:
            yield endpoint


def _default_size(kind: EndpointKind) -> int:
    return {
        EndpointKind.NVME: 256 << 20,
        EndpointKind.IVSHMEM: 1 << 20,
        EndpointKind.VIRTIO_BLK: 64 << 20,
        EndpointKind.EDU: 0,
    }[kind]


def _expectations(r: Reader) -> Iterator[Expectation]:
    for i, _ in enumerate(r.sequence(("expect",))):
        path = ("expect", i)
        r.mapping(path, ("provider", "client", "map_type", "distance"), required=("provider", "client", "map_type"))
        provider = r.string(path + ("provider",))
        client = r.string(path + ("client",))
        map_type = r.choice(path + ("map_type",), MapType, None)
        distance = r.integer(path + ("distance",), lo=0)
        if provider and client and map_type:
            yield Expectation(provider, client, map_type, distance, line=r.line(path))


@functools.cache
def load_topology_once(name_or_path: str) -> Topology:
    """load_topology(), once per process and name: a pytest session reads each topology when
    it collects and boots from the same object (a file edited mid-run is not read again)."""
    return load_topology(name_or_path)
