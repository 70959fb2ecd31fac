"""A topology under another IOMMU (`<name>.iommu-<mode>`): the matrix's IOMMU axis."""

from __future__ import annotations

import re
from dataclasses import replace

from ..errors import ConfigError
from .model import EndpointKind, Iommu, IommuMode, IommuType, Topology

# `<topology>.iommu-<mode>`: the topology under another IOMMU (the matrix's IOMMU axis)
IOMMU_VARIANTS = {
    "none": Iommu(IommuType.NONE, IommuMode.TRANSLATED),
    "intel": Iommu(IommuType.INTEL, IommuMode.TRANSLATED),
    "intel-pt": Iommu(IommuType.INTEL, IommuMode.PASSTHROUGH),
    "virtio": Iommu(IommuType.VIRTIO, IommuMode.TRANSLATED),
    "virtio-lazy": Iommu(IommuType.VIRTIO, IommuMode.TRANSLATED, strict=False),
    "intel-lazy": Iommu(IommuType.INTEL, IommuMode.TRANSLATED, strict=False),
}
VARIANT_RE = re.compile(r"^(?P<base>.+)\.iommu-(?P<mode>[a-z-]+)$")
# kernel arguments that tune the IOMMU: a topology with them is not varied
IOMMU_ARG_RE = re.compile(r"^(intel_iommu|amd_iommu|iommu|iommu\.\w+)=")


def iommu_modes(topo: Topology) -> list[str]:
    """The IOMMU variants the matrix may run this topology under: every mode but its own, none
    when its kernel arguments tune the IOMMU (they were written for its own)."""
    if any(IOMMU_ARG_RE.match(arg) for arg in topo.kernel_args):
        return []
    return [mode for mode, iommu in IOMMU_VARIANTS.items() if iommu != topo.iommu]


def iommu_variant(topo: Topology, mode: str) -> Topology:
    """The topology under another IOMMU: named `<name>.iommu-<mode>`, its declared expectations
    dropped (they were declared for its own IOMMU; the oracle judges the variant)."""
    if mode not in IOMMU_VARIANTS:
        raise ConfigError(
            f"'{topo.name}.iommu-{mode}': unknown IOMMU variant '{mode}'; allowed: {', '.join(IOMMU_VARIANTS)}"
        )
    if mode not in iommu_modes(topo):
        why = (
            "that is its own IOMMU"
            if IOMMU_VARIANTS[mode] == topo.iommu
            else "its kernel_args tune the IOMMU ("
            + ", ".join(a for a in topo.kernel_args if IOMMU_ARG_RE.match(a))
            + ")"
        )
        raise ConfigError(f"'{topo.name}.iommu-{mode}': not a variant of {topo.source}: {why}")
    iommu = IOMMU_VARIANTS[mode]
    kernel_args = topo.kernel_args
    vfio_capable = any(ep.kind in (EndpointKind.IVSHMEM, EndpointKind.EDU) for ep in topo.endpoints)
    if iommu.type is IommuType.VIRTIO and vfio_capable:
        # virtio-iommu on x86 gives no MSI isolation, so iommufd refuses VFIO devices without it
        kernel_args += ("iommufd.allow_unsafe_interrupts=1",)
    return replace(
        topo,
        name=f"{topo.name}.iommu-{mode}",
        description=f"{topo.description.strip()} Varied: IOMMU {iommu.type.value}/{iommu.mode.value}"
        + ("" if iommu.strict else ", lazy IOTLB flushes")
        + ".",
        iommu=iommu,
        kernel_args=kernel_args,
        expectations=(),
    )
