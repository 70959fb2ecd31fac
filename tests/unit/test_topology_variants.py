"""`<topology>.iommu-<mode>`: a topology under another IOMMU, for the matrix's IOMMU axis."""

from __future__ import annotations

import pytest

from testbed.errors import ConfigError
from testbed.topology import load_topology
from testbed.topology.model import IommuMode, IommuType
from testbed.topology.oracle import check_expectations, verdicts
from testbed.topology.problems import TopologyError
from testbed.topology.variants import iommu_modes

from .topo_helpers import BASE


def test_a_variant_changes_the_iommu_and_drops_the_declared_expectations():
    base = load_topology("two-switch")
    variant = load_topology("two-switch.iommu-intel")
    assert variant.name == "two-switch.iommu-intel" and variant.source == base.source
    assert (variant.iommu.type, variant.iommu.mode) == (IommuType.INTEL, IommuMode.TRANSLATED)
    assert base.expectations and not variant.expectations and not check_expectations(variant)
    assert variant.endpoints == base.endpoints and variant.switches == base.switches
    # under a translating vIOMMU the same-switch pair is the declared DMA-fault divergence
    (pair,) = [v for v in verdicts(variant) if (v.provider, v.client) == ("nvme0", "nvme1")]
    assert pair.divergence


def test_virtio_variant_of_a_vfio_topology_allows_unsafe_interrupts():
    variant = load_topology("vfio-dmabuf.iommu-virtio")
    assert "iommufd.allow_unsafe_interrupts=1" in variant.kernel_args
    assert "iommufd.allow_unsafe_interrupts=1" not in load_topology("two-switch.iommu-virtio").kernel_args


def test_which_modes_a_topology_allows(tmp_path):
    assert iommu_modes(load_topology("two-switch")) == ["intel", "intel-pt", "virtio", "virtio-lazy", "intel-lazy"]
    assert iommu_modes(load_topology("two-switch-iommu")) == ["none", "intel-pt", "virtio", "virtio-lazy", "intel-lazy"]
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(BASE + 'kernel_args: ["intel_iommu=on,sm_on"]\niommu: intel\n')
    assert iommu_modes(load_topology(tuned)) == []
    with pytest.raises(ConfigError, match=r"kernel_args tune the IOMMU \(intel_iommu=on,sm_on\)"):
        load_topology(f"{tuned}.iommu-virtio")


def test_a_users_file_has_variants_and_bad_ones_are_refused(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(BASE)
    assert load_topology(f"{mine}.iommu-intel-pt").name == "mine.iommu-intel-pt"
    with pytest.raises(ConfigError, match="that is its own IOMMU"):
        load_topology("two-switch.iommu-none")
    allowed = "none, intel, intel-pt, virtio, virtio-lazy, intel-lazy"
    with pytest.raises(ConfigError, match=f"unknown IOMMU variant 'xen'; allowed: {allowed}"):
        load_topology("two-switch.iommu-xen")


def test_lazy_flushes_are_a_variant_and_a_key(tmp_path):
    """iommu.strict=0 as an axis: lazy variants of the translating IOMMUs; a file says
    `strict: false`, only for a translating IOMMU."""
    lazy = load_topology("two-switch.iommu-virtio-lazy")
    assert (lazy.iommu.type.value, lazy.iommu.strict) == ("virtio", False)
    assert "lazy IOTLB flushes" in lazy.description
    assert not load_topology("p2pdma-thru-iommu.iommu-intel-lazy").iommu.strict
    mine = tmp_path / "mine.yaml"
    mine.write_text(BASE + "iommu: {type: intel, strict: false}\n")
    assert not load_topology(mine).iommu.strict
    mine.write_text(BASE + "iommu: {type: intel, mode: passthrough, strict: false}\n")
    with pytest.raises(TopologyError, match="needs a translating IOMMU"):
        load_topology(mine)
