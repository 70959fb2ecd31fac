"""Hotplug waits: what "plugged" means per driver, and a stuck plug reported with guest state."""

from __future__ import annotations

import pytest

from testbed.errors import GuestError
from testbed.timeouts import Timeouts
from testbed.vm import hotplug
from testbed.vm.ssh import RunResult


class FakeQMP:
    def __init__(self):
        self.commands: list[tuple[str, dict]] = []

    def command(self, name: str, args: dict | None = None, *, timeout: float | None = None) -> None:
        self.commands.append((name, dict(args or {})))


class FakeMachine:
    """The guest answers `ready_after` checks with failure, then success."""

    def __init__(self, ready_after: int):
        self.qmp = FakeQMP()
        self.timeouts = Timeouts().scaled(0.01)
        self.ready_after = ready_after
        self.checks: list[str] = []

    def run(self, cmd: str, timeout: float | None = None) -> RunResult:
        if cmd.startswith("dmesg"):
            return RunResult(0, "nvme nvme0: resetting\n", "")
        self.checks.append(cmd)
        return RunResult(0 if len(self.checks) > self.ready_after else 1, "", "")


class Spec:
    def qmp_args(self) -> dict:
        return {"driver": "nvme", "id": "nvme0", "bus": "rp1"}


def test_nvme_plug_waits_for_a_live_controller(monkeypatch):
    monkeypatch.setattr(hotplug.time, "sleep", lambda _: None)
    vm = FakeMachine(ready_after=2)
    hotplug.plug(vm, Spec(), "0000:01:00.0", "nvme", timeout=60)
    assert vm.qmp.commands == [("device_add", Spec().qmp_args())]
    assert len(vm.checks) == 3
    check = vm.checks[-1]
    assert "/sys/bus/pci/devices/0000:01:00.0/driver" in check and "= nvme" in check
    assert "grep -qx live /sys/bus/pci/devices/0000:01:00.0/nvme/nvme*/state" in check


def test_other_drivers_need_only_be_bound(monkeypatch):
    monkeypatch.setattr(hotplug.time, "sleep", lambda _: None)
    vm = FakeMachine(ready_after=0)
    hotplug.wait_ready(vm, "0000:02:00.0", "virtio-pci", timeout=60)
    assert "live" not in vm.checks[0] and "= virtio-pci" in vm.checks[0]


def test_a_plug_that_never_finishes_says_what_the_guest_shows(monkeypatch):
    monkeypatch.setattr(hotplug.time, "sleep", lambda _: None)
    vm = FakeMachine(ready_after=10**9)
    with pytest.raises(GuestError) as err:
        hotplug.wait_ready(vm, "0000:01:00.0", "nvme", timeout=0, what="device_add nvme0")
    text = str(err.value)
    assert "device_add nvme0: 0000:01:00.0 not bound to nvme and ready" in text
    assert "nvme nvme0: resetting" in text  # the dmesg tail
