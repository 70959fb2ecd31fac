"""Needs: which devices play a test's roles on a topology, or what the topology lacks; and the
plugin's use of them (--topology FILE, the list of tests that did not apply, CI=true)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testbed.topology import load_topology, shipped_names
from testbed.topology import needs as N
from testbed.topology.oracle import topology_verdicts
from testbed.topology.slots import hot_pluggable

from .topo_helpers import BASE, load_text

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_topologies_bind_the_roles_their_tests_use():
    two = load_topology("two-switch")
    assert dict(N.TRANSFERRING_PAIR.bind(two)) == {"provider": "nvme0", "client": "nvme1"}
    assert dict(N.REPLUG_PROVIDER.bind(two)) == {"provider": "nvme0", "peer": "nvme1", "refused": "nvme2"}
    assert dict(N.UNPLUG_DURING_IO.bind(two)) == {"provider": "nvme0", "client": "nvme1", "survivor": "nvme2"}
    assert dict(N.WHOLE_SWITCH.bind(two)) == {"switch": "sw1", "inside": "nvme0", "survivor": "nvme2"}
    acs = N.ACS_REDIR_CLEARED.bind(load_topology("acs"))
    assert acs is not None and (acs.cleared_provider, acs.redirected_provider) == ("nvme2", "nvme0")
    assert N.FAULTING_PAIR.bind(load_topology("two-switch-iommu")).provider == "nvme0"
    assert dict(N.HOT_ADD_CMB.bind(load_topology("root-ports"))) == {"added": "nvme3", "client": "nvme0"}
    assert N.VIRTIO_BLK_CLIENT.bind(load_topology("single-switch")).client == "vblk0"
    vfio = N.vfio_pair(intel=True, native=True, alone=True, bar_size=1 << 20).bind(load_topology("vfio-dmabuf"))
    assert dict(vfio) == {"exporter": "shm0", "dma": "edu0"}


def test_what_a_topology_lacks():
    two = load_topology("two-switch")
    assert N.FAULTING_PAIR.bind(two) is None  # no translating vIOMMU
    assert N.ACS_REDIR_CLEARED.bind(two) is None
    assert N.HOT_ADD_CMB.bind(two) is None
    assert N.vfio_pair().bind(two) is None
    assert N.vfio_pair(iommu=False).bind(load_topology("p2pdma-no-iommu")) is not None
    # root-ports has no pair that transfers (separate root ports, q35 host bridge)
    assert N.TRANSFERRING_PAIR.bind(load_topology("root-ports")) is None
    # ACPI hotplug is not pciehp
    assert N.vfio_pair(native=True).bind(load_topology("p2pdma-thru-iommu-acpi")) is None
    assert N.vfio_pair(hotplug=True).bind(load_topology("p2pdma-thru-iommu-acpi")) is not None


def test_a_function_of_a_multifunction_device_is_not_hot_pluggable_alone():
    acs = load_topology("acs")  # two functions below each root port
    assert not hot_pluggable(acs, "nvme0")
    assert N.HOTPLUG_CMB.bind(acs) is None
    assert hot_pluggable(load_topology("two-switch"), "nvme0")


def test_hotplug_off_and_nested_switches():
    off = load_text(BASE.replace("downstream: 2}", "downstream: 2, hotplug: false}"))
    assert N.HOTPLUG_CMB.bind(off) is None  # both CMB slots below sw1 have hotplug off
    nested = load_text(
        """\
        description: nested
        hotplug: native
        root_ports: [{id: rp1}, {id: rp2}]
        switches:
          - {id: top, bus: rp1, downstream: 2}
          - {id: deep, bus: top-d1, downstream: 1}
        endpoints:
          - {id: a, kind: nvme, bus: deep-d0, size: 8M, cmb: 8M}
          - {id: b, kind: nvme, bus: rp2, size: 8M}
        """
    )
    assert dict(N.WHOLE_SWITCH.bind(nested)) == {"switch": "top", "inside": "a", "survivor": "b"}


def test_every_shipped_topology_meets_any_and_roles_read_as_attributes():
    for name in shipped_names():
        assert N.ANY.bind(load_topology(name)) == {}
    roles = N.Roles({"provider": "nvme0"})
    assert roles.provider == roles["provider"] == "nvme0"
    with pytest.raises(AttributeError, match="no role 'client'"):
        _ = roles.client


def test_written_for_one_shipped_topology():
    need = N.written_for("two-switch", "its devices are named")
    assert need.bind(load_topology("two-switch")) == {}
    assert need.bind(load_topology("single-switch")) is None
    assert "two-switch" in need.text


# -- the plugin ---------------------------------------------------------------------------------

SUITE = """\
import pytest
from testbed.topology.needs import HOT_ADD_CMB, ANY

@pytest.mark.topology("root-ports", needs=HOT_ADD_CMB)
def test_needs_a_hot_add(testbed_topology, roles):
    pass

def test_plain():
    pass
"""


def _pytest(tmp_path: Path, suite: str, *args: str, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_suite.py").write_text(suite)
    env = {**os.environ, "CI": "true" if ci else "false", "TESTBED_RESULTS": str(tmp_path / "results")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--results-dir", str(tmp_path / "r"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_topology_file_lists_what_did_not_apply_and_ci_fails_without_a_vm_test(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(textwrap.dedent(BASE))
    local = _pytest(tmp_path, SUITE, "--topology", str(mine), ci=False)
    assert local.returncode == 0, local.stdout
    assert "mine: 1 test(s) not applicable" in local.stdout
    assert "test_needs_a_hot_add: needs an NVMe with a CMB declared `plugged: false`" in local.stdout
    ci = _pytest(tmp_path, SUITE, "--topology", str(mine), ci=True)
    assert ci.returncode == 1, ci.stdout
    assert "CI=true: no VM test ran on" in ci.stdout
    unit_only = _pytest(tmp_path, "def test_plain():\n    pass\n", ci=True)
    assert unit_only.returncode == 0, unit_only.stdout


def test_a_declaration_that_contradicts_its_topology_or_names_no_need_is_a_usage_error(tmp_path):
    wrong = SUITE.replace('"root-ports", needs=HOT_ADD_CMB', '"two-switch", needs=HOT_ADD_CMB')
    out = _pytest(tmp_path, wrong, "--collect-only", ci=False)
    assert out.returncode == 2, out.stdout + out.stderr  # a collection error: nothing runs
    assert "declared for topology 'two-switch', which lacks what it needs" in out.stdout
    bare = SUITE.replace(", needs=HOT_ADD_CMB", "")
    out = _pytest(tmp_path, bare, "--collect-only", ci=False)
    assert out.returncode == 2 and "a VM test declares what it needs" in out.stdout


def test_a_pair_the_kernel_maps_is_a_need_of_its_own():
    """Importing, writing and revoking need a pair the kernel maps and QEMU delivers: where the
    kernel rightly refuses it (vfio-dmabuf: two root ports, qemu64 is AMD family 15) or QEMU diverges
    (bus addresses behind a translating vIOMMU), a revoke test would be a false red."""
    lands = N.vfio_pair(bar_size=1 << 20, lands=True)
    for name in ("p2pdma-thru-iommu", "p2pdma-thru-virtio-iommu"):
        assert lands.bind(load_topology(name)) is not None, name
    refused = load_topology("vfio-dmabuf")
    assert N.vfio_pair(bar_size=1 << 20).bind(refused) is not None
    assert lands.bind(refused) is None
    assert "mapped by the kernel and delivered by QEMU" in lands.text
    for name in shipped_names():  # wherever it binds, the oracle says the pair maps and lands
        topo = load_topology(name)
        roles = lands.bind(topo)
        if roles is not None:
            (v,) = [v for v in topology_verdicts(topo) if (v.provider, v.client) == (roles.exporter, roles.dma)]
            assert v.p2p_allowed and not v.divergence, (name, v)
