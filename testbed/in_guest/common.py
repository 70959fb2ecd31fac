"""Shared bits of the in-guest helpers: JSON output, errno names, sysfs reads."""

import errno
import os
import select
import sys
import time

import jsonlite

SYS_PCI = "/sys/bus/pci/devices"
# Set by the agent: the lock it holds while it imports a helper and while it forks one.
IMPORT_GUARD = None


def late_import(name: str):
    """Module `name`, imported now if it is not yet: for what a boot's first calls should not
    pay for (re costs ~0.1 s of a boot under TCG, enum with it). In the agent under its import
    guard: a fork taken while this thread imports would leave the module's import lock held in
    the child for good. In a function, never at a module's top level: the agent imports helpers
    under that guard."""
    module = sys.modules.get(name)
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        return module
    if IMPORT_GUARD is None:
        return __import__(name)
    with IMPORT_GUARD:
        return __import__(name)


def emit(obj) -> None:
    jsonlite.dump(obj, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def error_of(exc: OSError) -> dict:
    return {
        "ok": False,
        "errno": exc.errno,
        "error": errno.errorcode.get(exc.errno, str(exc.errno)),
        "message": exc.strerror,
    }


def driver(bdf: str):
    """The name of the driver bound to bdf, or None."""
    link = os.path.join(SYS_PCI, bdf, "driver")
    return os.path.basename(os.readlink(link)) if os.path.exists(link) else None


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


BIND_TIMEOUT_S = 10.0


def bind_driver(bdf: str, name, timeout: float = BIND_TIMEOUT_S) -> dict:
    """Bind bdf to driver `name` with driver_override (None: leave it with no driver). vfio-pci
    also waits for the device's cdev. {"ok", "before", "driver"[, "error"]}."""
    before = driver(bdf)
    base = os.path.join(SYS_PCI, bdf)
    if before != name:
        write(os.path.join(base, "driver_override"), name or "\n")
        if before is not None:
            write(os.path.join(base, "driver", "unbind"), bdf)
        if name is not None:
            write("/sys/bus/pci/drivers_probe", bdf)
    deadline = time.monotonic() + timeout
    while not _bound(bdf, name):
        if time.monotonic() > deadline:
            return {
                "ok": False,
                "before": before,
                "driver": driver(bdf),
                "error": f"{bdf} not bound to {name} after {timeout}s",
            }
        time.sleep(0.02)
    return {"ok": True, "before": before, "driver": name}


def _bound(bdf: str, name) -> bool:
    if driver(bdf) != name:
        return False
    return name != "vfio-pci" or vfio_cdev(bdf) is not None or vfio_noiommu_group(bdf) is not None


def vfio_noiommu_group(bdf: str):
    """/dev/vfio/noiommu-N of a device vfio-pci took in no-IOMMU mode, once it exists, else None."""
    group = os.path.join(SYS_PCI, bdf, "iommu_group")
    if read(os.path.join(group, "name")) != "vfio-noiommu":
        return None
    path = f"/dev/vfio/noiommu-{os.path.basename(os.readlink(group))}"
    return path if os.path.exists(path) else None


def vfio_cdev(bdf: str):
    """/dev/vfio/devices/vfioN of a device bound to vfio-pci, once it exists, else None."""
    try:
        names = [n for n in os.listdir(os.path.join(SYS_PCI, bdf, "vfio-dev")) if n.startswith("vfio")]
    except FileNotFoundError:
        return None
    path = f"/dev/vfio/devices/{names[0]}" if names else None
    return path if path and os.path.exists(path) else None


def read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def nvme_namespace(bdf: str) -> str:
    """/dev/nvmeXn1 of the NVMe controller at PCI address bdf."""
    base = os.path.join(SYS_PCI, bdf, "nvme")
    for ctrl in sorted(os.listdir(base)):
        for entry in sorted(os.listdir(os.path.join(base, ctrl))):
            # nvme0n1, not the hidden per-path nvme0c0n1
            if _is_namespace(entry) and os.path.exists(os.path.join("/dev", entry)):
                return os.path.join("/dev", entry)
    raise FileNotFoundError(f"no NVMe namespace below {bdf}")


def _is_namespace(name: str) -> bool:
    """nvme<controller>n<namespace>, digits each (the pattern ^nvme\\d+n\\d+$, without re)."""
    controller, n, namespace = name.removeprefix("nvme").partition("n")
    return name.startswith("nvme") and n == "n" and controller.isdecimal() and namespace.isdecimal()


def virtio_disk(bdf: str) -> str:
    """/dev/vdX of the virtio-blk device at PCI address bdf."""
    base = os.path.join(SYS_PCI, bdf)
    for entry in sorted(os.listdir(base)):
        if entry.startswith("virtio"):
            block = os.path.join(base, entry, "block")
            if os.path.isdir(block):
                return os.path.join("/dev", sorted(os.listdir(block))[0])
    raise FileNotFoundError(f"no virtio block device below {bdf}")


def block_device(bdf: str) -> str:
    if os.path.isdir(os.path.join(SYS_PCI, bdf, "nvme")):
        return nvme_namespace(bdf)
    return virtio_disk(bdf)


def kmsg_records(fd: int):
    """(seq, text) of each /dev/kmsg record readable from fd (opened O_NONBLOCK) until none is
    left; (None, None) where the ring buffer overwrote records before they were read. The text
    is the record's first line."""
    for seq, _, text in kmsg_stamped(fd):
        yield seq, text


def kmsg_stamped(fd: int):
    """(seq, microseconds, text) of each record, as kmsg_records(); the time is the record's
    printk timestamp (None where the ring buffer overwrote records)."""
    while True:
        try:
            raw = os.read(fd, 8192).decode(errors="replace")
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # the next read resyncs to the oldest record
                yield None, None, None
                continue
            raise
        head, _, text = raw.partition(";")
        fields = head.split(",")
        seq = int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else None
        usec = int(fields[2]) if len(fields) >= 3 and fields[2].isdigit() else None
        yield seq, usec, text.rstrip("\n").split("\n")[0]


def signalled() -> bool:
    """Has the host signalled this helper (a line on its stdin, from Background.signal(), or
    stdin closed)? Does not wait."""
    ready, _, _ = select.select([0], [], [], 0)
    if ready:
        os.read(0, 4096)
    return bool(ready)


def wait_signal() -> None:
    """Wait until the host signals this helper (a line on stdin, or stdin closed)."""
    select.select([0], [], [])
    os.read(0, 4096)
