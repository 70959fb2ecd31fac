"""Addresses the layout predicts: guest BDFs, bus ranges, kernel device paths, slot numbers."""

from __future__ import annotations

from testbed.topology import build_layout, load_topology
from testbed.topology.layout import NodeKind

from .topo_helpers import BASE, load_text


def test_two_switch_addresses_match_firmware_numbering():
    # Recorded from QEMU 7.2 + SeaBIOS query-pci of this topology.
    layout = build_layout(load_topology("two-switch"))
    got = {p.id: (p.bdf, p.secondary, p.subordinate) for p in layout.placements.values()}
    assert got == {
        "rp1": ("0000:00:02.0", 1, 4),
        "sw1": ("0000:01:00.0", 2, 4),
        "sw1-d0": ("0000:02:00.0", 3, 3),
        "sw1-d1": ("0000:02:01.0", 4, 4),
        "nvme0": ("0000:03:00.0", None, None),
        "nvme1": ("0000:04:00.0", None, None),
        "rp2": ("0000:00:03.0", 5, 8),
        "sw2": ("0000:05:00.0", 6, 8),
        "sw2-d0": ("0000:06:00.0", 7, 7),
        "sw2-d1": ("0000:06:01.0", 8, 8),
        "nvme2": ("0000:07:00.0", None, None),
    }


def test_device_path_for_kernel_parameters():
    layout = build_layout(load_topology("two-switch"))
    assert layout.device_path("rp1") == "0000:00:02.0"
    assert layout.device_path("nvme1") == "0000:00:02.0/00.0/01.0/00.0"


def test_chain_walks_upstream_bridges():
    layout = build_layout(load_topology("two-switch"))
    assert [p.id for p in layout.chain("nvme0")] == ["nvme0", "sw1-d0", "sw1", "rp1"]


def test_pxb_buses_start_at_bus_nr():
    layout = build_layout(load_topology("pxb"))
    assert layout["rp2"].bdf == "0000:40:00.0" and layout["rp2"].secondary == 0x41
    assert layout.bus_ranges["pxb1"] == (0x40, 0x42)
    assert layout["rp2"].upstream is None and layout["rp2"].host_bridge == "pxb1"


def test_explicit_and_auto_slots():
    text = BASE.replace("  - id: rp1\n", "  - {id: rp1, slot: 5}\n")
    layout = build_layout(load_text(text))
    assert layout["rp1"].slot == 5 and layout["rp2"].slot == 2


def test_bus_reserve_widens_subordinate():
    text = BASE.replace("  - id: rp2\n", "  - {id: rp2, reserve: {bus: 3}}\n")
    layout = build_layout(load_text(text))
    assert (layout["rp2"].secondary, layout["rp2"].subordinate) == (5, 8)


def test_unplugged_endpoint_is_placed_but_not_numbered_by_firmware():
    layout = build_layout(load_topology("root-ports"))
    p = layout["nvme3"]
    assert not p.plugged and p.bus_nr == layout["rp4"].secondary


def test_slot_numbers_unique_and_only_on_hotplug_ports():
    text = BASE.replace("  - id: rp2\n", "  - {id: rp2, hotplug: false}\n")
    layout = build_layout(load_text(text))
    numbers = [p.slot_number for p in layout.placements.values() if p.slot_number is not None]
    assert len(numbers) == len(set(numbers))
    assert layout["rp2"].slot_number is None
    assert layout["sw1"].kind is NodeKind.SWITCH_UP and layout["sw1"].slot_number is None


def test_multifunction_same_slot():
    layout = build_layout(load_topology("acs"))
    assert (layout["nvme0"].slot, layout["nvme0"].function) == (0, 0)
    assert (layout["nvme1"].slot, layout["nvme1"].function) == (0, 1)
    assert layout["nvme1"].bus_nr == layout["rp1"].secondary


def test_virtio_blk_ids_depend_on_bus():
    layout = build_layout(load_topology("single-switch"))
    assert layout["vblk0"].device_id == "1af4:1042"
    text = BASE + "  - {id: vblk1, kind: virtio-blk, bus: pcie.0}\n"
    assert build_layout(load_text(text))["vblk1"].device_id == "1af4:1001"
