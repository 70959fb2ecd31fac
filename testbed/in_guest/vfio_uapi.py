"""VFIO cdev and iommufd uAPI of Linux 7.2, as ioctl numbers and struct packers (stdlib only).

Layouts follow include/uapi/linux/vfio.h and include/uapi/linux/iommufd.h. Every ioctl in
both headers is `_IO(';', nr)` (no size or direction bits: the structs carry their own
argsz/size), and the numbers are computed the way <asm-generic/ioctl.h> does. The host's
unit tests check them against values derived by hand from the headers.
"""

import struct

# <asm-generic/ioctl.h>
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS, _IOC_DIRBITS = 8, 8, 14, 2
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE = 0


def _IOC(direction: int, typ: int, nr: int, size: int) -> int:  # noqa: N802 - the kernel's name
    return (direction << _IOC_DIRSHIFT) | (typ << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)


def _IO(typ: str, nr: int) -> int:  # noqa: N802
    return _IOC(_IOC_NONE, ord(typ), nr, 0)


# -- vfio.h ---------------------------------------------------------------------------------
VFIO_TYPE = ";"
VFIO_BASE = 100
# the legacy container and group (no-IOMMU mode: 7.2's cdev does not support it)
VFIO_CHECK_EXTENSION = _IO(VFIO_TYPE, VFIO_BASE + 1)
VFIO_SET_IOMMU = _IO(VFIO_TYPE, VFIO_BASE + 2)
VFIO_GROUP_GET_STATUS = _IO(VFIO_TYPE, VFIO_BASE + 3)
VFIO_GROUP_SET_CONTAINER = _IO(VFIO_TYPE, VFIO_BASE + 4)
VFIO_GROUP_GET_DEVICE_FD = _IO(VFIO_TYPE, VFIO_BASE + 6)
VFIO_NOIOMMU_IOMMU = 8
VFIO_GROUP_FLAGS_VIABLE = 1 << 0
# struct vfio_group_status { u32 argsz, flags; }
GROUP_STATUS = struct.Struct("<II")
NOIOMMU_PARAM = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"
VFIO_DEVICE_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 7)
VFIO_DEVICE_GET_REGION_INFO = _IO(VFIO_TYPE, VFIO_BASE + 8)
VFIO_DEVICE_GET_IRQ_INFO = _IO(VFIO_TYPE, VFIO_BASE + 9)
VFIO_DEVICE_SET_IRQS = _IO(VFIO_TYPE, VFIO_BASE + 10)
VFIO_DEVICE_RESET = _IO(VFIO_TYPE, VFIO_BASE + 11)
VFIO_DEVICE_PCI_HOT_RESET = _IO(VFIO_TYPE, VFIO_BASE + 13)
VFIO_DEVICE_FEATURE = _IO(VFIO_TYPE, VFIO_BASE + 17)
VFIO_DEVICE_BIND_IOMMUFD = _IO(VFIO_TYPE, VFIO_BASE + 18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 19)
VFIO_DEVICE_DETACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 20)

VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_DEVICE_FLAGS_PCI = 1 << 1

VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2

VFIO_PCI_BAR0_REGION_INDEX = 0
VFIO_PCI_BAR2_REGION_INDEX = 2
VFIO_PCI_ROM_REGION_INDEX = 6
VFIO_PCI_CONFIG_REGION_INDEX = 7
VFIO_PCI_VGA_REGION_INDEX = 8
VFIO_PCI_NUM_REGIONS = 9

VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX = 0, 1, 2
VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_REQ_IRQ_INDEX = 3, 4

VFIO_IRQ_SET_DATA_NONE = 1 << 0
VFIO_IRQ_SET_DATA_BOOL = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
VFIO_IRQ_SET_ACTION_MASK = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5

VFIO_DEVICE_FEATURE_MASK = 0xFFFF
VFIO_DEVICE_FEATURE_GET = 1 << 16
VFIO_DEVICE_FEATURE_SET = 1 << 17
VFIO_DEVICE_FEATURE_PROBE = 1 << 18
VFIO_DEVICE_FEATURE_DMA_BUF = 11
# runtime PM (include/uapi/linux/vfio.h): entry, entry with a wake-up eventfd, exit
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY = 3
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4
VFIO_DEVICE_FEATURE_LOW_POWER_EXIT = 5

# struct vfio_device_info { u32 argsz, flags, num_regions, num_irqs, cap_offset, pad; }
DEVICE_INFO = struct.Struct("<IIIIII")
# struct vfio_region_info { u32 argsz, flags, index, cap_offset; aligned_u64 size, offset; }
REGION_INFO = struct.Struct("<IIIIQQ")
# struct vfio_irq_set { u32 argsz, flags, index, start, count; u8 data[]; }
IRQ_SET = struct.Struct("<IIIII")
# struct vfio_device_feature { u32 argsz, flags; u8 data[]; }
DEVICE_FEATURE = struct.Struct("<II")
# struct vfio_device_feature_dma_buf { u32 region_index, open_flags, flags, nr_ranges;
#                                      struct vfio_region_dma_range dma_ranges[]; }
FEATURE_DMA_BUF = struct.Struct("<IIII")
# struct vfio_region_dma_range { u64 offset, length; }
DMA_RANGE = struct.Struct("<QQ")
# struct vfio_device_bind_iommufd { u32 argsz, flags; s32 iommufd; u32 out_devid;
#                                   aligned_u64 token_uuid_ptr; }
BIND_IOMMUFD = struct.Struct("<IIiIQ")
# struct vfio_device_attach_iommufd_pt { u32 argsz, flags, pt_id, pasid; }
ATTACH_IOMMUFD_PT = struct.Struct("<IIII")
# struct vfio_device_detach_iommufd_pt { u32 argsz, flags, pasid; }
DETACH_IOMMUFD_PT = struct.Struct("<III")

# -- iommufd.h ------------------------------------------------------------------------------
IOMMUFD_TYPE = ";"
IOMMUFD_CMD_DESTROY = 0x80
IOMMUFD_CMD_IOAS_ALLOC = 0x81
IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84
IOMMUFD_CMD_IOAS_MAP = 0x85
IOMMUFD_CMD_IOAS_UNMAP = 0x86
IOMMUFD_CMD_IOAS_MAP_FILE = 0x8F
IOMMU_DESTROY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY)
IOMMU_IOAS_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
IOMMU_IOAS_IOVA_RANGES = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES)
IOMMU_IOAS_MAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP)
IOMMU_IOAS_UNMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP)
IOMMU_IOAS_MAP_FILE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE)

IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE = 1 << 1
IOMMU_IOAS_MAP_READABLE = 1 << 2

# struct iommu_destroy { u32 size, id; }
DESTROY = struct.Struct("<II")
# struct iommu_ioas_alloc { u32 size, flags, out_ioas_id; }
IOAS_ALLOC = struct.Struct("<III")
# struct iommu_ioas_map { u32 size, flags, ioas_id, __reserved; aligned_u64 user_va, length, iova; }
IOAS_MAP = struct.Struct("<IIIIQQQ")
# struct iommu_ioas_map_file { u32 size, flags, ioas_id; s32 fd; aligned_u64 start, length, iova; }
IOAS_MAP_FILE = struct.Struct("<IIIiQQQ")
# struct iommu_ioas_unmap { u32 size, ioas_id; aligned_u64 iova, length; }
IOAS_UNMAP = struct.Struct("<IIQQ")

# -- PCI config space (include/uapi/linux/pci_regs.h) -----------------------------------------
PCI_COMMAND = 0x04
PCI_COMMAND_IO = 0x1
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4
PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10
PCI_CAPABILITY_LIST = 0x34
PCI_CAP_ID_PM = 0x01
PCI_CAP_ID_EXP = 0x10
PCI_PM_CTRL = 0x04  # PMCSR, from the PM capability
PCI_PM_CTRL_STATE_MASK = 0x3
PCI_EXP_DEVCAP = 0x04  # from the PCI Express capability
PCI_EXP_DEVCAP_FLR = 0x10000000
PCI_EXP_DEVCTL = 0x08
PCI_EXP_DEVCTL_BCR_FLR = 0x8000
POWER_STATES = {"D0": 0, "D3hot": 3}


# -- packers --------------------------------------------------------------------------------


def device_info() -> bytearray:
    return bytearray(DEVICE_INFO.pack(DEVICE_INFO.size, 0, 0, 0, 0, 0))


def region_info(index: int) -> bytearray:
    return bytearray(REGION_INFO.pack(REGION_INFO.size, 0, index, 0, 0, 0))


def irq_set_eventfd(index: int, efd: int) -> bytearray:
    """ACTION_TRIGGER | DATA_EVENTFD for subindex 0 of `index` (efd -1 de-assigns)."""
    data = struct.pack("<i", efd)
    return bytearray(
        IRQ_SET.pack(IRQ_SET.size + len(data), VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, 1)
        + data
    )


def feature_dma_buf(
    ranges,
    region_index: int = VFIO_PCI_BAR2_REGION_INDEX,
    flags: int = 0,
    open_flags: int = 0,
    nr_ranges: int | None = None,
    feature_flags: int = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
) -> bytearray:
    """VFIO_DEVICE_FEATURE argument for a dma-buf of `ranges` [(offset, length), ...] of a BAR.
    `nr_ranges` defaults to len(ranges); a different value is for provoking errors."""
    body = FEATURE_DMA_BUF.pack(region_index, open_flags, flags, len(ranges) if nr_ranges is None else nr_ranges)
    body += b"".join(DMA_RANGE.pack(off, length) for off, length in ranges)
    return bytearray(DEVICE_FEATURE.pack(DEVICE_FEATURE.size + len(body), feature_flags) + body)


def feature_set(feature: int, body: bytes = b"") -> bytearray:
    """VFIO_DEVICE_FEATURE SET of `feature` with its argument `body`."""
    return bytearray(DEVICE_FEATURE.pack(DEVICE_FEATURE.size + len(body), VFIO_DEVICE_FEATURE_SET | feature) + body)


# struct vfio_pci_hot_reset { u32 argsz, flags, count; s32 group_fds[]; }: count 0 on a cdev,
# whose iommufd proves the ownership of every device the reset takes
HOT_RESET = struct.Struct("<III")

# struct vfio_device_low_power_entry_with_wakeup { s32 wakeup_eventfd; u32 reserved; }
LOW_POWER_WAKEUP = struct.Struct("<iI")


def bind_iommufd(iommufd: int) -> bytearray:
    return bytearray(BIND_IOMMUFD.pack(BIND_IOMMUFD.size, 0, iommufd, 0, 0))


def attach_iommufd_pt(pt_id: int) -> bytearray:
    return bytearray(ATTACH_IOMMUFD_PT.pack(ATTACH_IOMMUFD_PT.size, 0, pt_id, 0))


def ioas_alloc() -> bytearray:
    return bytearray(IOAS_ALLOC.pack(IOAS_ALLOC.size, 0, 0))


def ioas_map(ioas_id: int, user_va: int, length: int, iova: int, flags: int) -> bytearray:
    return bytearray(IOAS_MAP.pack(IOAS_MAP.size, flags, ioas_id, 0, user_va, length, iova))


def ioas_map_file(ioas_id: int, fd: int, start: int, length: int, iova: int, flags: int) -> bytearray:
    return bytearray(IOAS_MAP_FILE.pack(IOAS_MAP_FILE.size, flags, ioas_id, fd, start, length, iova))


def ioas_unmap(ioas_id: int, iova: int, length: int) -> bytearray:
    return bytearray(IOAS_UNMAP.pack(IOAS_UNMAP.size, ioas_id, iova, length))


def destroy(object_id: int) -> bytearray:
    return bytearray(DESTROY.pack(DESTROY.size, object_id))
