"""Entry point registered in pyproject (`pytest11`): markers and options."""

from __future__ import annotations

import pytest

MARKERS = {
    "p2p": "P2P map/unmap through NVMe CMB p2pmem (boots VMs)",
    "hotunplug": "hot-unplug and replug of P2P providers and clients (boots VMs)",
    "vfio": "VFIO dma-buf export, iommufd import and revoke (boots VMs)",
    "slow": "long-running: cycles, soaks, debug kernels",
    "qemu": "starts real QEMU processes, no guest kernel needed",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
