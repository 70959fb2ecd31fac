"""The tree comparison against a query-pci result recorded from QEMU 7.2 (two-switch)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from testbed.topology import build_layout, load_topology
from testbed.topology.pcitree import compare_tree, flatten_query_pci

RECORDED = json.loads((Path(__file__).resolve().parent.parent / "fixtures" / "query-pci-two-switch.json").read_text())


def test_recorded_tree_matches_model():
    seen = flatten_query_pci(RECORDED)
    assert set(seen) >= {"rp1", "sw1", "sw1-d0", "nvme0", "nvme2", "rootdisk-dev"}
    assert compare_tree(build_layout(load_topology("two-switch")), seen) == []


def test_missing_device_and_wrong_id_are_reported():
    broken = copy.deepcopy(RECORDED)
    root = broken[0]["devices"]
    rp1 = next(d for d in root if d.get("qdev_id") == "rp1")
    sw1 = rp1["pci_bridge"]["devices"][0]
    sw1["pci_bridge"]["devices"][1]["pci_bridge"]["devices"] = []  # nvme1 gone
    sw1["id"]["device"] = 0x8233  # looks like a downstream port
    problems = compare_tree(build_layout(load_topology("two-switch")), flatten_query_pci(broken))
    assert any(p.startswith("nvme1: missing") for p in problems)
    assert any(p.startswith("sw1: expected 104c:8232") and "QEMU has 104c:8233" in p for p in problems)


def test_wrong_bus_numbering_is_reported():
    broken = copy.deepcopy(RECORDED)
    rp2 = next(d for d in broken[0]["devices"] if d.get("qdev_id") == "rp2")
    rp2["pci_bridge"]["bus"]["secondary"] = 9
    problems = compare_tree(build_layout(load_topology("two-switch")), flatten_query_pci(broken))
    assert problems == ["rp2: expected secondary bus 5, firmware assigned 9"]
