"""Which vIOMMU fault lines belong to one DMA (testbed/guestvm/p2p.py): the device and the
address must be this DMA's, so another device's or another address's fault cannot stand in."""

from __future__ import annotations

import pytest

from testbed.guestvm.p2p import dma_fault_lines, requester_id

# recorded in this testbed's guests (Linux 7.2, QEMU 7.2): intel-iommu and virtio-iommu
DMAR = (
    "DMAR: [DMA Write NO_PASID] Request device [0000:01:00.0] fault addr 0xffe02000 "
    "[fault reason 0x05] PTE Write access is not set"
)
DMAR_OTHER_DEVICE = DMAR.replace("0000:01:00.0", "0000:02:00.0")
DMAR_OTHER_PAGE = DMAR.replace("0xffe02000", "0xffe05000")
VIOMMU = "virtio_iommu virtio0: page fault from EP 256 at 0xffe02345 []"
PROBE = "# after_revoke: 0000:01:00.0 wrote 3000 bytes to 0xffe02345: 0"


def test_requester_id_is_bus_devfn():
    assert requester_id("0000:01:00.0") == 256
    assert requester_id("0000:00:03.2") == 0x1A


@pytest.mark.parametrize(
    ("lines", "found"),
    [
        ([PROBE, DMAR], [DMAR]),
        ([DMAR_OTHER_DEVICE, DMAR_OTHER_PAGE, PROBE], []),  # faults, but not of this DMA
        ([VIOMMU], [VIOMMU]),
        ([VIOMMU.replace("EP 256", "EP 257")], []),
        ([VIOMMU.replace("0xffe02345", "0xffe04000")], []),
        (["virtio_iommu virtio0: page fault from EP 256"], ["virtio_iommu virtio0: page fault from EP 256"]),
        ([], []),
    ],
    ids=["dmar", "other-device-or-page", "virtio", "virtio-other-ep", "virtio-other-page", "virtio-no-addr", "none"],
)
def test_fault_lines_of_one_dma(lines, found):
    # edu at 01:00.0 writes 3000 bytes at 0xffe02345: one page, 0xffe02000
    assert dma_fault_lines(lines, "0000:01:00.0", 0xFFE02345, 3000) == found


def test_a_dma_spanning_pages_owns_each_page():
    second = DMAR.replace("0xffe02000", "0xffe03000")
    assert dma_fault_lines([second], "0000:01:00.0", 0xFFE02F00, 512) == [second]
    assert dma_fault_lines([second], "0000:01:00.0", 0xFFE02F00, 256) == []
