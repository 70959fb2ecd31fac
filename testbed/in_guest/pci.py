"""`python3 pci.py devices`: every PCI function the guest sees, with driver and p2pmem state.
`pci.py wait {"bdf", "until": "gone"|"ready", "driver", "timeout"}`: a hot-plug's guest side,
waited for here (a look every 20 ms, no exec) rather than by the host over SSH.
"""

import glob
import os
import sys
import time

from common import SYS_PCI, driver, emit, read

WAIT_POLL_S = 0.02


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


def _nvme_live(bdf: str) -> bool:
    """nvme creates its I/O queues (in the CMB, from p2pmem) in a reset work after probe
    returns: bound is not ready until the controller says live."""
    for state in glob.glob(os.path.join(SYS_PCI, bdf, "nvme", "nvme*", "state")):
        if read(state) == "live":
            return True
    return False


# Past "bound to the driver", what a driver must show before a plug is done.
READY = {"nvme": _nvme_live}


def state_of(bdf: str, want_driver) -> str:
    """gone | listed (present, not yet bound to want_driver or not ready) | ready."""
    if not os.path.exists(os.path.join(SYS_PCI, bdf)):
        return "gone"
    if want_driver is None:
        return "ready"
    if driver(bdf) != want_driver:
        return "listed"
    ready = READY.get(want_driver)
    return "ready" if ready is None or ready(bdf) else "listed"


def wait(args: dict) -> dict:
    """Until bdf is `until` (gone, or listed and, with a driver, bound to it and ready) or
    the timeout: {"reached", "state", "seconds"}."""
    bdf, until, want_driver = args["bdf"], args["until"], args.get("driver")
    if until not in ("gone", "ready"):
        raise ValueError(f"until: {until!r}, not gone or ready")
    start = time.monotonic()
    deadline = start + float(args["timeout"])
    while True:
        state = state_of(bdf, want_driver)
        if state == until or time.monotonic() >= deadline:
            return {"reached": state == until, "state": state, "seconds": round(time.monotonic() - start, 3)}
        time.sleep(WAIT_POLL_S)


COMMANDS = {"devices": lambda _args: devices(), "wait": wait}


if __name__ == "__main__":
    if sys.argv[1:] != ["devices"]:
        sys.exit("usage: pci.py devices | wait JSON (through the agent)")
    emit(devices())
