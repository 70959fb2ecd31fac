"""Shared bits of the in-guest helpers: JSON output, errno names, sysfs reads."""

import errno
import json
import os
import re
import sys

SYS_PCI = "/sys/bus/pci/devices"
NAMESPACE_RE = re.compile(r"^nvme\d+n\d+$")


def emit(obj) -> None:
    json.dump(obj, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def error_of(exc: OSError) -> dict:
    return {"ok": False, "errno": exc.errno, "error": errno.errorcode.get(exc.errno, str(exc.errno)),
            "message": exc.strerror}


def driver(bdf: str):
    """The name of the driver bound to bdf, or None."""
    link = os.path.join(SYS_PCI, bdf, "driver")
    return os.path.basename(os.readlink(link)) if os.path.exists(link) else None


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


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
            if NAMESPACE_RE.match(entry) and os.path.exists(os.path.join("/dev", entry)):
                return os.path.join("/dev", entry)
    raise FileNotFoundError(f"no NVMe namespace below {bdf}")


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
