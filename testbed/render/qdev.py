"""QEMU option strings (`driver,key=value,...`) for every device and backend of a topology."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..topology.layout import AGENT_SLOT, DISK_SLOT, IOMMU_SLOT, NET_SLOT, RNG_SLOT, Layout, NodeKind, Placement
from ..topology.model import ROOT_BUS, Endpoint, EndpointKind, IommuType, Topology
from ..topology.units import MiB


@dataclass(frozen=True)
class DeviceSpec:
    driver: str
    props: tuple[tuple[str, str], ...]

    def option(self) -> str:
        """The -device argument (also what device_add takes, as a dict)."""
        return ",".join([self.driver] + [f"{k}={_escape(v)}" for k, v in self.props])

    def qmp_args(self) -> dict[str, str | int | bool]:
        """device_add's arguments, typed: QEMU 7.2 took every value as a string as -device does,
        newer QEMU (10.0) checks JSON types ("Parameter 'cmb_size_mb' expects uint64")."""
        return {"driver": self.driver, **{k: qmp_value(k, v) for k, v in self.props}}


# The properties the renderer emits, by their QEMU type (test_render checks every one is here)
INT_PROPS = frozenset({"cmb_size_mb", "dma_mask", "chassis", "slot", "port", "bus_nr", "nr"})
INT_PROPS |= {"bus-reserve", "io-reserve", "mem-reserve", "pref64-reserve"}
BOOL_PROPS = frozenset({"hotplug", "disable-acs", "peer-routing", "multifunction"})
STRING_PROPS = frozenset({"id", "bus", "addr", "serial", "drive", "memdev", "netdev", "intremap", "chardev", "name"})


def qmp_value(prop: str, value: str) -> str | int | bool:
    if prop in INT_PROPS:
        return int(value, 0)
    if prop in BOOL_PROPS:
        return {"on": True, "off": False, "true": True, "false": False}[value]
    return value


@dataclass(frozen=True)
class BackingFile:
    """A host file behind an emulated device: the host reads it to check bytes DMA wrote."""

    endpoint: str
    path: Path
    size: int


def _escape(value: str) -> str:
    # QEMU's option syntax: a literal comma is written twice
    return value.replace(",", ",,")


def backing_files(topo: Topology, backing_dir: Path) -> list[BackingFile]:
    out = []
    for ep in topo.endpoints:
        suffix = {EndpointKind.NVME: "img", EndpointKind.VIRTIO_BLK: "img", EndpointKind.IVSHMEM: "mem"}
        if ep.kind in suffix:
            out.append(BackingFile(ep.id, backing_dir / f"{ep.id}.{suffix[ep.kind]}", ep.size))
    return out


def backend_options(topo: Topology, backing_dir: Path) -> list[tuple[str, str]]:
    """-blockdev / -object options; present at boot even for endpoints plugged later.

    -blockdev rather than -drive: QEMU deletes a -drive backend together with the device on
    unplug, so a replug would find no drive; a -blockdev node outlives its device."""
    out = []
    for bf in backing_files(topo, backing_dir):
        ep = topo.endpoint(bf.endpoint)
        if ep.kind is EndpointKind.IVSHMEM:
            out.append(
                (
                    "-object",
                    f"memory-backend-file,id=mem-{ep.id},mem-path={_escape(str(bf.path))},size={ep.size},share=on",
                )
            )
        else:
            out.append(
                (
                    "-blockdev",
                    f"driver=raw,node-name=drv-{ep.id},file.driver=file,file.filename={_escape(str(bf.path))}",
                )
            )
    return out


def _siblings_at(layout: Layout, p: Placement) -> int:
    return sum(1 for q in layout.placements.values() if q.qemu_bus == p.qemu_bus and q.slot == p.slot and q.plugged)


def bridge_spec(topo: Topology, layout: Layout, p: Placement) -> DeviceSpec:
    if p.kind is NodeKind.HOST_BRIDGE:
        hb = next(h for h in topo.host_bridges if h.id == p.id)
        return DeviceSpec("pxb-pcie", (("id", p.id), ("bus_nr", str(hb.bus_nr)), ("bus", ROOT_BUS), ("addr", p.addr)))
    if p.kind is NodeKind.ROOT_PORT:
        rp = next(r for r in topo.root_ports if r.id == p.id)
        props = [
            ("id", p.id),
            ("bus", p.qemu_bus),
            ("addr", p.addr),
            ("chassis", "1"),
            ("slot", str(p.port_number)),
            ("port", str(p.port_number)),
        ]
        if not rp.acs:
            props.append(("disable-acs", "on"))
        if not rp.hotplug:
            props.append(("hotplug", "off"))
        # Nothing the testbed emulates has I/O BARs; q35's 64 KiB I/O space would run out
        # after a dozen ports if each reserved its 4 KiB window.
        props.append(("io-reserve", "0"))
        if rp.reserve.bus is not None:
            props.append(("bus-reserve", str(rp.reserve.bus)))
        if rp.reserve.mem is not None:
            props.append(("mem-reserve", str(rp.reserve.mem)))
        if rp.reserve.pref64 is not None:
            props.append(("pref64-reserve", str(rp.reserve.pref64)))
        return DeviceSpec("pcie-root-port", tuple(props))
    if p.kind is NodeKind.SWITCH_UP:
        return DeviceSpec("x3130-upstream", (("id", p.id), ("bus", p.qemu_bus), ("addr", p.addr)))
    sw = next(s for s in topo.switches if p.id in s.downstream)
    props = [
        ("id", p.id),
        ("bus", p.qemu_bus),
        ("addr", p.addr),
        ("chassis", "1"),
        ("slot", str(p.slot_number if p.slot_number is not None else 1000 + (p.port_number or 0))),
        ("port", str(p.port_number)),
    ]
    if not sw.hotplug:
        props.append(("hotplug", "off"))
    if sw.acs:  # QEMU's switch ports have no ACS capability unless asked (the testbed's QEMU)
        props.append(("disable-acs", "off"))
    if topo.peer_routing:
        props.append(("peer-routing", "on"))
    return DeviceSpec("xio3130-downstream", tuple(props))


def endpoint_spec(layout: Layout, ep: Endpoint) -> DeviceSpec:
    p = layout[ep.id]
    props: list[tuple[str, str]] = [("id", ep.id)]
    if ep.kind is EndpointKind.NVME:
        driver = "nvme"
        props += [("serial", ep.id), ("drive", f"drv-{ep.id}")]
        if ep.cmb:
            props.append(("cmb_size_mb", str(ep.cmb // MiB)))
    elif ep.kind is EndpointKind.IVSHMEM:
        driver = "ivshmem-plain"
        props.append(("memdev", f"mem-{ep.id}"))
    elif ep.kind is EndpointKind.EDU:
        driver = "edu"
        if ep.dma_mask is not None:
            props.append(("dma_mask", str(ep.dma_mask)))
    else:
        driver = "virtio-blk-pci"
        props.append(("drive", f"drv-{ep.id}"))
    props += [("bus", p.qemu_bus), ("addr", p.addr)]
    if p.function == 0 and _siblings_at(layout, p) > 1:
        props.append(("multifunction", "on"))
    return DeviceSpec(driver, tuple(props))


def iommu_spec(topo: Topology) -> DeviceSpec | None:
    kind = topo.iommu.type
    if kind is IommuType.INTEL:
        return DeviceSpec("intel-iommu", (("intremap", "on"),))
    if kind is IommuType.AMD:
        return DeviceSpec("amd-iommu", ())
    if kind is IommuType.VIRTIO:
        return DeviceSpec("virtio-iommu-pci", (("bus", ROOT_BUS), ("addr", f"{IOMMU_SLOT:#04x}.0")))
    return None


# The guest agent's port: testbed-agent-listen in the image opens /dev/vport*p1 named so.
AGENT_PORT_NAME = "org.testbed.agent"
AGENT_CHARDEV = "agent"
AGENT_PORT_ID = "agent-port"  # QMP's VSERPORT_CHANGE names it: the guest opened or closed its end


def agent_port(socket: Path) -> tuple[list[tuple[str, str]], list[DeviceSpec]]:
    """A virtio-serial port for the guest agent, on a QEMU socket the harness connects to as
    QEMU starts (wait=off: QEMU does not wait for it). Bytes written before the guest opens the
    port wait in QEMU; a closed host side is the agent's EOF."""
    backends = [("-chardev", f"socket,id={AGENT_CHARDEV},path={_escape(str(socket))},server=on,wait=off")]
    devices = [
        DeviceSpec("virtio-serial-pci", (("id", "agent-serial"), ("bus", ROOT_BUS), ("addr", f"{AGENT_SLOT:#04x}.0"))),
        DeviceSpec(
            "virtserialport",
            (
                ("id", AGENT_PORT_ID),
                ("bus", "agent-serial.0"),
                ("nr", "1"),
                ("chardev", AGENT_CHARDEV),
                ("name", AGENT_PORT_NAME),
            ),
        ),
    ]
    return backends, devices


def disk_and_net(disk: Path, ssh_host_port: int) -> tuple[list[tuple[str, str]], list[DeviceSpec]]:
    backends = [
        # The overlay is thrown away after the run: no need to flush it.
        ("-drive", f"file={_escape(str(disk))},if=none,id=rootdisk,format=qcow2,cache=unsafe"),
        # restrict=on: the guest reaches nothing outside; the forward to sshd still works.
        ("-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_host_port}-:22"),
    ]
    devices = [
        DeviceSpec(
            "virtio-blk-pci",
            (("id", "rootdisk-dev"), ("drive", "rootdisk"), ("bus", ROOT_BUS), ("addr", f"{DISK_SLOT:#04x}.0")),
        ),
        DeviceSpec(
            "virtio-net-pci",
            (("id", "net0-dev"), ("netdev", "net0"), ("bus", ROOT_BUS), ("addr", f"{NET_SLOT:#04x}.0")),
        ),
        DeviceSpec("virtio-rng-pci", (("id", "rng0"), ("bus", ROOT_BUS), ("addr", f"{RNG_SLOT:#04x}.0"))),
    ]
    return backends, devices
