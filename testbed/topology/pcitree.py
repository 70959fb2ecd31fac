"""Compare what QEMU built (QMP `query-pci` after the firmware numbered the buses) with the model."""

from __future__ import annotations

from dataclasses import dataclass

from .layout import Layout


@dataclass(frozen=True)
class SeenDevice:
    qdev_id: str
    bus_nr: int
    slot: int
    function: int
    device_id: str  # vendor:device
    secondary: int | None


def flatten_query_pci(result: list[dict]) -> dict[str, SeenDevice]:
    """qdev id → what QEMU reports; devices without an id (q35's own) are left out."""
    seen: dict[str, SeenDevice] = {}

    def walk(devices: list[dict]) -> None:
        for d in devices:
            bridge = d.get("pci_bridge")
            if d.get("qdev_id"):
                seen[d["qdev_id"]] = SeenDevice(
                    d["qdev_id"],
                    d["bus"],
                    d["slot"],
                    d["function"],
                    f"{d['id']['vendor']:04x}:{d['id']['device']:04x}",
                    bridge["bus"]["secondary"] if bridge else None,
                )
            if bridge:
                walk(bridge.get("devices", []))

    for bus in result:
        walk(bus["devices"])
    return seen


def compare_tree(layout: Layout, seen: dict[str, SeenDevice]) -> list[str]:
    """Every difference between the model's placements and QEMU's tree, in words."""
    problems = []
    for p in layout.in_order():
        if not p.plugged:
            if p.id in seen:
                problems.append(f"{p.id}: declared plugged: false but present at boot")
            continue
        got = seen.get(p.id)
        if got is None:
            problems.append(f"{p.id}: missing from QEMU's PCI tree (expected {p.device_id} at {p.bdf})")
            continue
        want = (p.bus_nr, p.slot, p.function, p.device_id)
        have = (got.bus_nr, got.slot, got.function, got.device_id)
        if want != have:
            problems.append(
                f"{p.id}: expected {p.device_id} at bus {p.bus_nr:#04x} slot {p.slot:#04x}."
                f"{p.function}, QEMU has {got.device_id} at bus {got.bus_nr:#04x} slot "
                f"{got.slot:#04x}.{got.function}"
            )
        if p.is_bridge and got.secondary != p.secondary:
            problems.append(f"{p.id}: expected secondary bus {p.secondary}, firmware assigned {got.secondary}")
    return problems
