"""Per-test window judgement over a console log (the guest side replaced by a file writer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.guestvm import window
from testbed.guestvm.window import ExpectedMessages, WindowFindings, begin, end
from testbed.logs.known import load_known
from testbed.timeouts import Timeouts

LOGS = Path(__file__).resolve().parent.parent / "logs" / "splats"


@pytest.fixture(autouse=True)
def quick_quiet(monkeypatch):
    """Nothing prints to these consoles after the end marker: no need to wait a second for it."""
    monkeypatch.setattr(window, "QUIET_S", 0.05)


class FakeMachine:
    def __init__(self, log: Path, locks: str = ""):
        self.console_log = log
        self.locks = locks  # /proc/lockdep_stats's debug_locks line, "" without lockdep
        self.timeouts = Timeouts.for_accel("kvm")


class FakeVM:
    """mark() appends to the console the way the guest's /dev/kmsg write would, and reads
    debug_locks as the agent's kmsg mark does."""

    def __init__(self, log: Path, between: list[str], after: list[str] | None = None):
        self.machine = FakeMachine(log)
        self.between = between
        self.after = after or []  # what another CPU prints after the end marker

    def mark(self, line: str) -> int | None:
        self._write(line)
        words = self.machine.locks.split()
        return int(words[-1]) if words else None

    def _write(self, line: str) -> None:
        with open(self.machine.console_log, "a") as f:
            if "begin" in line:
                f.write(f"[ 1.0] {line}\n")
            else:
                f.writelines(self.between)
                f.write(f"[ 9.0] {line}\n")
                f.writelines(self.after)


def _judge(
    tmp_path: Path,
    between: list[str],
    expected: ExpectedMessages | None = None,
    locks_after: str = "",
    known: tuple = (),
    release: str = "7.2.13-testbed",
) -> WindowFindings:
    log = tmp_path / "console.log"
    log.write_text(f"[ 0.0] Linux version {release} (gcc) #1 PREEMPT\n[ 0.1] boot noise\n")
    vm = FakeVM(log, between)
    vm.machine.locks = " debug_locks:                             1\n" if locks_after else ""
    opened = begin(vm, "tests/x.py::t")
    vm.machine.locks = locks_after
    return end(vm, "tests/x.py::t", opened, expected or ExpectedMessages(), tuple(known))


def test_lockdep_switching_itself_off_is_noticed(tmp_path):
    verdict = _judge(tmp_path, [], locks_after=" debug_locks:                             0\n")
    assert verdict.lockdep_lost and verdict.splats == []
    other = tmp_path / "still-on"
    other.mkdir()
    assert not _judge(other, [], locks_after=" debug_locks: 1\n").lockdep_lost


def test_clean_window(tmp_path):
    verdict = _judge(tmp_path, ["[ 2.0] nvme nvme0: 2/0/0 default/read/poll queues\n"])
    assert verdict.splats == [] and verdict.missing == [] and verdict.complete
    assert verdict.lines == (3, 5)


def test_splat_in_window_is_reported_with_console_lines(tmp_path):
    kasan = (LOGS / "kasan-uaf.log").read_text().splitlines(keepends=True)[2:28]
    verdict = _judge(tmp_path, kasan)
    (splat,) = verdict.splats
    assert splat.kind == "kasan" and splat.first_line == 5


def test_expected_message_must_appear_and_never_hides_a_splat(tmp_path):
    expected = ExpectedMessages()
    expected.expect(r"DMAR: \[DMA Write", "provoked fault")
    expected.expect(r"refcount_t: underflow", "a test that hopes to excuse a splat")
    refcount = (LOGS / "refcount.log").read_text().splitlines(keepends=True)
    verdict = _judge(tmp_path, refcount, expected)
    # expect() only requires lines to appear: the refcount report (with the WARN that
    # prints it) is still one splat against the test
    assert [s.kind for s in verdict.splats] == ["refcount"]
    assert verdict.missing == [r"DMAR: \[DMA Write (provoked fault)"]


REAL = LOGS.parent / "real"


def _real_splat_lines(name: str, first: str) -> list[str]:
    """The lines of the first splat in a real log whose text contains `first`."""
    lines = (REAL / name).read_text(errors="replace").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if first in line) - 1
    return lines[start : start + 85]


def test_known_base_kernel_splat_is_set_apart(tmp_path):
    known = load_known()
    odebug = _real_splat_lines("debug-acpi-replug-odebug.log", "ODEBUG: free active")
    verdict = _judge(tmp_path, odebug, known=known)
    assert verdict.splats == [] and [(s.kind, k.kind) for s, k in verdict.known] == [("odebug", "odebug")]
    other = tmp_path / "other-release"
    other.mkdir()
    verdict = _judge(other, odebug, known=known, release="7.3.0-rc1")
    assert [s.kind for s in verdict.splats] == ["odebug"] and verdict.known == []


def test_lockdep_turned_off_by_a_known_report_is_told_apart(tmp_path):
    lockdep = _real_splat_lines("debug-pciehp-unplug.log", "WARNING: possible circular locking")
    verdict = _judge(tmp_path, lockdep, locks_after=" debug_locks: 0\n", known=load_known())
    assert verdict.splats == [] and verdict.lockdep_lost and verdict.lockdep_lost_to_known
    alone = tmp_path / "alone"
    alone.mkdir()
    verdict = _judge(alone, [], locks_after=" debug_locks: 0\n", known=load_known())
    assert verdict.lockdep_lost and not verdict.lockdep_lost_to_known


def test_a_test_that_begins_with_lockdep_off_is_marked(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("[ 0.1] boot\n")
    vm = FakeVM(log, [])
    vm.machine.locks = " debug_locks: 0\n"
    verdict = end(vm, "t", begin(vm, "t"), ExpectedMessages())
    assert verdict.lockdep_off_at_start and not verdict.lockdep_lost
    (tmp_path / "on").mkdir()
    assert not _judge(tmp_path / "on", [], locks_after=" debug_locks: 1\n").lockdep_off_at_start


def test_a_report_the_end_marker_landed_in_is_judged_whole(tmp_path):
    """Recorded: the end marker written while another CPU printed an ODEBUG warning landed
    before its call trace; cut there, the report lost its place and read as a new splat."""
    real = (LOGS.parent / "real" / "debug-odebug-straddles-end-marker.log").read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(real) if "testbed: end" in line)
    log = tmp_path / "console.log"
    log.write_text("[ 0.0] Linux version 7.2.13-testbed (gcc) #1 PREEMPT\n")
    vm = FakeVM(log, real[:cut], after=real[cut + 1 :])
    opened = begin(vm, "tests/x.py::t")
    verdict = end(vm, "tests/x.py::t", opened, ExpectedMessages(), load_known())
    assert verdict.splats == []
    assert [s.signature for s, _ in verdict.known] == ["ODEBUG: free active timer_list in bdev_free_inode"]
    # a report that starts after the end marker is not this test's
    later = tmp_path / "later"
    later.mkdir()
    log = later / "console.log"
    log.write_text("[ 0.0] Linux version 7.2.13-testbed (gcc) #1 PREEMPT\n")
    vm = FakeVM(log, ["[ 2.0] nothing here\n"], after=real[:cut] + real[cut + 1 :])
    opened = begin(vm, "tests/x.py::t")
    verdict = end(vm, "tests/x.py::t", opened, ExpectedMessages(), load_known())
    assert verdict.splats == [] and verdict.known == []


def test_a_provoked_splat_is_expected_by_signature_and_text_and_nothing_else(tmp_path):
    """A test that records a WARN 7.2 gives on purpose (a client mask narrower than the BAR)
    names its signature and text: that report does not fail it, a missing one does, and a
    report of another signature or text still fails."""
    warn = (REAL / "dma-map-phys-overflow.log").read_text().splitlines(keepends=True)
    expected = ExpectedMessages()
    expected.expect_splat("WARNING in dma_map_phys", r"DMA addr 0x[0-9a-f]+\+1048576 overflow \(mask fffffff,", "why")
    verdict = _judge(tmp_path, warn, expected)
    assert verdict.splats == [] and verdict.missing == []

    other = tmp_path / "other-text"
    other.mkdir()
    wrong = ExpectedMessages()
    wrong.expect_splat("WARNING in dma_map_phys", r"overflow \(mask ffffffff,", "a wider mask")
    verdict = _judge(other, warn, wrong)
    assert [s.signature for s in verdict.splats] == ["WARNING in dma_map_phys"]
    assert verdict.missing == [r"WARNING in dma_map_phys matching overflow \(mask ffffffff, (a wider mask)"]

    absent = tmp_path / "absent"
    absent.mkdir()
    verdict = _judge(absent, [], expected)
    assert verdict.missing and verdict.splats == []


def test_a_known_bugs_splat_is_tolerated_without_being_required(tmp_path):
    """Where a kernel may or may not carry a bug's fix (someone else's series), the WARN the bug
    leaves (recorded from 7.2: the IOVA cache flush after dma_buf_phys_vec_to_sgt()'s unwind)
    fails nothing when it shows and is not missed when it does not."""
    warn = (REAL / "iova-magazine-free-pfns.log").read_text().splitlines(keepends=True)
    tolerated = ExpectedMessages()
    tolerated.expect_splat("WARNING in iova_magazine_free_pfns", "iova_magazine_free_pfns", "bug", required=False)
    verdict = _judge(tmp_path, warn, tolerated)
    assert verdict.splats == [] and verdict.missing == []

    absent = tmp_path / "absent"
    absent.mkdir()
    assert _judge(absent, [], tolerated).missing == []
