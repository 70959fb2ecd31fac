"""The verdict oracle against every branch of Linux 7.2's calc_map_type_and_dist()."""

from __future__ import annotations

import pytest

from testbed.topology import (
    MapType,
    TopologyError,
    build_layout,
    check_expectations,
    load_topology,
    shipped_names,
    verdicts,
)
from testbed.topology.oracle import _allowlisted, acs_redirect_ports, calc_map_type, host_bridge_device

from .topo_helpers import BASE, load_text


def verdict(text: str, provider: str, client: str):
    topo = load_text(text)
    return calc_map_type(topo, build_layout(topo), provider, client)


def test_same_function_is_bus_addr_distance_0():
    v = verdict(BASE, "nvme0", "nvme0")
    assert (v.map_type, v.distance) == (MapType.BUS_ADDR, 0)


def test_same_switch_is_bus_addr_distance_4():
    v = verdict(BASE, "nvme0", "nvme1")
    assert (v.map_type, v.distance, v.common_bridge) == (MapType.BUS_ADDR, 4, "sw1")
    assert "sw1" in v.reason


def test_switch_to_root_port_not_supported_on_q35():
    v = verdict(BASE, "nvme0", "nvme2")
    # provider: nvme0 -> sw1-d0 -> sw1 -> rp1 (4), client: nvme2 -> rp2 (2)
    assert (v.map_type, v.distance, v.common_bridge) == (MapType.NOT_SUPPORTED, 6, None)
    assert "8086:29c0" in v.reason and "not on the P2PDMA allowlist" in v.reason


def test_two_root_ports_distance_4():
    text = BASE + "  - {id: nvme3, kind: nvme, bus: rp3, size: 64M, cmb: 4M}\n"
    text = text.replace("  - id: rp2\n", "  - id: rp2\n  - id: rp3\n")
    v = verdict(text, "nvme3", "nvme2")
    assert (v.map_type, v.distance) == (MapType.NOT_SUPPORTED, 4)


def test_two_switches_distance_8():
    topo = load_topology("two-switch")
    v = calc_map_type(topo, build_layout(topo), "nvme0", "nvme2")
    assert (v.map_type, v.distance) == (MapType.NOT_SUPPORTED, 8)


def test_root_complex_endpoints_distance_2():
    text = BASE + "  - {id: edu0, kind: edu, bus: pcie.0}\n  - {id: shm0, kind: ivshmem, bus: pcie.0}\n"
    v = verdict(text, "shm0", "edu0")
    assert (v.map_type, v.distance) == (MapType.NOT_SUPPORTED, 2)


@pytest.mark.parametrize(
    "family, expected",
    [(0x16, MapType.NOT_SUPPORTED), (0x17, MapType.THRU_HOST_BRIDGE), (0x19, MapType.THRU_HOST_BRIDGE)],
)
def test_amd_family_threshold(family, expected):
    text = BASE + f"machine: {{cpu: {{model: qemu64, vendor: AuthenticAMD, family: {family}}}}}\n"
    v = verdict(text, "nvme0", "nvme2")
    assert v.map_type is expected
    if expected is MapType.THRU_HOST_BRIDGE:
        assert "AMD family" in v.reason


def test_intel_cpu_of_high_family_does_not_count():
    text = BASE + "machine: {cpu: {model: qemu64, vendor: GenuineIntel, family: 25}}\n"
    assert verdict(text, "nvme0", "nvme2").map_type is MapType.NOT_SUPPORTED


def test_hygon_is_not_amd_for_the_kernel():
    text = BASE + "machine: {cpu: {model: qemu64, vendor: HygonGenuine, family: 24}}\n"
    assert verdict(text, "nvme0", "nvme2").map_type is MapType.NOT_SUPPORTED


def test_amd_cpu_keeps_bus_addr_below_a_switch():
    text = BASE + "machine: {cpu: EPYC}\n"
    assert verdict(text, "nvme0", "nvme1").map_type is MapType.BUS_ADDR


MULTIFUNCTION = """\
description: acs test
iommu: {type: intel, mode: passthrough}
root_ports:
  - {id: rp1, acs: ACS}
endpoints:
  - {id: nvme0, kind: nvme, bus: rp1, size: 64M, cmb: 64M}
  - {id: nvme1, kind: nvme, bus: rp1, function: 1, size: 64M}
"""


def test_acs_redirect_on_common_bridge_forces_host_bridge():
    v = verdict(MULTIFUNCTION.replace("ACS", "true"), "nvme0", "nvme1")
    assert (v.map_type, v.distance, v.acs_ports) == (MapType.NOT_SUPPORTED, 2, ("rp1",))
    assert "pci=disable_acs_redir=0000:00:02.0" in v.reason


def test_acs_redirect_then_amd_cpu_is_thru_host_bridge():
    text = MULTIFUNCTION.replace("ACS", "true") + "machine: {cpu: EPYC}\n"
    v = verdict(text, "nvme0", "nvme1")
    assert (v.map_type, v.acs_ports) == (MapType.THRU_HOST_BRIDGE, ("rp1",))


def test_port_without_acs_capability_is_bus_addr():
    v = verdict(MULTIFUNCTION.replace("ACS", "false"), "nvme0", "nvme1")
    assert (v.map_type, v.distance) == (MapType.BUS_ADDR, 2)


def test_no_iommu_means_no_acs_redirect():
    text = MULTIFUNCTION.replace("ACS", "true").replace("iommu: {type: intel, mode: passthrough}\n", "")
    assert verdict(text, "nvme0", "nvme1").map_type is MapType.BUS_ADDR


def test_intel_iommu_off_means_no_acs_redirect():
    text = MULTIFUNCTION.replace("ACS", "true") + "kernel_args: [intel_iommu=off]\n"
    assert verdict(text, "nvme0", "nvme1").map_type is MapType.BUS_ADDR


# the root port is 1b36:000c with subsystem 1b36:0000 (its SSVID capability, read in a QEMU 7.2
# guest); a 0 in any field of a pci: spec matches every device (pci_dev_str_match())
@pytest.mark.parametrize(
    "spec", ["0000:00:02.0", "00:02.0", "pci:1b36:000c", "pci:1b36:000c:1b36:0", "pci:0:0", "pci:1b36:0:0:0"]
)
def test_disable_acs_redir_restores_bus_addr(spec):
    text = MULTIFUNCTION.replace("ACS", "true") + f"kernel_args: ['pci=disable_acs_redir={spec}']\n"
    assert verdict(text, "nvme0", "nvme1").map_type is MapType.BUS_ADDR


# the old model ignored the subsystem fields, so the first of these "cleared" the redirect; Linux
# compares them (QEMU's endpoint default 1af4:1100 is not the root port's subsystem), so each
# matches no port, which the validator says before anything boots
@pytest.mark.parametrize("spec", ["pci:1b36:000c:1af4:1100", "pci:1b36:000d", "pci:1b36:000c:1b36:1"])
def test_disable_acs_redir_that_does_not_match_the_port_is_refused(spec):
    text = MULTIFUNCTION.replace("ACS", "true") + f"kernel_args: ['pci=disable_acs_redir={spec}']\n"
    with pytest.raises(TopologyError, match=f"disable_acs_redir entry '{spec}' matches no port"):
        verdict(text, "nvme0", "nvme1")


def test_later_disable_acs_redir_wins():
    text = MULTIFUNCTION.replace("ACS", "true").replace(
        "  - {id: rp1, acs: true}\n", "  - {id: rp1, acs: true}\n  - id: rp2\n"
    )
    text += "kernel_args: ['pci=disable_acs_redir=0000:00:02.0', 'pci=disable_acs_redir=0000:00:03.0']\n"
    assert verdict(text, "nvme0", "nvme1").map_type is MapType.NOT_SUPPORTED


def test_acs_on_a_port_below_the_meeting_point_counts():
    # provider below rp1 (redirect on), client on pcie.0: no common bridge anyway; the rp1 ACS
    # shows up in neither branch's BUS_ADDR, but the walk still records it
    text = MULTIFUNCTION.replace("ACS", "true") + "  - {id: edu0, kind: edu, bus: pcie.0}\n"
    v = verdict(text, "nvme0", "edu0")
    assert v.map_type is MapType.NOT_SUPPORTED and v.acs_ports == ("rp1",)


def test_switch_ports_have_no_acs_so_iommu_keeps_bus_addr():
    topo = load_topology("two-switch-iommu")
    layout = build_layout(topo)
    assert acs_redirect_ports(topo, layout) == {"rp1", "rp2"}
    v = calc_map_type(topo, layout, "nvme0", "nvme1")
    assert v.map_type is MapType.BUS_ADDR


def test_translated_iommu_bus_addr_is_declared_divergence():
    by_pair = {(v.provider, v.client): v for v in verdicts(load_topology("two-switch-iommu"))}
    assert "faults" in by_pair[("nvme0", "nvme1")].divergence
    assert by_pair[("nvme0", "nvme0")].divergence is None
    assert by_pair[("nvme0", "nvme2")].divergence is None
    pt = {(v.provider, v.client): v for v in verdicts(load_topology("two-switch-iommu-pt"))}
    assert pt[("nvme0", "nvme1")].divergence is None


def test_virtio_blk_client_gets_eremoteio_note():
    by_pair = {(v.provider, v.client): v for v in verdicts(load_topology("single-switch"))}
    assert "-EREMOTEIO" in by_pair[("nvme0", "vblk0")].note


def test_pxb_host_bridge_device_is_first_root_port():
    topo = load_topology("pxb")
    layout = build_layout(topo)
    assert host_bridge_device(layout, "pcie.0") == "8086:29c0"
    assert host_bridge_device(layout, "pxb1") == "1b36:000c"


def test_pxb_without_a_device_gives_none():
    """No 00.0 device or root port first on the bus: nothing for the allowlist to match (QEMU
    plugs only root ports into a pxb-pcie, so an empty one is the only such case)."""
    topo = load_text(BASE + "host_bridges:\n  - {id: pxb1, bus_nr: 64}\n")
    assert host_bridge_device(build_layout(topo), "pxb1") is None


def test_allowlist_rules():
    assert _allowlisted("8086:2030", False)  # Skylake-E
    assert _allowlisted("8086:3c00", True)
    assert not _allowlisted("8086:3c00", False)  # needs the same host bridge
    assert _allowlisted("1ae0:abcd", False)  # any Google device
    assert not _allowlisted("8086:29c0", True)  # q35
    assert not _allowlisted(None, True)


def test_allowlisted_host_bridge_branch(monkeypatch):
    # q35's ID is not allow-listed; pretend it is to exercise the THRU_HOST_BRIDGE branch
    import testbed.topology.oracle as oracle

    monkeypatch.setattr(oracle, "Q35_HOST_BRIDGE_ID", "8086:2030")
    v = verdict(BASE, "nvme0", "nvme2")
    assert v.map_type is MapType.THRU_HOST_BRIDGE and "is on the P2PDMA allowlist" in v.reason


@pytest.mark.parametrize("name", shipped_names())
def test_shipped_expectations_agree_with_oracle(name):
    assert check_expectations(load_topology(name)) == []


def test_wrong_expectation_is_reported():
    text = BASE + "expect:\n  - {provider: nvme0, client: nvme2, map_type: BUS_ADDR}\n"
    (d,) = check_expectations(load_text(text))
    assert (d.provider, d.client, d.declared) == ("nvme0", "nvme2", "BUS_ADDR") and "NOT_SUPPORTED" in d.computed
    assert d.line == 13


def test_wrong_expected_distance_is_reported():
    text = BASE + "expect:\n  - {provider: nvme0, client: nvme1, map_type: BUS_ADDR, distance: 2}\n"
    (d,) = check_expectations(load_text(text))
    assert d.computed == "BUS_ADDR distance 4"


def test_every_pair_is_listed():
    topo = load_topology("two-switch")
    pairs = [(v.provider, v.client) for v in verdicts(topo)]
    assert pairs == [("nvme0", "nvme0"), ("nvme0", "nvme1"), ("nvme0", "nvme2")]


def test_expected_outcomes_per_topology():
    from testbed.topology.outcome import Outcome, expected_outcome

    def outcomes(name):
        topo = load_topology(name)
        return {(v.provider, v.client): expected_outcome(topo, v) for v in verdicts(topo)}

    assert outcomes("two-switch") == {
        ("nvme0", "nvme0"): Outcome.TRANSFERRED,
        ("nvme0", "nvme1"): Outcome.TRANSFERRED,
        ("nvme0", "nvme2"): Outcome.EINVAL,
    }
    assert outcomes("two-switch-iommu")[("nvme0", "nvme1")] is Outcome.DMA_FAULT
    assert outcomes("two-switch-iommu-pt")[("nvme0", "nvme1")] is Outcome.TRANSFERRED
    assert outcomes("amd-zen")[("nvme0", "nvme2")] is Outcome.TRANSFERRED
    assert outcomes("single-switch")[("nvme0", "vblk0")] is Outcome.EREMOTEIO


def test_observed_outcomes():
    from testbed.topology.outcome import Outcome, observed_outcome

    assert observed_outcome({"ok": True}, True, False) is Outcome.TRANSFERRED
    assert observed_outcome({"ok": True}, False, True) is Outcome.DMA_FAULT
    assert observed_outcome({"ok": True}, False, False) is Outcome.CORRUPTED
    assert observed_outcome({"ok": False, "errno": 22}, False, False) is Outcome.EINVAL
    assert observed_outcome({"ok": False, "errno": 121}, False, False) is Outcome.EREMOTEIO
    assert observed_outcome({"ok": False, "errno": 5}, False, False) is Outcome.OTHER_ERROR
    # a fault logged while some blocks of the poisoned destination got the pattern: one chunk
    # mapped right, another wrong; never the declared divergence (nothing moves)
    assert observed_outcome({"ok": True}, False, True, blocks_landed=1) is Outcome.PARTIAL
    assert observed_outcome({"ok": True}, False, True, blocks_landed=0) is Outcome.DMA_FAULT


def test_a_refusal_line_is_the_pairs_own():
    from testbed.guestvm.p2p import refuses

    line = (
        "[    7.1] nvme 0000:04:00.0: cannot be used for peer-to-peer DMA as the client and provider "
        "(0000:02:00.0) do not share an upstream bridge or whitelisted host bridge"
    )
    assert refuses(line, "0000:02:00.0", "0000:04:00.0")
    assert not refuses(line, "0000:03:00.0", "0000:04:00.0")  # another provider's refusal
    assert not refuses(line, "0000:02:00.0", "0000:05:00.0")


def test_seeds_leave_room_for_the_patterns_a_helper_derives():
    from testbed.guestvm.p2p import SEED_STRIDE, fresh_seed

    first, second = fresh_seed(), fresh_seed()
    assert second - first == SEED_STRIDE >= 1000  # the cycles test writes seed .. seed + 999
