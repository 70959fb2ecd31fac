"""A boot that stalls ends the boot wait at once, and the pool boots it once more: an RCU stall
before sshd is up (under TCG, a vCPU starved of host CPU stops taking timer interrupts;
tests/logs/real/tcg-boot-rcu-stall.log, one of four 2-vCPU guests booting at once on 2 host
cores), or a kernel silent before init (tests/logs/real/tcg-boot-clocksource-hang.log: a make
test boot under intel-iommu whose stop_machine at the clocksource switch never ended)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed.errors import GuestError, InfraError
from testbed.kernel.request import KernelRequest
from testbed.pytest_plugin.pool import BootOptions, VmPool
from testbed.timeouts import Deadline, Timeouts
from testbed.vm import BootStalled, Machine, console

LOGS = Path(__file__).resolve().parent.parent / "logs"
STALLED = LOGS / "real" / "tcg-boot-rcu-stall.log"
HUNG = LOGS / "real" / "tcg-boot-clocksource-hang.log"
KUNIT_SILENT = LOGS / "real" / "tcg-boot-kunit-silent-test.log"  # test_wait_backward runs 9 s
CLEAN = LOGS / "clean" / "real-two-switch-p2p.log"


def test_the_stall_is_found_and_a_clean_boot_has_none():
    stalled = [line for line in STALLED.read_text(errors="replace").splitlines() if console.find_stall(line)]
    assert stalled == ["[   23.227040] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"]
    assert not [line for line in CLEAN.read_text(errors="replace").splitlines() if console.find_stall(line)]
    assert console.find_stall("[   30.1] rcu: INFO: rcu_preempt self-detected stall on CPU")


def test_console_lines_are_read_whole_and_once(tmp_path):
    log = tmp_path / "console.log"
    lines = console.ConsoleLines(log)
    assert lines.new() == []  # QEMU has not made it yet
    log.write_bytes(b"one\r\ntw")
    assert lines.new() == ["one"]
    with log.open("ab") as f:
        f.write(b"o\nthree\n")
    assert lines.new() == ["two", "three"]
    assert lines.new() == []


@dataclass
class Process:
    status: int | None = None

    def poll(self) -> int | None:
        return self.status

    def log_tail(self, n: int) -> str:
        return "qemu said nothing"


def _waiting_machine(
    tmp_path: Path, text: str, status: int | None = None, accel: str = "tcg", boot_silence: float = 30.0
) -> Machine:
    """A Machine in its boot wait, its console recorded: only what the wait reads is set."""
    machine = Machine.__new__(Machine)
    machine.name = "two-switch-3"
    machine.console_log = tmp_path / "console.log"
    machine.console_log.write_text(text)
    machine.qemu_log = tmp_path / "qemu.log"
    machine.process = Process(status)  # type: ignore[assignment]
    machine.runtime = SimpleNamespace(accel=accel)  # type: ignore[assignment]
    machine.timeouts = Timeouts(boot_silence=boot_silence)
    return machine


def test_a_stalled_boot_ends_the_wait_at_once(tmp_path):
    machine = _waiting_machine(tmp_path, STALLED.read_text(errors="replace"))
    with pytest.raises(BootStalled, match=r"stalled while booting \(\[   23\.227040\] rcu: INFO: rcu_sched"):
        machine._wait_sshd_listening(Deadline(30))


def test_under_kvm_a_stall_is_the_kernels_and_the_wait_goes_on(tmp_path):
    """No starved TCG vCPU there: the stall is reported as the boot's splat, not retried."""
    machine = _waiting_machine(tmp_path, STALLED.read_text(errors="replace"), accel="kvm")
    started = time.monotonic()
    machine._wait_sshd_listening(Deadline(0.5))  # returns at its deadline: the SSH retries decide
    assert time.monotonic() - started >= 0.5


def test_a_kernel_silent_before_init_ends_the_wait(tmp_path):
    """The recorded hang's last line is "vgaarb: loaded" (next: the clocksource switch); it
    said nothing more for 4 minutes, until the run gave up on it."""
    machine = _waiting_machine(tmp_path, HUNG.read_text(errors="replace"), boot_silence=0.3)
    started = time.monotonic()
    with pytest.raises(
        BootStalled, match=r"stalled while booting \(no console line for 0 s before init, after '\[ +1\.021354\] vgaarb"
    ):
        machine._wait_sshd_listening(Deadline(30))
    assert 0.3 <= time.monotonic() - started < 5


def test_silence_in_a_kunit_test_before_init_is_not_a_stall(tmp_path):
    machine = _waiting_machine(tmp_path, KUNIT_SILENT.read_text(errors="replace"), boot_silence=0.1)
    machine._wait_sshd_listening(Deadline(0.5))  # returns at its deadline: no stall


def test_silence_after_init_started_is_not_judged_here(tmp_path):
    """Past init, a quiet console is normal (the SSH wait and the agent decide)."""
    machine = _waiting_machine(tmp_path, CLEAN.read_text(errors="replace").split("testbed-init: sshd ready")[0])
    machine.timeouts = Timeouts(boot_silence=0.1)
    machine._wait_sshd_listening(Deadline(0.5))


def test_under_kvm_early_silence_is_left_to_the_deadlines(tmp_path):
    machine = _waiting_machine(tmp_path, HUNG.read_text(errors="replace"), accel="kvm", boot_silence=0.1)
    machine._wait_sshd_listening(Deadline(0.5))


def test_the_silence_is_counted_from_the_last_line(tmp_path):
    log = tmp_path / "console.log"
    lines = console.ConsoleLines(log)
    time.sleep(0.25)
    assert lines.early_boot_silence(0.2) is None  # nothing on the console yet: not judged
    log.write_text("[    1.0] vgaarb: loaded\n")
    assert lines.new() == ["[    1.0] vgaarb: loaded"]
    assert lines.early_boot_silence(0.2) is None
    time.sleep(0.25)
    assert lines.early_boot_silence(0.2) == "[    1.0] vgaarb: loaded"
    with log.open("a") as f:
        f.write("[    1.3] Run /sbin/testbed-init as init process\n")
    lines.new()
    time.sleep(0.25)
    assert lines.early_boot_silence(0.2) is None


@pytest.mark.parametrize(
    "line",
    ["[    9.518460]     ok 9 test_wait_forward", "[    1.0] KTAP version 1", "    # Subtest: hw_breakpoint",
     "[    2.0]     not ok 3 test_x # SKIP", "[    2.0]     1..11"],
)  # fmt: skip
def test_ktap_lines_are_known(line, tmp_path):
    log = tmp_path / "console.log"
    log.write_text(line + "\n")
    lines = console.ConsoleLines(log)
    lines.new()
    time.sleep(0.15)
    assert lines.early_boot_silence(0.1) is None


def test_sshd_ready_and_a_panic_still_decide_the_wait(tmp_path):
    machine = _waiting_machine(tmp_path, "[    1.0] Run /sbin/testbed-init\ntestbed-init: sshd ready (1.8 s)\n")
    machine._wait_sshd_listening(Deadline(30))  # returns
    panicked = "[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n"
    machine = _waiting_machine(tmp_path, panicked, status=0)  # QEMU exits on a panic (panic=-1)
    with pytest.raises(GuestError, match="panicked: VFS: Unable to mount root fs"):
        machine._wait_sshd_listening(Deadline(30))
    machine = _waiting_machine(tmp_path, "[    0.5] booting\n", status=1)
    with pytest.raises(InfraError, match="QEMU exited with status 1"):
        machine._wait_sshd_listening(Deadline(30))


class StallingPool(VmPool):
    """The real retry in VmPool.boot, over boots that stall `stalls` times first."""

    def __init__(self, stalls: int, messages: list[str]) -> None:
        super().__init__(BootOptions(None, KernelRequest("default")), messages.append)
        self.stalls = stalls
        self.attempts = 0

    def _boot_once(self, topology, variant, may_retry):  # noqa: ANN001, ANN202
        self.attempts += 1
        if self.attempts <= self.stalls:
            raise BootStalled(f"{topology}-{self.attempts}: the guest stalled while booting (rcu: INFO: ...)\ntail")
        return f"vm of {topology}"


def test_the_pool_boots_a_stalled_vm_once_more_and_says_so():
    messages: list[str] = []
    pool = StallingPool(stalls=1, messages=messages)
    assert pool.boot("two-switch") == "vm of two-switch"
    assert pool.boot_retries == ["two-switch-1: the guest stalled while booting (rcu: INFO: ...)"]
    assert messages == ["two-switch-1: the guest stalled while booting (rcu: INFO: ...); booting it once more"]


def test_a_second_stall_is_the_kernels_error():
    pool = StallingPool(stalls=2, messages=[])
    with pytest.raises(GuestError, match="stalled while booting twice in a row.*two-switch-2"):
        pool.boot("two-switch")
    assert pool.attempts == 2


@dataclass
class Exited:
    def alive(self) -> bool:
        return False


@dataclass
class StoppedMachine:
    console_log: Path
    name: str = "two-switch-3"
    process: Exited = field(default_factory=Exited)

    def shutdown(self) -> None:
        pass  # the recorded console is all there is


def test_the_stall_is_not_counted_again_as_a_stray_splat_but_other_splats_are(tmp_path):
    log = tmp_path / "console.log"
    pool = VmPool(BootOptions(None, KernelRequest("default")), lambda _: None)
    log.write_text(STALLED.read_text(errors="replace"))
    pool.release(None, StoppedMachine(log), boot_stalled=True)  # type: ignore[arg-type]
    assert pool.stray_splats == []
    pool.release(None, StoppedMachine(log))  # type: ignore[arg-type]  # a stall anywhere else
    assert [s.splat.signature for s in pool.stray_splats] == [
        "INFO: rcu stall in default_idle",
        "INFO: NMI handler (nmi_cpu_backtrace_handler) took too long to run: 11.837 msecs in rcu_gp_fqs_loop",
    ]
    warned = STALLED.read_text(errors="replace").replace(
        "[    2.205448] rtc_cmos",
        "[    2.205000] WARNING: CPU: 0 PID: 1 at drivers/pci/p2pdma.c:100 f+0x1/0x2\n[    2.205448] rtc_cmos",
    )
    log.write_text(warned)
    pool.stray_splats.clear()
    pool.release(None, StoppedMachine(log), boot_stalled=True)  # type: ignore[arg-type]
    assert [s.splat.kind for s in pool.stray_splats] == ["warning"]
