"""Where a device sits: alone below its port, in a hot-pluggable slot, below a switch."""

from __future__ import annotations

from .model import Topology


def bus_of(topo: Topology, device: str) -> str:
    """The bus (port id) a switch or an endpoint plugs into."""
    return next((sw.bus for sw in topo.switches if sw.id == device), None) or topo.endpoint(device).bus


def alone_below_port(topo: Topology, device: str) -> bool:
    """The only device (endpoint or switch) below a root port or switch downstream port: its
    slot can go, or be reset, without taking anything else with it. A function of a
    multi-function device is not alone."""
    bus = bus_of(topo, device)
    ports = {rp.id for rp in topo.root_ports} | {d for sw in topo.switches for d in sw.downstream}
    below = [ep.id for ep in topo.endpoints if ep.bus == bus] + [sw.id for sw in topo.switches if sw.bus == bus]
    return bus in ports and below == [device]


def hot_pluggable(topo: Topology, device: str) -> bool:
    """Alone below a port with hotplug on (pciehp or ACPI, as the topology says)."""
    if not alone_below_port(topo, device):
        return False
    bus = bus_of(topo, device)
    hotplug = {rp.id: rp.hotplug for rp in topo.root_ports} | {
        d: sw.hotplug for sw in topo.switches for d in sw.downstream
    }
    return hotplug[bus]


def below_switch(topo: Topology, switch: str) -> set[str]:
    """Every port and device below a switch (its downstream ports, deeper switches, endpoints)."""
    switches, ports = {switch}, set()
    for _ in topo.switches:  # a switch below a port below an inside switch is inside (no loops: validated)
        ports = {d for sw in topo.switches if sw.id in switches for d in sw.downstream}
        switches |= {sw.id for sw in topo.switches if sw.bus in ports}
    ports = {d for sw in topo.switches if sw.id in switches for d in sw.downstream}
    return switches | ports | {ep.id for ep in topo.endpoints if ep.bus in ports}


def switch_holds(topo: Topology, switch: str, device: str) -> bool:
    return device in below_switch(topo, switch)
