"""`python3 pci.py devices`: every PCI function the guest sees, with driver and p2pmem state."""

import os
import sys

from common import SYS_PCI, emit, read


def devices() -> list:
    out = []
    for bdf in sorted(os.listdir(SYS_PCI)):
        path = os.path.join(SYS_PCI, bdf)
        driver = (
            os.path.basename(os.readlink(os.path.join(path, "driver")))
            if os.path.exists(os.path.join(path, "driver"))
            else None
        )
        entry = {
            "bdf": bdf,
            "id": read(os.path.join(path, "vendor"))[2:] + ":" + read(os.path.join(path, "device"))[2:],
            "class": read(os.path.join(path, "class")),
            "driver": driver,
        }
        p2pmem = os.path.join(path, "p2pmem")
        if os.path.isdir(p2pmem):
            entry["p2pmem"] = {k: int(read(os.path.join(p2pmem, k), "0")) for k in ("size", "available")}
            entry["p2pmem"]["published"] = read(os.path.join(p2pmem, "published")) == "1"
        out.append(entry)
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["devices"]:
        sys.exit("usage: pci.py devices")
    emit(devices())
