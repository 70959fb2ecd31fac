"""The detector on real console text it was not written against (syzkaller's recorded reports),
signatures that survive a rebuild and a rerun, and one report per chain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.logs import scan_text
from testbed.logs.corpus import read_corpus, read_entry, score
from testbed.logs.splat import group

LOGS = Path(__file__).resolve().parent.parent / "logs"
SYZ = LOGS / "syzkaller"

# formats Linux 7.2 prints, each from a recorded report: file -> (kind, signature) of its first splat
FORMATS = {
    "1000.report": ("hung-task", "INFO: task hung in I/O wait in do_read_cache_folio"),
    "528.report": ("lockdep", "lockdep: Invalid wait context in do_ipv6_setsockopt [&mm->mmap_lock]"),
    "546.report": ("lockdep", "lockdep: Invalid wait context in deactivate_slab [&n->list_lock]"),
    "655.report": ("lockdep", "lockdep: Nested lock was not taken in evict [&s->s_inode_list_lock]"),
    "36.report": ("lockdep", "lockdep: still has locks held in pipe_lock"),
    "532.report": ("lockdep", "lockdep: still has locks held in count_memcg_event_mm"),
    "118.report": ("lockdep", "lockdep: trying to register non-static key in tcp_fastopen_reset_cipher"),
    "523.report": ("rcu-stall", "INFO: rcu expedited stall in rcu_exp_wait_wake"),
    "1002.report": ("rcu-stall", "INFO: rcu stall"),
    "82.report": ("slub", "SLUB: kmalloc-8: Object already free"),
    "166.report": ("lockdep", "lockdep: suspicious RCU usage in perf_event_ctx_lock_nested"),
}
# no-crash logs that still yield a splat, and why we accept it
FALSE_ALARMS = {
    "620.report": "a user-space 'WARNING:' line in a log where few lines carry printk stamps",
    "654.report": "fbcon's pr_warn starts with 'WARNING:'; the generic fallback counts it",
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_format_from_a_recorded_report(name):
    splats = scan_text(read_entry(SYZ / name).text)
    assert splats, name
    assert (splats[0].kind, splats[0].signature) == FORMATS[name]


def test_recall_and_false_alarms_on_the_sample():
    result = score(read_corpus(SYZ))
    assert result.crashes > 120 and result.clean > 30
    assert result.found / result.crashes >= 0.93, result.missed
    assert set(result.false_alarms) == set(FALSE_ALARMS)


def _rerun(text: str) -> str:
    """The same report from another boot of another build: every address, offset, pid, CPU,
    timestamp and line number changed."""

    def bump(match: re.Match[str]) -> str:
        digits = match.group(0)
        return "".join("7" if c.isdigit() else c for c in digits)

    text = re.sub(r"\[\s*\d+\.\d+\]", lambda m: "[  " + "9" * 3 + ".123456]", text)
    text = re.sub(r"0x[0-9a-f]+", lambda m: "0x" + "5" * (len(m.group(0)) - 2), text)
    text = re.sub(r"\b[0-9a-f]{16}\b", "ffff8880deadbeef", text)
    text = re.sub(r"(?<=[:/#])\d{2,}\b|(?<=PID: )\d+|(?<=CPU: )\d+|(?<=CPU#)\d+", bump, text)
    return text


@pytest.mark.parametrize(
    "path",
    [
        LOGS / "real" / "debug-pciehp-unplug.log",
        LOGS / "real" / "debug-acpi-replug-odebug.log",
        LOGS / "splats" / "kasan-uaf.log",
        LOGS / "splats" / "warning-7.2.log",
        SYZ / "1000.report",
        SYZ / "528.report",
    ],
    ids=lambda p: p.name,
)
def test_signature_survives_a_rebuild_and_a_rerun(path):
    text = path.read_text(errors="replace")
    before = [s.signature for s in scan_text(text)]
    after = [s.signature for s in scan_text(_rerun(text))]
    assert before and before == after
    for sig in before:
        assert not re.search(r"0x[0-9a-f]|\+0x|:\d{2,}|CPU#\d|\b\d{3,}\b", sig), sig


def test_kasan_and_kfence_signatures_carry_the_access():
    (kasan,) = scan_text((LOGS / "splats" / "kasan-uaf.log").read_text())
    assert kasan.signature == "KASAN: slab-use-after-free Read in pci_p2pdma_map_type"
    (kfence,) = scan_text((LOGS / "splats" / "kfence.log").read_text())
    assert kfence.signature == "KFENCE: use-after-free Read in vfio_pci_dma_buf_move"


def test_warning_signature_has_no_line_number():
    (warn,) = scan_text((LOGS / "splats" / "warning-7.2.log").read_text())
    assert warn.signature == "WARNING in p2pmem_alloc_mmap"


def test_lockdep_signature_names_the_chain():
    (splat,) = scan_text((LOGS / "real" / "debug-pciehp-unplug.log").read_text(errors="replace"))
    assert splat.signature == (
        "lockdep: possible circular locking dependency detected in pciehp_unconfigure_device "
        "[pci_rescan_remove_lock -> &ctrl->reset_lock/1]"
    )


def test_repeats_count_under_one_signature():
    one = (LOGS / "syzkaller" / "1000.report").read_text(errors="replace").partition("\n\n")[2]
    text = "\n".join(_rerun(one) if i % 2 else one for i in range(6))
    groups = group(scan_text(text))
    (hung,) = [g for g in groups if g.kind == "hung-task"]
    assert hung.count == 6 and hung.signature == "INFO: task hung in I/O wait in do_read_cache_folio"


def _lockdep_report() -> list[str]:
    lines = (LOGS / "real" / "debug-pciehp-unplug.log").read_text(errors="replace").splitlines()
    start = next(i for i, line in enumerate(lines) if "circular locking" in line) - 1
    return lines[start : start + 90]


def test_a_fault_inside_a_lockdep_report_is_its_own_splat():
    report = _lockdep_report()
    gpf = (
        "[   93.605000] Oops: general protection fault, probably for non-canonical address "
        "0xdffffc0000000002: 0000 [#1] SMP KASAN"
    )
    rip = "[   93.605001] RIP: 0010:pci_p2pdma_map_type+0x1c5/0x1f0"
    text = "\n".join(report[:30] + [gpf, rip] + report[30:])
    assert [s.kind for s in scan_text(text)] == ["lockdep", "gpf"]
    assert scan_text(text)[1].signature == "general protection fault in pci_p2pdma_map_type"


def test_the_oops_a_kasan_report_ends_in_belongs_to_it():
    kasan = (LOGS / "splats" / "kasan-uaf.log").read_text().splitlines()
    tail = [
        "[   81.500000] Oops: general protection fault, probably for non-canonical address 0xdffffc0000000002: 0000",
        "[   81.500001] RIP: 0010:pci_p2pdma_map_type+0x1d0/0x1f0",
        "[   81.500002] Kernel panic - not syncing: Fatal exception",
    ]
    splats = scan_text("\n".join([*kasan[:28], *tail]))
    assert [s.kind for s in splats] == ["kasan"]


def test_generic_fallback_catches_an_unknown_format():
    text = "[ 5.0] BUG: frobnicator lost its widget\n[ 5.1] WARNING: something new happened here\n"
    assert [s.kind for s in scan_text(text)] == ["bug", "warning"]
    assert scan_text("[ 5.0] INFO: t\n") == []  # a line cut short by a replayed printk
