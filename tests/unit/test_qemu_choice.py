"""The QEMU a run uses: its features read from the binary's help, the topology as that QEMU runs
it, the oracle's divergence on each, the testbed's QEMU patches and their cache key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.kernel.patches import Patch
from testbed.qemu import build as qemu_build
from testbed.qemu.build import build_key
from testbed.qemu.source import QemuSource, newest_in_series, upstream_version
from testbed.topology import build_layout, load_topology
from testbed.topology.model import IommuMode, MapType
from testbed.topology.needs import FAULTING_PAIR, vfio_pair
from testbed.topology.oracle import verdicts
from testbed.vm.launch import QemuLacks, for_qemu
from testbed.vm.qemu import QemuBinary, QemuFeatures, check_choice, parse_properties, qemu_choice

# `-device xio3130-downstream,help` of QEMU 10.0 with the testbed's patches (trimmed)
PATCHED_HELP = """xio3130-downstream options:
  acpi-index=<uint32>    -  (default: 0)
  chassis=<uint8>        -  (default: 0)
  disable-acs=<bool>     - on/off (default: on)
  peer-routing=<bool>    - on/off (default: off)
  slot=<uint16>          -  (default: 0)
"""
DISTRO_HELP = """xio3130-downstream options:
  chassis=<uint8>        -  (default: 0)
  slot=<uint16>          -  (default: 0)
"""


def _binary(help_text: str) -> QemuBinary:
    props = parse_properties(help_text)
    qemu = QemuBinary("/q", "QEMU emulator version 10.0.13", (10, 0, 13), frozenset({"xio3130-downstream"}))
    features = QemuFeatures(switch_acs="disable-acs" in props, peer_routing="peer-routing" in props)
    object.__setattr__(qemu, "features", features)  # the cached_property, without running a binary
    return qemu


def test_properties_are_read_from_device_help():
    assert {"disable-acs", "peer-routing", "chassis"} <= parse_properties(PATCHED_HELP)
    assert "peer-routing" not in parse_properties(DISTRO_HELP)


def test_the_choice_comes_from_the_environment_and_is_checked():
    assert qemu_choice({}) == "distro"
    assert qemu_choice({"TESTBED_QEMU": "built"}) == "built"
    assert check_choice("built") == "built"
    with pytest.raises(ConfigError, match="not 'distro', 'built' or an executable"):
        check_choice("/nonexistent/qemu")
    assert Path(check_choice("true")).name == "true"  # a command on PATH resolves to its path


def test_a_switch_acs_topology_is_refused_by_a_qemu_without_switch_acs():
    topo = load_topology("switch-acs")
    with pytest.raises(QemuLacks, match=r"switch-acs.yaml:\d+: switch sw1, sw2 declares acs: true"):
        for_qemu(topo, _binary(DISTRO_HELP))
    assert for_qemu(topo, _binary(PATCHED_HELP)).peer_routing


def test_routing_removes_the_divergence_of_pairs_below_one_switch_only():
    topo = load_topology("two-switch-iommu")
    plain = {(v.provider, v.client): v for v in verdicts(topo)}
    routed = {(v.provider, v.client): v for v in verdicts(dataclasses.replace(topo, peer_routing=True))}
    below_one_switch = [k for k, v in plain.items() if v.map_type is MapType.BUS_ADDR and k[0] != k[1]]
    assert below_one_switch and all("do not route" in plain[k].divergence for k in below_one_switch)
    assert all(routed[k].divergence is None for k in below_one_switch)
    # on the distro QEMU the declared fault binds; on the routing one nothing faults
    assert FAULTING_PAIR.bind(topo) is not None
    assert FAULTING_PAIR.bind(dataclasses.replace(topo, peer_routing=True)) is None


def test_a_bus_addr_pair_without_a_switch_keeps_its_divergence_with_routing():
    # two functions of one NVMe below a root port meet at the port: no switch routes them
    topo = dataclasses.replace(load_topology("acs"), peer_routing=True)
    topo = dataclasses.replace(topo, iommu=dataclasses.replace(topo.iommu, mode=IommuMode.TRANSLATED))
    by_pair = {(v.provider, v.client): v for v in verdicts(topo)}
    assert "is not a switch" in by_pair[("nvme4", "nvme5")].divergence


def test_switch_acs_redirect_and_its_clearing_are_what_the_kernel_does():
    by_pair = {
        (v.provider, v.client): v for v in verdicts(dataclasses.replace(load_topology("switch-acs"), peer_routing=True))
    }
    assert by_pair[("nvme0", "nvme1")].map_type is MapType.THRU_HOST_BRIDGE
    assert by_pair[("nvme0", "nvme1")].acs_ports == ("sw1-d0", "sw1-d1")
    assert by_pair[("nvme2", "nvme3")].map_type is MapType.BUS_ADDR
    assert by_pair[("nvme2", "nvme3")].divergence is None


def test_a_revoke_that_must_fault_needs_the_iommu_path():
    """A routed BUS_ADDR pair lands but bypasses the IOMMU: a revoke test asserting a fault
    must not bind there (it did, and went red, before via_iommu)."""
    topo = dataclasses.replace(load_topology("p2pdma-switch-iommu"), peer_routing=True)
    assert vfio_pair(lands=True, translating=True).bind(topo) is not None
    assert vfio_pair(lands=True, translating=True, via_iommu=True).bind(topo) is None
    assert vfio_pair(lands=True, translating=True, via_iommu=True).bind(load_topology("p2pdma-thru-iommu")) is not None


def test_the_rendering_asks_for_acs_and_routing():
    from testbed.render import preview_runtime, render_argv

    topo = dataclasses.replace(load_topology("switch-acs"), peer_routing=True)
    ports = [a for a in render_argv(topo, preview_runtime(), layout=build_layout(topo)) if "xio3130" in a]
    assert len(ports) == 4 and all("disable-acs=off" in p and "peer-routing=on" in p for p in ports)


def _mail(subject: str, body: str) -> str:
    return f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nSubject: {subject}\n\n{body}\n"


def test_qemu_patches_are_read_by_the_kernels_rules(tmp_path):
    """--qemu-patches is read as --patches is (kernel/patches.py, b4's rules): the cover letter
    goes, the patches come in [n/N] order whatever the file order; errors name the option."""
    diff = "---\n a | 1 +\n 1 file changed, 1 insertion(+)\n"
    diff += "diff --git a/{0} b/{0}\n--- a/{0}\n+++ b/{0}\n@@ -0,0 +1 @@\n+x"
    mbox = tmp_path / "series.mbox"
    mbox.write_text(
        _mail("[PATCH 0/2] cover", "two patches")
        + _mail("[PATCH 2/2] second", diff.format("b"))
        + _mail("[PATCH 1/2] first", diff.format("a"))
    )
    assert [p.name for p in qemu_build.user_series(mbox)] == ["0001 [PATCH 1/2] first", "0002 [PATCH 2/2] second"]
    with pytest.raises(ConfigError, match=r"^--qemu-patches .*missing: no such file"):
        qemu_build.user_series(tmp_path / "missing")


def test_the_testbed_series_is_shipped_and_well_formed():
    patches = qemu_build.testbed_series()
    assert [p.name[:4] for p in patches] == ["0001", "0002", "0003"]
    assert all(p.is_mail and b"Subject: [PATCH" in p.content and b"diff --git" in p.content for p in patches)


def test_the_build_key_follows_source_patches_and_nothing_else():
    src = QemuSource("qemu", "1:10.0.13+ds-0+deb13u1", "ab" * 32, Path("/a"))
    moved = dataclasses.replace(src, tree=Path("/elsewhere"))
    one = (Patch("x", b"diff", is_mail=False),)
    assert build_key(src, one) == build_key(moved, one)  # where it is unpacked does not matter
    assert build_key(src, one) != build_key(src, (Patch("x", b"diff2", is_mail=False),))
    assert build_key(src, one) != build_key(dataclasses.replace(src, version="1:10.0.14+ds-0"), one)


def test_the_series_is_pinned_by_upstream_version():
    assert upstream_version("1:10.0.13+ds-0+deb13u1") == "10.0.13"
    found = newest_in_series(["1:10.0.13+ds-0+deb13u1", "1:10.2.2+ds-1", "1:10.0.9+ds-1"], "10.0")
    assert found == "1:10.0.13+ds-0+deb13u1"
    assert newest_in_series(["1:10.2.2+ds-1"], "10.0") is None
