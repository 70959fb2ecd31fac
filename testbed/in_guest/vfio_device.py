"""VFIO in the guest, below a session (vfio.py): binding a device to vfio-pci, iommufd and its
IOAS, one VFIO device (cdev, or the legacy group/container of no-IOMMU mode) and its regions,
ioctls and eventfds (stdlib only)."""

import ctypes
import errno
import fcntl
import mmap
import os
import struct

import vfio_uapi as U
from common import SYS_PCI, bind_driver, read, vfio_cdev, vfio_noiommu_group

# -- binding ---------------------------------------------------------------------------------


def bind_vfio(bdf: str) -> str:
    """Bind bdf to vfio-pci; return its /dev/vfio/devices node (no-IOMMU mode: its group node)."""
    bound = bind_driver(bdf, "vfio-pci")
    if not bound["ok"]:
        raise RuntimeError(f"{bound['error']} with a cdev (driver {bound['driver']})")
    return vfio_cdev(bdf) or vfio_noiommu_group(bdf)


def set_noiommu_mode(on: bool) -> None:
    """vfio's enable_unsafe_noiommu_mode: vfio-pci gives a device without an IOMMU a no-IOMMU
    group while it is on (it taints the kernel)."""
    with open(U.NOIOMMU_PARAM, "w") as f:
        f.write("Y" if on else "N")


def bind(args: dict) -> dict:
    return {"ok": True, "cdevs": {bdf: bind_vfio(bdf) for bdf in args["bdfs"]}}


# -- objects ---------------------------------------------------------------------------------


class Iommufd:
    def __init__(self):
        self.fd = os.open("/dev/iommu", os.O_RDWR | os.O_CLOEXEC)

    def ioas_alloc(self) -> int:
        arg = U.ioas_alloc()
        fcntl.ioctl(self.fd, U.IOMMU_IOAS_ALLOC, arg)
        return U.IOAS_ALLOC.unpack(arg)[2]

    def map_user(self, ioas: int, va: int, length: int, iova: int) -> None:
        flags = U.IOMMU_IOAS_MAP_FIXED_IOVA | U.IOMMU_IOAS_MAP_READABLE | U.IOMMU_IOAS_MAP_WRITEABLE
        fcntl.ioctl(self.fd, U.IOMMU_IOAS_MAP, U.ioas_map(ioas, va, length, iova, flags))

    def map_file(self, ioas: int, fd: int, start: int, length: int, iova: int) -> int:
        flags = U.IOMMU_IOAS_MAP_FIXED_IOVA | U.IOMMU_IOAS_MAP_READABLE | U.IOMMU_IOAS_MAP_WRITEABLE
        arg = U.ioas_map_file(ioas, fd, start, length, iova, flags)
        fcntl.ioctl(self.fd, U.IOMMU_IOAS_MAP_FILE, arg)
        return U.IOAS_MAP_FILE.unpack(arg)[6]

    def unmap(self, ioas: int, iova: int, length: int) -> int:
        arg = U.ioas_unmap(ioas, iova, length)
        fcntl.ioctl(self.fd, U.IOMMU_IOAS_UNMAP, arg)
        return U.IOAS_UNMAP.unpack(arg)[3]

    def close(self) -> None:
        os.close(self.fd)


class Device:
    def __init__(self, bdf: str):
        self.bdf = bdf
        node = bind_vfio(bdf)
        self.cdev = vfio_cdev(bdf)
        self.container = self.group = None  # no-IOMMU mode: the legacy container and group
        self.fd = os.open(node, os.O_RDWR | os.O_CLOEXEC) if self.cdev else self._open_noiommu(node)
        self.devid = None

    def _open_noiommu(self, group: str) -> int:
        """The device fd through a no-IOMMU group in a container of type VFIO_NOIOMMU_IOMMU."""
        self.container = os.open("/dev/vfio/vfio", os.O_RDWR | os.O_CLOEXEC)
        if fcntl.ioctl(self.container, U.VFIO_CHECK_EXTENSION, U.VFIO_NOIOMMU_IOMMU) != 1:
            raise OSError(errno.ENODEV, "the VFIO container offers no VFIO_NOIOMMU_IOMMU")
        self.group = os.open(group, os.O_RDWR | os.O_CLOEXEC)
        status = bytearray(U.GROUP_STATUS.pack(U.GROUP_STATUS.size, 0))
        fcntl.ioctl(self.group, U.VFIO_GROUP_GET_STATUS, status)
        if not U.GROUP_STATUS.unpack(status)[1] & U.VFIO_GROUP_FLAGS_VIABLE:
            raise OSError(errno.EBUSY, f"{group} is not viable")
        fcntl.ioctl(self.group, U.VFIO_GROUP_SET_CONTAINER, struct.pack("<i", self.container))
        fcntl.ioctl(self.container, U.VFIO_SET_IOMMU, U.VFIO_NOIOMMU_IOMMU)
        # a mutable buffer: fcntl.ioctl then returns the ioctl's value, the new fd
        return fcntl.ioctl(self.group, U.VFIO_GROUP_GET_DEVICE_FD, bytearray(self.bdf.encode() + b"\0"))

    def bind_iommufd(self, iommufd: int) -> int:
        arg = U.bind_iommufd(iommufd)
        fcntl.ioctl(self.fd, U.VFIO_DEVICE_BIND_IOMMUFD, arg)
        self.devid = U.BIND_IOMMUFD.unpack(arg)[3]
        return self.devid

    def attach(self, pt_id: int) -> int:
        arg = U.attach_iommufd_pt(pt_id)
        fcntl.ioctl(self.fd, U.VFIO_DEVICE_ATTACH_IOMMUFD_PT, arg)
        return U.ATTACH_IOMMUFD_PT.unpack(arg)[2]

    def info(self) -> dict:
        arg = U.device_info()
        fcntl.ioctl(self.fd, U.VFIO_DEVICE_GET_INFO, arg)
        _, flags, regions, irqs, _, _ = U.DEVICE_INFO.unpack(arg)
        return {
            "flags": flags,
            "reset": bool(flags & U.VFIO_DEVICE_FLAGS_RESET),
            "num_regions": regions,
            "num_irqs": irqs,
        }

    def region(self, index: int) -> dict:
        arg = U.region_info(index)
        fcntl.ioctl(self.fd, U.VFIO_DEVICE_GET_REGION_INFO, arg)
        _, flags, _, _, size, offset = U.REGION_INFO.unpack(arg)
        return {"flags": flags, "size": size, "offset": offset}

    def config_read16(self, reg: int) -> int:
        off = self.region(U.VFIO_PCI_CONFIG_REGION_INDEX)["offset"]
        return struct.unpack("<H", os.pread(self.fd, 2, off + reg))[0]

    def config_read32(self, reg: int) -> int:
        off = self.region(U.VFIO_PCI_CONFIG_REGION_INDEX)["offset"]
        return struct.unpack("<I", os.pread(self.fd, 4, off + reg))[0]

    def capabilities(self) -> list[tuple[int, int]]:
        """(ID, offset) of each standard capability, walking the list through the config region."""
        found = []
        if self.config_read16(U.PCI_STATUS) & U.PCI_STATUS_CAP_LIST:
            pos = self.config_read16(U.PCI_CAPABILITY_LIST) & 0xFC
            while pos and len(found) < 48:  # 48: the most a 256-byte space can hold, loops included
                header = self.config_read16(pos)
                found.append((header & 0xFF, pos))
                pos = (header >> 8) & 0xFC
        return found

    def capability(self, cap_id: int) -> int:
        """The offset of capability `cap_id`; OSError(ENODEV) when the device has none."""
        for found, pos in self.capabilities():
            if found == cap_id:
                return pos
        raise OSError(errno.ENODEV, f"no capability {cap_id:#x}")

    def config_write16(self, reg: int, value: int) -> None:
        off = self.region(U.VFIO_PCI_CONFIG_REGION_INDEX)["offset"]
        if os.pwrite(self.fd, struct.pack("<H", value), off + reg) != 2:
            raise OSError(errno.EIO, "short config write")

    def export(self, ranges, **kw) -> int:
        """VFIO_DEVICE_FEATURE GET|DMA_BUF: the ioctl's return value is the dma-buf fd."""
        return fcntl.ioctl(self.fd, U.VFIO_DEVICE_FEATURE, U.feature_dma_buf(ranges, **kw))

    def probe_dma_buf(self) -> int:
        arg = bytearray(
            U.DEVICE_FEATURE.pack(
                U.DEVICE_FEATURE.size,
                U.VFIO_DEVICE_FEATURE_PROBE | U.VFIO_DEVICE_FEATURE_GET | U.VFIO_DEVICE_FEATURE_DMA_BUF,
            )
        )
        return fcntl.ioctl(self.fd, U.VFIO_DEVICE_FEATURE, arg)

    def set_req_eventfd(self, efd: int) -> None:
        fcntl.ioctl(self.fd, U.VFIO_DEVICE_SET_IRQS, U.irq_set_eventfd(U.VFIO_PCI_REQ_IRQ_INDEX, efd))

    def reset(self) -> int:
        return fcntl.ioctl(self.fd, U.VFIO_DEVICE_RESET, 0)

    def hot_reset(self) -> int:
        return fcntl.ioctl(self.fd, U.VFIO_DEVICE_PCI_HOT_RESET, bytearray(U.HOT_RESET.pack(U.HOT_RESET.size, 0, 0)))

    def feature_set(self, feature: int, body: bytes = b"") -> int:
        return fcntl.ioctl(self.fd, U.VFIO_DEVICE_FEATURE, U.feature_set(feature, body))

    def runtime_status(self) -> str:
        return read(os.path.join(SYS_PCI, self.bdf, "power", "runtime_status"), "?").strip()

    def close(self) -> None:
        for name in ("fd", "group", "container"):  # the device before its group and container
            if getattr(self, name) is not None:
                os.close(getattr(self, name))
                setattr(self, name, None)


def address_of(buf: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))
