"""Which of the tree's selftest programs the testbed runs, and what each needs from a guest.

A program listed here is built from tools/testing/selftests/<suite> of the kernel tree under test.
`device` programs take the BDF of a device bound to vfio-pci (the topology's ivshmem, edu and
NVMe endpoints are the candidates); `nightly` ones are too slow for `make test` under TCG.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..topology.model import EndpointKind, Topology


@dataclass(frozen=True)
class Program:
    suite: str  # directory under tools/testing/selftests
    name: str
    device: bool = False
    timeout_s: float = 600.0
    nightly: bool = False

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"


SUITES: dict[str, tuple[Program, ...]] = {
    "iommu": (
        Program("iommu", "iommufd", timeout_s=900.0),
        # every allocation of its ioctl sequences failed in turn (2 s under TCG on 7.2.13)
        Program("iommu", "iommufd_fail_nth", timeout_s=900.0),
    ),
    "vfio": (
        Program("vfio", "vfio_pci_device_test", device=True),
        Program("vfio", "vfio_iommufd_setup_test", device=True),
        Program("vfio", "vfio_dma_mapping_test", device=True),
        Program("vfio", "vfio_dma_mapping_mmio_test", device=True),
        Program("vfio", "vfio_pci_driver_test", device=True),
        Program("vfio", "vfio_pci_sriov_uapi_test", device=True),
        Program("vfio", "vfio_pci_device_init_perf_test", device=True, nightly=True),
    ),
}

# QEMU devices vfio-pci can take in a guest: what each offers the vfio selftests
DEVICE_KINDS = (EndpointKind.NVME, EndpointKind.IVSHMEM, EndpointKind.EDU)


def programs(suites: tuple[str, ...] = (), nightly: bool = False) -> tuple[Program, ...]:
    """The programs of the named suites (all when none), without the nightly-only ones unless asked."""
    names = suites or tuple(SUITES)
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        raise ConfigError(
            f"unknown selftest suite {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(SUITES)} (kunit runs with --kunit)"
        )
    return tuple(p for s in names for p in SUITES[s] if nightly or not p.nightly)


def selftest_devices(topology: Topology) -> tuple[str, ...]:
    """One endpoint of each kind vfio-pci can take (present at boot), first declared first."""
    chosen: dict[EndpointKind, str] = {}
    for ep in topology.endpoints:
        if ep.plugged and ep.kind in DEVICE_KINDS:
            chosen.setdefault(ep.kind, ep.id)
    return tuple(chosen[kind] for kind in DEVICE_KINDS if kind in chosen)
