"""`python3 fingerprint.py read`: what this guest actually sees, so a result can be told apart
from a mis-rendered topology: the PCI tree (IDs, BDFs, BARs, IOMMU groups, each port's ACS
capability and control bits), the CPU the guest sees, and the kernel."""

import os
import struct
import sys

from common import SYS_PCI, emit, read

ACS_CAP_ID = 0x000D  # PCIe extended capability: Access Control Services
EXT_CAP_START = 0x100
RESOURCE_FLAGS_IO = 0x100
RESOURCE_FLAGS_MEM = 0x200
RESOURCE_FLAGS_PREFETCH = 0x2000
RESOURCE_FLAGS_MEM_64 = 0x100000


def acs(config: bytes):
    """The ACS capability and control registers, or None when the function has none."""
    offset, seen = EXT_CAP_START, set()
    while offset and offset + 8 <= len(config) and offset not in seen:
        seen.add(offset)
        (header,) = struct.unpack_from("<I", config, offset)
        if header in (0, 0xFFFFFFFF):
            return None
        if header & 0xFFFF == ACS_CAP_ID:
            cap, ctrl = struct.unpack_from("<HH", config, offset + 4)
            return {"offset": offset, "cap": f"{cap:#06x}", "ctrl": f"{ctrl:#06x}"}
        offset = header >> 20
    return None


def bars(path: str) -> list:
    out = []
    lines = read(os.path.join(path, "resource"), "").splitlines()
    for index, line in enumerate(lines[:7]):  # six BARs and the expansion ROM
        start, end, flags = (int(word, 16) for word in line.split())
        if not flags or end < start:
            continue
        kind = "io" if flags & RESOURCE_FLAGS_IO else "mem"
        if flags & RESOURCE_FLAGS_MEM_64:
            kind += "64"
        if flags & RESOURCE_FLAGS_PREFETCH:
            kind += " pref"
        out.append({"index": index, "start": f"{start:#x}", "size": end - start + 1, "kind": kind})
    return out


def device(bdf: str) -> dict:
    path = os.path.join(SYS_PCI, bdf)
    group = os.path.join(path, "iommu_group")
    try:
        with open(os.path.join(path, "config"), "rb") as f:
            config = f.read()
    except OSError:
        config = b""
    driver = os.path.join(path, "driver")
    return {
        "bdf": bdf,
        "id": read(os.path.join(path, "vendor"))[2:] + ":" + read(os.path.join(path, "device"))[2:],
        "subsystem": read(os.path.join(path, "subsystem_vendor"), "0x")[2:]
        + ":"
        + read(os.path.join(path, "subsystem_device"), "0x")[2:],
        "class": read(os.path.join(path, "class")),
        "driver": os.path.basename(os.readlink(driver)) if os.path.exists(driver) else None,
        "iommu_group": int(os.path.basename(os.readlink(group))) if os.path.exists(group) else None,
        "bars": bars(path),
        "acs": acs(config),
    }


def cpu() -> dict:
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if not line.strip():
                break  # the first CPU is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return {
        "vendor": fields.get("vendor_id"),
        "family": int(fields.get("cpu family", "0")),
        "model": int(fields.get("model", "0")),
        "model_name": fields.get("model name"),
        "count": os.cpu_count(),
    }


def fingerprint() -> dict:
    iommus = sorted(os.listdir("/sys/class/iommu")) if os.path.isdir("/sys/class/iommu") else []
    return {
        "kernel": {"release": os.uname().release, "version": os.uname().version, "cmdline": read("/proc/cmdline")},
        "cpu": cpu(),
        "iommus": iommus,
        "pci": [device(bdf) for bdf in sorted(os.listdir(SYS_PCI))],
    }


COMMANDS = {"read": lambda _args: fingerprint()}  # in the agent's process: no interpreter start

if __name__ == "__main__":
    if sys.argv[1:] != ["read"]:
        sys.exit("usage: fingerprint.py read")
    emit(fingerprint())
