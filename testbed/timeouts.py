"""Every deadline the VM layer uses, in one place, scaled for the accelerator."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields, replace

# TCG emulates every instruction: a boot that takes 10 s under KVM takes minutes here.
TCG_FACTOR = 6.0
SCALE_ENV = "TESTBED_TIMEOUT_SCALE"  # extra factor for slow CI runners


@dataclass(frozen=True)
class Timeouts:
    """Seconds. Host-side waits (QMP, teardown) do not depend on the guest's speed; guest-side
    waits (boot, commands, events) do, so only those scale."""

    qmp_connect: float = 10.0  # QEMU greets on the inherited monitor before anything runs
    qmp_command: float = 30.0
    quit: float = 10.0  # QMP quit → process gone
    terminate: float = 5.0  # SIGTERM → gone
    kill: float = 5.0  # SIGKILL → gone (only a D-state QEMU survives this)
    accel_probe: float = 5.0  # the probe guest needs milliseconds
    ssh_attempt: float = 10.0  # one TCP connect + banner + auth
    ssh_retry_interval: float = 0.1  # a refused TCP connect costs nothing; sshd answers sooner
    # guest-paced
    boot_to_ssh: float = 30.0
    guest_command: float = 60.0
    event: float = 30.0
    unplug: float = 15.0  # device_del → DEVICE_DELETED, on top of pciehp's fixed 5 s button wait
    plug: float = 15.0  # device_add → the guest bound a driver to it
    console_flush: float = 10.0  # a line written to /dev/kmsg → in the serial console log
    # the kernel silent this long before init: hung (under TCG a boot now and then loses a wakeup
    # between vCPUs: stop_machine at the clocksource switch never ends); a normal gap is < 2 s
    boot_silence: float = 5.0
    # host-paced
    host_tool: float = 30.0  # qemu --version, qemu-img create, a compiler probe
    ssh_channel: float = 30.0  # open one more channel on a live SSH connection

    GUEST_PACED = (
        "boot_to_ssh",
        "guest_command",
        "event",
        "ssh_attempt",
        "unplug",
        "plug",
        "console_flush",
        "boot_silence",
    )

    @classmethod
    def for_accel(cls, accel: str, scale: float | None = None) -> Timeouts:
        """Defaults for `accel` ("kvm" | "tcg"), times `scale` or $TESTBED_TIMEOUT_SCALE."""
        factor = TCG_FACTOR if accel == "tcg" else 1.0
        if scale is None:
            scale = float(os.environ.get(SCALE_ENV) or 1.0)
        base = cls()
        return base.scaled(factor * scale, guest_only=True) if factor * scale != 1.0 else base

    def with_boot_work(self, seconds: float, accel: str) -> Timeouts:
        """More time to SSH for a boot that does work first (KUnit suites at boot): `seconds`
        as under KVM, scaled like every guest-paced wait."""
        factor = (TCG_FACTOR if accel == "tcg" else 1.0) * float(os.environ.get(SCALE_ENV) or 1.0)
        return replace(self, boot_to_ssh=self.boot_to_ssh + seconds * factor)

    def scaled(self, factor: float, guest_only: bool = False) -> Timeouts:
        names = (
            self.GUEST_PACED if guest_only else tuple(f.name for f in fields(self) if f.name != "ssh_retry_interval")
        )
        return replace(self, **{n: getattr(self, n) * factor for n in names})


class Deadline:
    """A point in monotonic time; `remaining()` never goes below zero."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._end
