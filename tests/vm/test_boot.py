"""The booted guest shows the topology of the YAML: every device at its BDF, p2pmem published."""

from __future__ import annotations

import json

import pytest

from testbed.guestvm import lspci
from testbed.topology.layout import NodeKind
from testbed.topology.needs import ANY, CMB_NVME

from .p2p_support import NVME_TOPOLOGIES


@pytest.mark.topology("two-switch", matrix=(*NVME_TOPOLOGIES, "vfio-dmabuf"), needs=ANY)
def test_guest_sees_the_modeled_tree(vm):
    seen = {d["bdf"]: d for d in vm.agent("pci", "devices")}
    for p in vm.layout.in_order():
        if not p.plugged:
            assert p.bdf not in seen or seen[p.bdf]["id"] != p.device_id, f"{p.id} present before it was plugged"
            continue
        assert p.bdf in seen, f"{p.id} ({p.device_id}) missing at {p.bdf}; guest has {sorted(seen)}"
        assert seen[p.bdf]["id"] == p.device_id, f"{p.id} at {p.bdf}"
        if p.kind is NodeKind.ENDPOINT and p.device_id == "1b36:0010":
            assert seen[p.bdf]["driver"] == "nvme", f"{p.id}: NVMe not bound to the nvme driver"


@pytest.mark.topology("two-switch", matrix=NVME_TOPOLOGIES, needs=CMB_NVME)
def test_cmb_is_published_as_p2pmem(vm):
    seen = {d["bdf"]: d for d in vm.agent("pci", "devices")}
    for ep in vm.topology.endpoints:
        if ep.kind.value != "nvme" or not ep.plugged:
            continue
        p2pmem = seen[vm.bdf(ep.id)].get("p2pmem")
        if ep.cmb:
            assert p2pmem is not None, f"{ep.id}: CMB of {ep.cmb >> 20} MiB not published as p2pmem"
            assert p2pmem["published"] and p2pmem["size"] == ep.cmb
            assert 0 < p2pmem["available"] <= ep.cmb
        else:
            assert p2pmem is None, f"{ep.id} has no CMB but shows p2pmem"


@pytest.mark.topology("two-switch", needs=ANY)
def test_lspci_tree_shows_the_topology(vm):
    """`lspci -tv` draws every bridge with the bus range the model predicts, and the NVMe."""
    out = vm.run("lspci -tv", check=True).stdout
    for p in vm.layout.in_order():
        if p.is_bridge:
            span = (
                f"[{p.secondary:02x}]" if p.secondary == p.subordinate else f"[{p.secondary:02x}-{p.subordinate:02x}]"
            )
            assert span in out, f"{p.id}: no bridge to buses {span} in lspci -tv:\n{out}"
    nvme = sum(1 for ep in vm.topology.endpoints if ep.kind.value == "nvme" and ep.plugged)
    assert out.count("NVM Express Controller") == nvme, out


@pytest.mark.topology("two-switch", "acs", "two-switch-iommu", matrix=(*NVME_TOPOLOGIES, "vfio-dmabuf"), needs=ANY)
def test_fingerprint_agrees_with_lspci(vm):
    """The fingerprint every result points at says what `lspci -vvv` says in the same guest:
    each BDF's IDs, BARs, IOMMU group, ACS capability and control bits, and bound driver."""
    assert vm.fingerprint is not None, "no fingerprint was taken after boot"
    pci = json.loads(vm.fingerprint.path.read_text())["guest"]["pci"]
    text = vm.run("lspci -D -vvv -nn", check=True).stdout
    seen = lspci.parse(text)
    assert any(d.acs for d in seen.values()) or not any(rp.acs for rp in vm.topology.root_ports), "no ACS in lspci"
    assert lspci.differences(pci, seen) == []
