"""Hotplug waits: what "plugged" means per driver, and a stuck plug reported with guest state."""

from __future__ import annotations

import errno
import sys
import threading
from pathlib import Path

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


# -- the guest's side, waited for in the guest (testbed/in_guest/pci.py wait) ---------------

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "in_guest"))
import common  # noqa: E402  (in-guest helpers: modules of their own directory)
import pci  # noqa: E402


@pytest.fixture
def sysfs(tmp_path, monkeypatch):
    """A /sys/bus/pci/devices of our own; the driver link points into a drivers directory."""
    devices = tmp_path / "devices"
    devices.mkdir()
    monkeypatch.setattr(pci, "SYS_PCI", str(devices))
    monkeypatch.setattr(common, "SYS_PCI", str(devices))
    monkeypatch.setattr(pci, "WAIT_POLL_S", 0.001)
    return devices


def _bind(devices: Path, bdf: str, driver: str, state: str | None = None) -> None:
    (devices / bdf).mkdir(exist_ok=True)
    target = devices.parent / "drivers" / driver
    target.mkdir(parents=True, exist_ok=True)
    (devices / bdf / "driver").symlink_to(target)
    if state is not None:
        (devices / bdf / "nvme" / "nvme3").mkdir(parents=True)
        (devices / bdf / "nvme" / "nvme3" / "state").write_text(state + "\n")


def test_the_guest_side_of_a_plug_is_bound_and_for_nvme_live(sysfs):
    bdf = "0000:01:00.0"
    assert pci.state_of(bdf, "nvme") == "gone"
    (sysfs / bdf).mkdir()
    assert pci.state_of(bdf, None) == "ready"  # listed is all a driverless plug waits for
    assert pci.state_of(bdf, "nvme") == "listed"
    _bind(sysfs, bdf, "nvme", state="resetting")
    assert pci.state_of(bdf, "nvme") == "listed"  # bound, its I/O queues not made yet
    (sysfs / bdf / "nvme" / "nvme3" / "state").write_text("live\n")
    assert pci.state_of(bdf, "nvme") == "ready"
    _bind(sysfs, "0000:02:00.0", "vfio-pci")
    assert pci.state_of("0000:02:00.0", "nvme") == "listed"  # bound, to another driver
    assert pci.state_of("0000:02:00.0", "vfio-pci") == "ready"


def test_the_guest_side_is_waited_for_until_reached_or_the_deadline(sysfs):
    bdf = "0000:01:00.0"
    (sysfs / bdf).mkdir()
    threading.Timer(0.05, lambda: (sysfs / bdf).rmdir()).start()
    gone = pci.wait({"bdf": bdf, "until": "gone", "driver": None, "timeout": 10})
    assert gone["reached"] and gone["state"] == "gone" and 0.04 <= gone["seconds"] < 10
    late = pci.wait({"bdf": bdf, "until": "ready", "driver": "nvme", "timeout": 0.05})
    assert late == {"reached": False, "state": "gone", "seconds": late["seconds"]} and late["seconds"] >= 0.05
    with pytest.raises(ValueError, match="until"):
        pci.wait({"bdf": bdf, "until": "bound", "timeout": 1})


def test_a_plug_waited_for_by_the_agent_needs_no_ssh():
    vm = FakeMachine(ready_after=10**9)  # SSH would never see it ready
    asked = []

    def agent_wait(bdf, until, driver, timeout):
        asked.append((bdf, until, driver))
        return True

    hotplug.plug(vm, Spec(), "0000:01:00.0", "nvme", timeout=60, guest_wait=agent_wait)
    assert asked == [("0000:01:00.0", "ready", "nvme")] and vm.checks == []


# -- a pciehp unplug confirmed by the guest (pci.py confirm_unplug) --------------------------

PORT, DEVICE = "0000:00:02.0", "0000:01:00.0"
EXP_CAP = 0x40


def _port_config(power_indicator: int) -> bytes:
    """A bridge's config header: a PM capability, then PCI Express with Slot Control set."""
    config = bytearray(256)
    config[0x34] = 0x50  # capabilities list: PM at 0x50 -> Express at 0x40
    config[0x50:0x52] = bytes([0x01, EXP_CAP])
    config[EXP_CAP : EXP_CAP + 2] = bytes([0x10, 0x00])
    sltctl = 0x0400 | power_indicator | 0x00C0  # power controller, attention indicator off
    config[EXP_CAP + 0x18 : EXP_CAP + 0x1A] = sltctl.to_bytes(2, "little")
    return bytes(config)


@pytest.fixture
def slot(sysfs, tmp_path, monkeypatch):
    """DEVICE in pciehp slot "1" of PORT; the port's power indicator on (state ON)."""
    slots = tmp_path / "slots"
    (slots / "1").mkdir(parents=True)
    (slots / "1" / "address").write_text(DEVICE.rsplit(".", 1)[0] + "\n")
    (slots / "1" / "power").write_text("1\n")
    (slots / "7").mkdir()
    (slots / "7" / "address").write_text("0000:05:00\n")
    (slots / "0-1").mkdir()  # a slot of the same address without a power file: not pciehp's
    (slots / "0-1" / "address").write_text(DEVICE.rsplit(".", 1)[0] + "\n")
    monkeypatch.setattr(pci, "SYS_SLOTS", str(slots))
    (sysfs / PORT).mkdir()
    (sysfs / PORT / "config").write_bytes(_port_config(0x0100))
    (sysfs / DEVICE).mkdir()
    return slots / "1"


def _later(seconds: float, fn) -> None:
    timer = threading.Timer(seconds, fn)
    timer.daemon = True
    timer.start()


def test_the_slot_is_powered_off_only_once_pciehp_blinks(sysfs, slot):
    assert pci.power_indicator(PORT) == 0x0100
    power_before_the_blink = []

    def button_taken():  # pciehp_handle_button_press(): BLINKINGOFF, indicator blinking
        power_before_the_blink.append((slot / "power").read_text())
        (sysfs / PORT / "config").write_bytes(_port_config(0x0200))

    _later(0.05, button_taken)
    said = pci.confirm_unplug({"port": PORT, "bdf": DEVICE, "timeout": 10})
    assert said["how"] == "confirmed" and said["slot"] == "1" and said["blink_s"] >= 0.04, said
    assert power_before_the_blink == ["1\n"], "powered off before pciehp took the press"
    assert (slot / "power").read_text() == "0"


def test_pciehp_coming_first_is_an_answer_not_a_wait(sysfs, slot, monkeypatch):
    """Its timer powered the slot off (indicator off), or its request was under way when the
    write came (ENODEV), or the function went: each answered at once, the power left alone."""
    (sysfs / PORT / "config").write_bytes(_port_config(0x0300))
    said = pci.confirm_unplug({"port": PORT, "bdf": DEVICE, "timeout": 10})
    assert said["how"] == "timer" and said["blink_s"] is None, said
    (sysfs / DEVICE).rmdir()
    assert pci.confirm_unplug({"port": PORT, "bdf": DEVICE, "timeout": 10})["how"] == "gone"
    assert (slot / "power").read_text() == "1\n"
    (sysfs / DEVICE).mkdir()
    (sysfs / PORT / "config").write_bytes(_port_config(0x0200))

    def enodev(path: str, done: dict) -> None:  # pciehp_sysfs_disable_slot() in POWEROFF state
        done.update(errno=errno.ENODEV, finished=True)

    monkeypatch.setattr(pci, "_power_off", enodev)
    assert pci.confirm_unplug({"port": PORT, "bdf": DEVICE, "timeout": 10})["how"] == "timer"


def test_a_removal_that_blocks_is_answered_by_the_deadline(sysfs, slot, monkeypatch):
    """A vfio-pci remove waits for user space to close the device: the write blocks, the
    answer comes by the deadline all the same, and the host's DEVICE_DELETED wait says more."""
    (sysfs / PORT / "config").write_bytes(_port_config(0x0200))
    release = threading.Event()
    monkeypatch.setattr(pci, "_power_off", lambda path, done: release.wait(10))
    said = pci.confirm_unplug({"port": PORT, "bdf": DEVICE, "timeout": 0.1})
    release.set()
    assert said["how"] == "confirmed" and said["blocked"] and 0.1 <= said["seconds"] < 5, said


def test_a_press_pciehp_never_takes_or_a_slot_that_is_not_there_is_an_answer(sysfs, slot):
    said = pci.confirm_unplug({"port": PORT, "bdf": DEVICE, "timeout": 0.05})
    assert said["how"] == "no blink" and "did not blink within 0.05 s" in said["error"], said
    assert (slot / "power").read_text() == "1\n"
    said = pci.confirm_unplug({"port": PORT, "bdf": "0000:09:00.0", "timeout": 10})
    assert said["how"] == "no slot" and said["error"] == "no hotplug slot with a power file at 0000:09:00", said


class UnplugQMP(FakeQMP):
    def wait_event(self, name: str, match: dict, timeout: float) -> dict:
        self.commands.append(("wait " + name, dict(match)))
        return {"event": name, "data": match}


def test_an_unplug_is_confirmed_after_device_del_and_a_refusal_is_explained():
    vm = FakeMachine(ready_after=0)
    vm.qmp = UnplugQMP()
    asked = []

    def confirm(port, bdf, timeout):
        asked.append((port, bdf, list(vm.qmp.commands)))
        return {"how": "confirmed", "slot": "1", "blink_s": 0.1}

    result = hotplug.unplug(vm, "nvme0", DEVICE, PORT, guest_wait=lambda *a: True, confirm=confirm)
    assert result.confirmed and asked == [(PORT, DEVICE, [("device_del", {"id": "nvme0"})])]
    assert vm.qmp.commands[-1] == ("wait DEVICE_DELETED", {"device": "nvme0"})
    assert hotplug.unplug(vm, "nvme1", DEVICE, PORT, guest_wait=lambda *a: True).how == ""

    def timer_first(port, bdf, timeout):
        return {"how": "timer", "slot": "1"}

    late = hotplug.unplug(vm, "nvme0", DEVICE, PORT, guest_wait=lambda *a: True, confirm=timer_first)
    assert late.how == "timer" and not late.confirmed  # the unplug went on, pciehp's way

    def refused(port, bdf, timeout):
        return {"how": "error", "slot": "1", "error": "writing 0 to slot 1's power: EIO"}

    with pytest.raises(GuestError, match=r"device_del nvme0: the guest could not power slot 1 off \(error\): .*EIO"):
        hotplug.unplug(vm, "nvme0", DEVICE, PORT, guest_wait=lambda *a: True, confirm=refused)
