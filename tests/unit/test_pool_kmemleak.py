"""kmemleak at the end of each VM's life (VmPool.release): the report parsed into splats, each
a failure of the session unless known; nothing on kernels without kmemleak."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed.kernel.request import KernelRequest
from testbed.logs.kmemleak import KMEMLEAK_SCAN, NO_KMEMLEAK, parse_kmemleak
from testbed.logs.known import KnownSplat
from testbed.pytest_plugin.pool import BootOptions, VmPool
from testbed.vm.ssh import RunResult

# The first object is recorded: /sys/kernel/debug/kmemleak of a debug-config Linux 7.2.13 guest
# after a module leaked a 32 KiB kmalloc in its init (its init text was freed: a bare address);
# the second is mm/kmemleak.c print_unreferenced()'s format for a percpu object.
REPORT = """\
unreferenced object 0xffff88800a758000 (size 32768):
  comm "python3", pid 94, jiffies 4294905528
  hex dump (first 32 bytes):
    6c 65 61 6b 65 64 20 62 79 20 74 68 65 20 74 65  leaked by the te
    73 74 62 65 64 20 28 6c 61 72 67 65 20 6b 6d 61  stbed (large kma
  backtrace (crc 1f50b6de):
    ___kmalloc_large_node+0xc2/0x100
    __kmalloc_large_noprof+0x20/0x100
    testbed_leak_now+0x38/0xd0 [testbed_leak]
    0xffffffffa0001005
    do_one_initcall+0xc5/0x380
    do_init_module+0x173/0x410
    load_module+0x2de1/0x31d0
    init_module_from_file+0x130/0x150
    idempotent_init_module+0x19e/0x430
    __x64_sys_finit_module+0x74/0xc0
    do_syscall_64+0x9e/0x540
    entry_SYSCALL_64_after_hwframe+0x4b/0x53
unreferenced object (percpu) 0x00006fa2c1e0a0b8 (size 8):
  comm "swapper/0", pid 1, jiffies 4294892296
  backtrace (crc 0):
    pcpu_alloc_noprof+0x7e6/0x1040
    pci_p2pdma_add_resource+0x1b5/0x6e0
    nvme_probe+0xd6a/0x1b10
    local_pci_probe+0xdc/0x170

"""


def test_each_object_is_a_splat_named_after_its_allocator_caller():
    splats = parse_kmemleak(REPORT)
    assert [s.signature for s in splats] == [
        "kmemleak: unreferenced object in testbed_leak_now",
        "kmemleak: unreferenced object in pci_p2pdma_add_resource",
    ]
    assert [s.kind for s in splats] == ["kmemleak", "kmemleak"]
    assert [s.title for s in splats] == ["unreferenced object (size 32768)", "unreferenced object (percpu) (size 8)"]
    assert [(s.first_line, s.last_line) for s in splats] == [(1, 18), (19, 25)]
    assert "testbed_leak_now+0x38/0xd0 [testbed_leak]" in splats[0].excerpt  # the backtrace is reported
    assert splats[1].body.endswith("local_pci_probe+0xdc/0x170")


def test_clean_report_has_no_splats():
    assert parse_kmemleak("") == []


# -- VmPool.release ---------------------------------------------------------------------------------


@dataclass
class FakeProcess:
    up: bool = True

    def alive(self) -> bool:
        return self.up


@dataclass
class FakeMachine:
    console_log: Path
    name: str = "two-switch-1"
    process: FakeProcess = field(default_factory=FakeProcess)
    shut: bool = False

    def shutdown(self) -> None:
        self.shut = True


@dataclass
class FakeVM:
    machine: FakeMachine
    answer: RunResult | Exception
    summary: str = ""  # what the scan prints on the console
    commands: list[str] = field(default_factory=list)
    scannable: bool | None = None  # the agent's answer to `kmsg.py kmemleak`; None: no agent

    def close_agent(self) -> None:
        pass  # no agent in a fake VM

    def kmemleak_scannable(self) -> bool | None:
        return self.scannable

    def run(self, cmd: str, timeout: float | None = None, check: bool = False) -> RunResult:
        self.commands.append(cmd)
        assert not self.machine.shut, "kmemleak must be asked before the VM shuts down"
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.summary:
            with self.machine.console_log.open("a") as f:
                f.write(self.summary + "\n")
        return self.answer


BOOT = "[    0.000000] Linux version 7.2.13-testbed (gcc) #1 SMP PREEMPT_DYNAMIC\n[    3.1] testbed-init: sshd ready\n"
SUMMARY = "[  300.000000] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"


def _pool(messages: list[str], known: tuple[KnownSplat, ...] = ()) -> VmPool:
    return VmPool(BootOptions(None, KernelRequest("debug")), messages.append, known)


def _vm(tmp_path: Path, answer: RunResult | Exception, console: str = BOOT, summary: str = "") -> FakeVM:
    log = tmp_path / "console.log"
    log.write_text(console)
    return FakeVM(FakeMachine(log), answer, summary)


def test_leaks_fail_the_session_with_their_backtrace(tmp_path):
    messages: list[str] = []
    pool = _pool(messages)
    vm = _vm(tmp_path, RunResult(0, REPORT, ""), summary=SUMMARY)
    pool.release(vm)  # type: ignore[arg-type]
    assert vm.commands == [KMEMLEAK_SCAN] and vm.machine.shut
    # one stray splat per leak, pointing into the saved report; the scan's own summary line on
    # the console is not counted again
    assert [(s.splat.signature, s.console_log, s.known) for s in pool.stray_splats] == [
        ("kmemleak: unreferenced object in testbed_leak_now", tmp_path / "kmemleak.txt", None),
        ("kmemleak: unreferenced object in pci_p2pdma_add_resource", tmp_path / "kmemleak.txt", None),
    ]
    assert (tmp_path / "kmemleak.txt").read_text() == REPORT
    shown = "\n".join(messages)
    assert "kmemleak: two-switch-1: kmemleak: unreferenced object in testbed_leak_now" in shown
    assert "testbed_leak_now+0x38/0xd0 [testbed_leak]" in shown


def test_a_leak_reported_before_the_scan_still_counts(tmp_path):
    """A "new suspected memory leaks" line outside any test from before our scan (a test's own
    scan, say) is left to the console scan: only our scan's summary is replaced."""
    early = "[  200.000000] kmemleak: 1 new suspected memory leaks (see /sys/kernel/debug/kmemleak)\n"
    pool = _pool([])
    pool.release(_vm(tmp_path, RunResult(0, "", ""), console=BOOT + early))  # type: ignore[arg-type]
    assert [s.splat.kind for s in pool.stray_splats] == ["kmemleak"]
    assert pool.stray_splats[0].console_log == tmp_path / "console.log"


def test_known_leak_is_reported_not_failed(tmp_path):
    import re

    entry = KnownSplat(
        "kmemleak",
        re.compile(r"kmemleak: unreferenced object in pci_p2pdma_add_resource"),
        (),
        (re.compile("pcpu_alloc_noprof"),),
        re.compile(r"7\.2\."),
        "why",
        "known-splats.yaml:1",
    )
    pool = _pool([], (entry,))
    pool.release(_vm(tmp_path, RunResult(0, REPORT, ""), summary=SUMMARY))  # type: ignore[arg-type]
    assert [s.known for s in pool.stray_splats] == [None, entry]


@pytest.mark.parametrize(
    "answer",
    [RunResult(NO_KMEMLEAK, "", ""), RunResult(1, "", "sh: echo: write error: Operation not permitted")],
    ids=["no-kmemleak", "kmemleak-disabled"],
)
def test_nothing_without_a_working_kmemleak(tmp_path, answer):
    messages: list[str] = []
    pool = _pool(messages)
    vm = _vm(tmp_path, answer)
    pool.release(vm)  # type: ignore[arg-type]
    assert pool.stray_splats == [] and vm.machine.shut
    assert not (tmp_path / "kmemleak.txt").exists()
    if answer.status != NO_KMEMLEAK:  # a kmemleak that switched itself off is said, not hidden
        assert messages == [f"kmemleak: no leak check of two-switch-1: {answer.stderr}"]
        assert pool.leaks_unchecked == [f"two-switch-1: {answer.stderr}"]  # and listed at the end
    else:
        assert messages == [] and pool.leaks_unchecked == []  # a kernel without kmemleak


def test_a_guest_that_cannot_answer_is_still_shut_down(tmp_path):
    from testbed.errors import GuestError

    messages: list[str] = []
    pool = _pool(messages)
    vm = _vm(tmp_path, GuestError("guest command did not finish within 120s"))
    pool.release(vm)  # type: ignore[arg-type]
    assert vm.machine.shut and pool.stray_splats == []
    assert messages == ["kmemleak: no leak check of two-switch-1: guest command did not finish within 120s"]
    assert pool.leaks_unchecked == ["two-switch-1: guest command did not finish within 120s"]


def test_a_dead_vm_is_not_asked(tmp_path):
    pool = _pool([])
    vm = _vm(tmp_path, RunResult(0, REPORT, ""))
    vm.machine.process.up = False
    pool.release(vm)  # type: ignore[arg-type]
    assert vm.commands == [] and pool.stray_splats == []


@pytest.mark.parametrize("scannable", [True, False])
def test_the_agent_says_whether_to_log_in_for_a_scan(tmp_path, scannable):
    """A kernel without kmemleak is known from the agent: no SSH login (~0.4 s) per VM."""
    pool = _pool([])
    vm = _vm(tmp_path, RunResult(0, REPORT, ""), summary=SUMMARY)
    vm.scannable = scannable
    pool.release(vm)  # type: ignore[arg-type]
    assert vm.commands == ([KMEMLEAK_SCAN] if scannable else []) and vm.machine.shut
    assert len(pool.stray_splats) == (2 if scannable else 0)


def test_the_agents_kmemleak_check_is_the_scans(tmp_path, monkeypatch):
    """kmsg.py kmemleak answers what KMEMLEAK_SCAN's own first checks would."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "in_guest"))
    import kmsg

    debugfs, cmdline = tmp_path / "kmemleak", tmp_path / "cmdline"
    monkeypatch.setattr(kmsg, "KMEMLEAK", str(debugfs))
    monkeypatch.setattr(kmsg, "PROC_CMDLINE", str(cmdline))
    cmdline.write_text("console=ttyS0 kmemleak=on\n")
    assert kmsg.kmemleak({}) == {"ok": True, "scan": False}  # no kmemleak file: not built in
    debugfs.write_text("")
    assert kmsg.kmemleak({}) == {"ok": True, "scan": True}
    cmdline.write_text("console=ttyS0 kmemleak=off quiet\n")
    assert kmsg.kmemleak({}) == {"ok": True, "scan": False}  # built in, switched off at boot
    assert "test -w /sys/kernel/debug/kmemleak" in KMEMLEAK_SCAN and "kmemleak=off" in KMEMLEAK_SCAN
