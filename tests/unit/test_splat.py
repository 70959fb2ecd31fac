"""The splat detector over a corpus of console logs: every kind found, clean logs stay clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.logs import find_windows, scan_text
from testbed.logs.windows import marker, outside_windows

LOGS = Path(__file__).resolve().parent.parent / "logs"

# file -> (kind, title) of the one splat it holds
EXPECTED = {
    "kasan-uaf.log": ("kasan", "slab-use-after-free in pci_p2pdma_map_type+0x1c5/0x1f0"),
    "kfence.log": ("kfence", "use-after-free read in vfio_pci_dma_buf_move+0x3e/0x120"),
    "warning-7.2.log": ("warning", "drivers/pci/p2pdma.c:212 at p2pmem_alloc_mmap+0x2f1/0x360"),
    "warning-old.log": ("warning", "kernel/dma/debug.c:1017 check_unmap+0x6d1/0x900"),
    "lockdep-circular.log": ("lockdep", "possible circular locking dependency detected"),
    "lockdep-recursive.log": ("lockdep", "possible recursive locking detected"),
    "lockdep-inconsistent.log": ("lockdep", "inconsistent lock state"),
    "rcu-suspicious.log": ("lockdep", "suspicious RCU usage"),
    "rcu-stall.log": ("rcu-stall", "rcu_preempt detected stalls on CPUs/tasks:"),
    "hung-task.log": ("hung-task", "task kworker/0:1:39 blocked for more than 122 seconds."),
    "soft-lockup.log": ("soft-lockup", "BUG: soft lockup - CPU#1 stuck for 26s! [python3:300]"),
    "kmemleak.log": ("kmemleak", "3 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"),
    "gpf.log": (
        "gpf",
        "general protection fault, probably for non-canonical address 0xdffffc0000000002: 0000 [#1] SMP KASAN",
    ),
    "ubsan.log": ("ubsan", "array-index-out-of-bounds in drivers/pci/p2pdma.c:301:14"),
    "panic.log": ("panic", "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"),
    "kernel-bug.log": ("kernel-bug", "kernel BUG at mm/memremap.c:147!"),
}
# files whose splats come as a sequence (kind, title prefix)
EXPECTED_SEQUENCES = {
    "lockdep-off.log": [("bug", "MAX_LOCKDEP_KEYS too low!")],
    # the WARN()/BUG() that prints these reports belongs to them: one splat each
    "refcount.log": [("refcount", "refcount_t: underflow; use-after-free.")],
    "odebug.log": [("odebug", "free active")],
    "dma-api.log": [("dma-api", "nvme 0000:04:00.0: device driver tries to free")],
    "list-corruption.log": [("list-corruption", "list_del corruption.")],
    "null-deref.log": [("bug", "kernel NULL pointer dereference, address: 0000000000000010")],
}


def test_corpus_is_fully_described():
    files = {p.name for p in (LOGS / "splats").glob("*.log")}
    assert files == set(EXPECTED) | set(EXPECTED_SEQUENCES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_single_splat(name):
    splats = scan_text((LOGS / "splats" / name).read_text())
    assert [(s.kind, s.title) for s in splats] == [EXPECTED[name]]
    assert splats[0].excerpt and splats[0].first_line <= splats[0].last_line


@pytest.mark.parametrize("name", sorted(EXPECTED_SEQUENCES))
def test_splat_sequences(name):
    splats = scan_text((LOGS / "splats" / name).read_text())
    got = [(s.kind, s.title) for s in splats]
    want = EXPECTED_SEQUENCES[name]
    assert len(got) == len(want), got
    for (kind, title), (want_kind, want_prefix) in zip(got, want, strict=True):
        assert kind == want_kind and title.startswith(want_prefix), got


def test_lockdep_turning_itself_off_is_reported():
    text = "[ 1.0] INFO: lockdep is turned off.\n"
    assert [s.kind for s in scan_text(text)] == ["lockdep-off"]


def test_kasan_report_extent_is_the_frame():
    (splat,) = scan_text((LOGS / "splats" / "kasan-uaf.log").read_text())
    assert (splat.first_line, splat.last_line) == (4, 28)
    assert "Freed by task 45" in splat.excerpt


def test_warn_body_joins_the_report_it_prints():
    (splat,) = scan_text((LOGS / "splats" / "list-corruption.log").read_text())
    assert "kernel BUG at lib/list_debug.c:62!" in splat.excerpt and splat.last_line > splat.first_line + 2
    # a WARNING far from the report is a splat of its own
    far = "[ 1.0] ODEBUG: free active\n" + "[ 1.1] x\n" * 10 + "[ 1.2] WARNING: a.c:1 at f+0x1/0x2, CPU#0: t/1\n"
    assert [s.kind for s in scan_text(far)] == ["odebug", "warning"]


def test_oops_and_panic_join_the_bug_before_them():
    (splat,) = scan_text((LOGS / "splats" / "null-deref.log").read_text())
    assert (splat.first_line, splat.last_line) == (1, 10)


@pytest.mark.parametrize("path", sorted((LOGS / "clean").glob("*.log")), ids=lambda p: p.name)
def test_clean_logs_have_no_splats(path):
    assert scan_text(path.read_text(errors="replace")) == []


def test_windows_from_markers():
    lines = (LOGS / "splats" / "kasan-uaf.log").read_text().splitlines()
    (w,) = find_windows(lines)
    assert (w.test, w.begin_line, w.end_line) == (
        "tests/vm/test_hotunplug.py::test_unplug_provider_while_mapped",
        1,
        30,
    )
    assert outside_windows(lines) == []


def test_window_without_end_and_outside_ranges():
    lines = ["boot", marker("begin", "t::a"), "x", marker("end", "t::a"), "between", marker("begin", "t::b"), "y"]
    windows = find_windows(lines)
    assert [(w.test, w.begin_line, w.end_line) for w in windows] == [("t::a", 2, 4), ("t::b", 6, None)]
    assert outside_windows(lines) == [(1, 1), (5, 5)]


def test_scan_log_command_exit_codes(capsys, tmp_path):
    from testbed.cli import main

    assert main(["scan-log", str(LOGS / "splats" / "kasan-uaf.log")]) == 1
    out = capsys.readouterr().out
    assert ":4-28: KASAN: slab-use-after-free Read in pci_p2pdma_map_type" in out
    assert "     1  KASAN: slab-use-after-free Read in pci_p2pdma_map_type" in out
    clean = tmp_path / "clean.log"
    clean.write_text("[ 0.0] Linux version 7.2.13\n")
    assert main(["scan-log", str(clean)]) == 0
    assert main(["scan-log", str(tmp_path / "missing.log")]) == 2


def test_scan_log_json_counts_repeats(capsys, tmp_path):
    import json

    from testbed.cli import main

    one = (LOGS / "splats" / "kasan-uaf.log").read_text()
    log = tmp_path / "twice.log"
    log.write_text(one + one)
    assert main(["scan-log", "--json", str(log)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(s["signature"], s["count"]) for s in doc["signatures"]] == [
        ("KASAN: slab-use-after-free Read in pci_p2pdma_map_type", 2)
    ]
    assert len(doc["splats"]) == 2 and doc["failing"] == 2


# Captured from this project's guests running the debug config (KASAN, lockdep, ODEBUG,
# DEBUG_KOBJECT_RELEASE) through the hot-unplug suite: what they reported, and nothing else.
REAL_FINDINGS = {
    "debug-pciehp-unplug.log": [("lockdep", "possible circular locking dependency detected")],
    "debug-pciehp-switch-unplug.log": [
        ("lockdep", "possible circular locking dependency detected"),
        (
            "odebug",
            "free active (active state 0) object: 00000000127b6a5d object type: timer_list "
            "hint: kobject_delayed_cleanup+0x0/0x90",
        ),
    ],
    "debug-acpi-replug-odebug.log": [
        (
            "odebug",
            "free active (active state 0) object: 0000000017f3a167 object type: timer_list "
            "hint: kobject_delayed_cleanup+0x0/0x90",
        ),
        (
            "odebug",
            "free active (active state 0) object: 000000007fa92a7f object type: timer_list "
            "hint: kobject_delayed_cleanup+0x0/0x90",
        ),
    ],
}


@pytest.mark.parametrize("name", sorted(REAL_FINDINGS))
def test_real_debug_logs(name):
    splats = scan_text((LOGS / "real" / name).read_text(errors="replace"))
    assert [(s.kind, s.title) for s in splats] == REAL_FINDINGS[name]


def test_dma_api_banner_is_not_a_splat():
    text = "[ 0.5] DMA-API: preallocated 65536 debug entries\n[ 0.5] DMA-API: debugging enabled by kernel config\n"
    assert scan_text(text) == []


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("scheduling while atomic: kworker/0:1/123/0x00000002", "scheduling while atomic: kworker/1:2/4567/0x00000003"),
        ("scheduling while atomic: irq/24-nvme0q1/812/0x00000002", "scheduling while atomic: python3/99/0x00000001"),
        ("Watchdog detected hard LOCKUP on cpu 1", "Watchdog detected hard LOCKUP on cpu 0"),
        ("kmemleak: 3 new suspected memory leaks", "kmemleak: 12 new suspected memory leaks"),
        (
            "DMA-API: nvme 0000:01:00.0: device driver tries to free DMA memory it has not allocated "
            "[device address=0x00000000fe000000] [size=4096 bytes]",
            "DMA-API: nvme 0000:01:00.0: device driver tries to free DMA memory it has not allocated "
            "[device address=0x00000000fe001000] [size=512 bytes]",
        ),
    ],
)
def test_titles_that_differ_only_run_to_run_normalise_alike(one, other):
    """A comm with '/' or ':', a pid, a CPU, a leak count, a mapping's size: the same bug in two
    runs (testbed ab compares by signature) must not read as one gone and one new."""
    from testbed.logs.signature import normalise

    assert normalise(one) == normalise(other)
