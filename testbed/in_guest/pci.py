"""`python3 pci.py devices`: every PCI function the guest sees, with driver and p2pmem state.
`pci.py wait {"bdf", "until": "gone"|"ready", "driver", "timeout"}`: a hot-plug's guest side,
waited for here (a look every 20 ms, no exec) rather than by the host over SSH.
`pci.py confirm_unplug {"port", "bdf", "timeout"}`: once pciehp has taken the attention button
of a device_del, power the slot off now rather than after the button's 5 s.
"""

import errno
import glob
import os
import struct
import sys
import threading
import time

from common import SYS_PCI, driver, emit, read

WAIT_POLL_S = 0.02
SYS_SLOTS = "/sys/bus/pci/slots"
PCI_CAPABILITY_LIST = 0x34
PCI_CAP_ID_EXP = 0x10
PCI_EXP_SLTCTL = 0x18
PCI_EXP_SLTCTL_PIC = 0x0300  # power indicator control
PCI_EXP_SLTCTL_PWR_IND_BLINK = 0x0200


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


def _express_cap(config: bytes):
    """Offset of the PCI Express capability in a config header, or None."""
    offset, seen = config[PCI_CAPABILITY_LIST] & 0xFC if len(config) > PCI_CAPABILITY_LIST else 0, set()
    while offset and offset + 2 <= len(config) and offset not in seen:
        seen.add(offset)
        if config[offset] == PCI_CAP_ID_EXP:
            return offset
        offset = config[offset + 1] & 0xFC
    return None


def power_indicator(port: str):
    """The port's Slot Control power indicator bits (PCI_EXP_SLTCTL_PIC), or None without a slot."""
    with open(os.path.join(SYS_PCI, port, "config"), "rb") as f:
        config = f.read(256)
    cap = _express_cap(config)
    if cap is None or cap + PCI_EXP_SLTCTL + 2 > len(config):
        return None
    (sltctl,) = struct.unpack_from("<H", config, cap + PCI_EXP_SLTCTL)
    return sltctl & PCI_EXP_SLTCTL_PIC


def slot_of(bdf: str):
    """The /sys/bus/pci/slots entry with a `power` file whose address is bdf's bus and device,
    or None."""
    address = bdf.rsplit(".", 1)[0]
    for name in sorted(os.listdir(SYS_SLOTS)) if os.path.isdir(SYS_SLOTS) else ():
        slot = os.path.join(SYS_SLOTS, name)
        if read(os.path.join(slot, "address")) == address and os.path.exists(os.path.join(slot, "power")):
            return name
    return None


def _power_off(path: str, done: dict) -> None:
    try:
        with open(path, "w") as f:
            f.write("0")
    except OSError as exc:
        done["errno"] = exc.errno
    done["finished"] = True


def confirm_unplug(args: dict) -> dict:
    """device_del pressed the slot's attention button. Once pciehp has taken the press (it blinks
    the power indicator in BLINKINGOFF state and arms its 5 s timer), write 0 to the slot's
    `power`: pciehp_sysfs_disable_slot() makes the same DISABLE_SLOT request the timer would
    (pciehp_handle_disable_request() cancels the timer), and returns once the slot is off and
    its devices removed. By the deadline at the latest: {"how", "slot", "blink_s", "seconds"}
    with how: "confirmed" (written; "blocked": the removal it started still runs, as a vfio-pci
    remove waits for user space), "timer" (pciehp's own request came first: the indicator went
    off, or the write got ENODEV), "gone" (the function went without a blink), "no slot",
    "no blink" or "error" (with "error")."""
    port, bdf = args["port"], args["bdf"]
    start = time.monotonic()
    deadline = start + float(args["timeout"])
    slot = slot_of(bdf)
    answer = {"slot": slot, "blink_s": None, "seconds": None}
    if slot is None:
        return {**answer, "how": "no slot", "error": f"no hotplug slot with a power file at {bdf.rsplit('.', 1)[0]}"}
    while True:
        if not os.path.exists(os.path.join(SYS_PCI, bdf)):
            return {**answer, "how": "gone"}
        indicator = power_indicator(port)
        if indicator == PCI_EXP_SLTCTL_PWR_IND_BLINK:
            break
        if indicator == PCI_EXP_SLTCTL_PIC:  # off: pciehp (its timer) powered the slot off already
            return {**answer, "how": "timer"}
        if time.monotonic() >= deadline:
            error = f"the power indicator of {port} did not blink within {args['timeout']} s ({indicator})"
            return {**answer, "how": "no blink", "error": error}
        time.sleep(WAIT_POLL_S)
    answer["blink_s"] = round(time.monotonic() - start, 3)
    done: dict = {}
    writer = threading.Thread(target=_power_off, args=(os.path.join(SYS_SLOTS, slot, "power"), done), daemon=True)
    writer.start()
    writer.join(max(deadline - time.monotonic(), 0.0))
    answer["seconds"] = round(time.monotonic() - start, 3)
    if not done.get("finished"):
        return {**answer, "how": "confirmed", "blocked": True}
    if done.get("errno") == errno.ENODEV:  # pciehp's own request was under way (POWEROFF state)
        return {**answer, "how": "timer"}
    if done.get("errno"):
        error = f"writing 0 to slot {slot}'s power: {errno.errorcode.get(done['errno'], done['errno'])}"
        return {**answer, "how": "error", "error": error}
    return {**answer, "how": "confirmed"}


COMMANDS = {"devices": lambda _args: devices(), "wait": wait, "confirm_unplug": confirm_unplug}


if __name__ == "__main__":
    if sys.argv[1:] != ["devices"]:
        sys.exit("usage: pci.py devices | wait JSON | confirm_unplug JSON (through the agent)")
    emit(devices())
