"""device_del / device_add over QMP, each waited for on both sides with a deadline.

An unplug is done when QEMU says DEVICE_DELETED *and* the guest no longer lists the function;
one that does not finish is reported with the guest's view (slot status, dmesg tail), never a
hang. Native pciehp waits 5 s after the attention button before it powers the slot off; with
a `confirm` (the guest agent's) the guest powers the slot off as soon as pciehp has taken the
press, through the same DISABLE_SLOT request the 5 s timer makes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import GuestError
from ..render.qdev import DeviceSpec
from ..timeouts import Deadline
from .machine import Machine

PCIEHP_BUTTON_WAIT_S = 5.0  # pciehp's fixed delay after an attention button press
# Bound is not ready for drivers that finish probing asynchronously: nvme creates its I/O
# queues (in the CMB, from p2pmem) in a reset work after probe returns.
READY_CHECKS = {"nvme": "grep -qx live /sys/bus/pci/devices/{bdf}/nvme/nvme*/state"}
SSH_POLL_S = 0.5  # each look over SSH is an exec in the guest (~0.1 s under TCG)

# The guest's side of a hot-plug: (bdf, until "gone" | "ready", driver, timeout) -> reached.
# The guest agent waits in the guest (testbed/in_guest/pci.py wait, a look every 20 ms);
# ssh_wait() polls from here when there is no agent.
GuestWait = Callable[[str, str, "str | None", float], bool]
# The guest's confirmation of a pciehp unplug: (port bdf, device bdf, timeout) -> the guest's
# answer by the timeout, {"how", "slot", "blink_s", "error"} (testbed/in_guest/pci.py
# confirm_unplug). How the slot went off, as far as the guest saw it:
CONFIRMED = "confirmed"  # the guest wrote 0 to the slot's power once pciehp blinked
BY_TIMER = "timer"  # pciehp's own 5 s timer (or its request) came first
# what a confirmation may answer and the unplug still goes on: QEMU's event and the guest decide
CONFIRM_GOES_ON = (CONFIRMED, BY_TIMER, "gone")
Confirm = Callable[[str, str, float], dict]


@dataclass(frozen=True)
class UnplugResult:
    device: str
    seconds: float  # device_del → DEVICE_DELETED
    event: dict
    # how the slot went off: CONFIRMED (the guest, once pciehp took the press), BY_TIMER,
    # "gone"; "" without a confirmation (pciehp's timer, ACPI's eject, a plain device_del)
    how: str = ""

    @property
    def confirmed(self) -> bool:
        return self.how == CONFIRMED


def _guest_state(vm: Machine, port_bdf: str | None) -> str:
    parts = []
    try:
        if port_bdf:
            slot = vm.run(f"lspci -vvv -s {port_bdf} 2>/dev/null | grep -E 'Slt(Sta|Ctl)' -A1")
            parts.append(f"slot of {port_bdf}:\n{slot.stdout.strip() or '(no slot capability)'}")
        parts.append("dmesg tail:\n" + vm.run("dmesg | tail -25").stdout.rstrip())
    except Exception as exc:  # the guest may be what is stuck
        parts.append(f"(guest unreachable: {exc})")
    return "\n".join(parts)


def ssh_wait(vm: Machine) -> GuestWait:
    """The guest's side of a hot-plug, looked at over SSH every SSH_POLL_S."""

    def wait(bdf: str, until: str, driver: str | None, timeout: float) -> bool:
        if until == "gone":
            check = f"! test -e /sys/bus/pci/devices/{bdf}"
        else:
            check = f"test -e /sys/bus/pci/devices/{bdf}"
            if driver:
                check = f'test "$(basename "$(readlink /sys/bus/pci/devices/{bdf}/driver)")" = {driver}'
                if driver in READY_CHECKS:
                    check += " && " + READY_CHECKS[driver].format(bdf=bdf)
        deadline = time.monotonic() + timeout
        while vm.run(check).status != 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(SSH_POLL_S)
        return True

    return wait


def unplug(
    vm: Machine,
    device: str,
    bdf: str,
    port_bdf: str | None,
    timeout: float | None = None,
    guest_wait: GuestWait | None = None,
    confirm: Confirm | None = None,
) -> UnplugResult:
    """device_del, then DEVICE_DELETED within the deadline, then the function gone in the guest.
    `confirm` (a pciehp slot only): the guest powers the slot off once pciehp took the press."""
    timeout = (vm.timeouts.unplug if timeout is None else timeout) + PCIEHP_BUTTON_WAIT_S
    start = time.monotonic()
    deadline = Deadline(timeout)  # one for the confirmation and the event both
    vm.qmp.command("device_del", {"id": device})
    how = ""
    if confirm is not None and port_bdf is not None:
        try:
            said = confirm(port_bdf, bdf, deadline.remaining())
        except GuestError as exc:
            state = _guest_state(vm, port_bdf)
            raise GuestError(f"device_del {device}: confirming it in the guest: {exc}\n{state}") from None
        how = str(said.get("how"))
        if how not in CONFIRM_GOES_ON:
            raise GuestError(
                f"device_del {device}: the guest could not power slot {said.get('slot')} off ({how}): "
                f"{said.get('error')}\n{_guest_state(vm, port_bdf)}"
            )
    try:
        # at least a moment: a removal the confirmation saw finish has its event on the way
        event = vm.qmp.wait_event("DEVICE_DELETED", {"device": device}, timeout=max(deadline.remaining(), 1.0))
    except GuestError:
        raise GuestError(
            f"device_del {device}: no DEVICE_DELETED within {timeout:.0f}s\n{_guest_state(vm, port_bdf)}"
        ) from None
    seconds = time.monotonic() - start
    if not (guest_wait or ssh_wait(vm))(bdf, "gone", None, vm.timeouts.plug):
        raise GuestError(f"{device} deleted in QEMU but {bdf} still listed in the guest\n{_guest_state(vm, port_bdf)}")
    return UnplugResult(device, seconds, event, how)


def plug(
    vm: Machine,
    spec: DeviceSpec,
    bdf: str,
    driver: str | None,
    timeout: float | None = None,
    guest_wait: GuestWait | None = None,
) -> float:
    """device_add, then wait until the guest lists bdf (bound to `driver` and, where the driver
    has a READY_CHECKS entry, done setting up)."""
    start = time.monotonic()
    vm.qmp.command("device_add", spec.qmp_args())
    wait_ready(vm, bdf, driver, timeout, f"device_add {spec.qmp_args().get('id')}", guest_wait)
    return time.monotonic() - start


def wait_ready(
    vm: Machine,
    bdf: str,
    driver: str | None,
    timeout: float | None = None,
    what: str = "",
    guest_wait: GuestWait | None = None,
) -> None:
    """Wait until the guest lists bdf, bound to `driver` and ready (READY_CHECKS) if given."""
    timeout = vm.timeouts.plug if timeout is None else timeout
    if not (guest_wait or ssh_wait(vm))(bdf, "ready", driver, timeout):
        raise GuestError(
            f"{what + ': ' if what else ''}{bdf} not "
            f"{'bound to ' + driver + ' and ready' if driver else 'listed'} in the guest "
            f"within {timeout:.0f}s\n{_guest_state(vm, None)}"
        )
