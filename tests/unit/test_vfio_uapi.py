"""The in-guest VFIO/iommufd uAPI layer against values derived by hand from Linux 7.2's headers.

Every ioctl in include/uapi/linux/vfio.h and iommufd.h is `_IO(';', nr)`: direction 0, size 0,
type ';' = 0x3b in bits 8..15, nr in bits 0..7. VFIO numbers are VFIO_BASE (100) + n; iommufd
numbers are the IOMMUFD_CMD_* enum (0x80 + n).
"""

from __future__ import annotations

import struct

import pytest

from testbed.in_guest import vfio_uapi as U

# (name, hand-derived value, where it comes from)
IOCTLS = [
    ("VFIO_DEVICE_GET_INFO", 0x3B6B, "VFIO_BASE + 7 = 107 = 0x6b"),
    ("VFIO_DEVICE_GET_REGION_INFO", 0x3B6C, "VFIO_BASE + 8"),
    ("VFIO_DEVICE_GET_IRQ_INFO", 0x3B6D, "VFIO_BASE + 9"),
    ("VFIO_DEVICE_SET_IRQS", 0x3B6E, "VFIO_BASE + 10"),
    ("VFIO_DEVICE_RESET", 0x3B6F, "VFIO_BASE + 11"),
    ("VFIO_DEVICE_FEATURE", 0x3B75, "VFIO_BASE + 17 = 117 = 0x75"),
    ("VFIO_DEVICE_BIND_IOMMUFD", 0x3B76, "VFIO_BASE + 18"),
    ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", 0x3B77, "VFIO_BASE + 19"),
    ("VFIO_DEVICE_DETACH_IOMMUFD_PT", 0x3B78, "VFIO_BASE + 20"),
    ("IOMMU_DESTROY", 0x3B80, "IOMMUFD_CMD_DESTROY = 0x80"),
    ("IOMMU_IOAS_ALLOC", 0x3B81, "IOMMUFD_CMD_IOAS_ALLOC = 0x81"),
    ("IOMMU_IOAS_IOVA_RANGES", 0x3B84, "IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84"),
    ("IOMMU_IOAS_MAP", 0x3B85, "IOMMUFD_CMD_IOAS_MAP = 0x85"),
    ("IOMMU_IOAS_UNMAP", 0x3B86, "IOMMUFD_CMD_IOAS_UNMAP = 0x86"),
    ("IOMMU_IOAS_MAP_FILE", 0x3B8F, "IOMMUFD_CMD_IOAS_MAP_FILE = 0x8f"),
]


@pytest.mark.parametrize("name,value,why", IOCTLS, ids=[i[0] for i in IOCTLS])
def test_ioctl_numbers(name, value, why):
    assert getattr(U, name) == value, why


def test_ioc_encoding_matches_asm_generic():
    # _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
    assert U._IOC(2, ord("N"), 0x41, 16) == (2 << 30) | (16 << 16) | (0x4E << 8) | 0x41
    assert U._IO(";", 0) == 0x3B00


# (struct, size in bytes, layout reasoning)
SIZES = [
    (U.DEVICE_INFO, 24, "6 x u32"),
    (U.REGION_INFO, 32, "4 x u32, then aligned_u64 size, offset at 16 and 24"),
    (U.IRQ_SET, 20, "5 x u32; data[] starts at 20"),
    (U.DEVICE_FEATURE, 8, "argsz, flags; data[] at 8"),
    (U.FEATURE_DMA_BUF, 16, "region_index, open_flags, flags, nr_ranges"),
    (U.DMA_RANGE, 16, "u64 offset, length"),
    (U.BIND_IOMMUFD, 24, "argsz, flags, s32 iommufd, out_devid, aligned_u64 token_uuid_ptr at 16"),
    (U.ATTACH_IOMMUFD_PT, 16, "argsz, flags, pt_id, pasid"),
    (U.DETACH_IOMMUFD_PT, 12, "argsz, flags, pasid"),
    (U.DESTROY, 8, "size, id"),
    (U.IOAS_ALLOC, 12, "size, flags, out_ioas_id"),
    (U.IOAS_MAP, 40, "4 x u32 then user_va, length, iova"),
    (U.IOAS_MAP_FILE, 40, "size, flags, ioas_id, s32 fd, then start, length, iova"),
    (U.IOAS_UNMAP, 24, "size, ioas_id, then iova, length"),
]


@pytest.mark.parametrize("st,size,why", SIZES, ids=[w for _, _, w in SIZES])
def test_struct_sizes(st, size, why):
    assert st.size == size, why


def test_constants_from_headers():
    assert U.VFIO_DEVICE_FEATURE_DMA_BUF == 11
    assert (U.VFIO_DEVICE_FEATURE_GET, U.VFIO_DEVICE_FEATURE_SET, U.VFIO_DEVICE_FEATURE_PROBE) == (
        0x10000,
        0x20000,
        0x40000,
    )
    assert (U.VFIO_PCI_ROM_REGION_INDEX, U.VFIO_PCI_CONFIG_REGION_INDEX, U.VFIO_PCI_NUM_REGIONS) == (6, 7, 9)
    assert U.VFIO_PCI_REQ_IRQ_INDEX == 4
    assert (U.VFIO_IRQ_SET_DATA_EVENTFD, U.VFIO_IRQ_SET_ACTION_TRIGGER) == (4, 32)
    assert (U.IOMMU_IOAS_MAP_FIXED_IOVA, U.IOMMU_IOAS_MAP_WRITEABLE, U.IOMMU_IOAS_MAP_READABLE) == (1, 2, 4)


def test_feature_dma_buf_bytes():
    arg = U.feature_dma_buf([(0x10000, 0x4000), (0x20000, 0x1000)])
    assert len(arg) == 8 + 16 + 2 * 16
    argsz, flags, region, open_flags, dflags, nr = struct.unpack_from("<IIIIII", arg)
    assert (argsz, flags, region, open_flags, dflags, nr) == (56, 0x1000B, 2, 0, 0, 2)
    assert struct.unpack_from("<QQQQ", arg, 24) == (0x10000, 0x4000, 0x20000, 0x1000)


def test_feature_dma_buf_error_knobs():
    arg = U.feature_dma_buf([], region_index=6, flags=1, nr_ranges=0)
    assert struct.unpack("<IIIIII", arg) == (24, 0x1000B, 6, 0, 1, 0)


def test_irq_set_eventfd_bytes():
    arg = U.irq_set_eventfd(U.VFIO_PCI_REQ_IRQ_INDEX, 7)
    assert struct.unpack("<IIIIIi", arg) == (24, 4 | 32, 4, 0, 1, 7)


def test_map_file_and_bind_bytes():
    arg = U.ioas_map_file(3, 9, 0, 0x4000, 0x800000, 7)
    assert struct.unpack("<IIIiQQQ", arg) == (40, 7, 3, 9, 0, 0x4000, 0x800000)
    assert struct.unpack("<IIiIQ", U.bind_iommufd(5)) == (24, 0, 5, 0, 0)
    assert struct.unpack("<IIQQ", U.ioas_unmap(2, 0x800000, 0x4000)) == (24, 2, 0x800000, 0x4000)
