"""known-splats.yaml: the shipped entries load and match what they claim, bad files say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.logs import scan_text
from testbed.logs.known import KnownSplatsError, find_known, kernel_release, load_known

LOGS = Path(__file__).resolve().parent.parent / "logs"


@pytest.mark.parametrize(
    "name", ["debug-pciehp-unplug.log", "debug-acpi-replug-odebug.log", "debug-pciehp-switch-unplug.log"]
)
def test_shipped_entries_match_the_real_findings_they_cite(name):
    known = load_known()
    text = (LOGS / "real" / name).read_text(errors="replace")
    # a failure excerpt starts after the boot banner; its reports name the same build
    release = kernel_release(text.splitlines()) or "7.2.13-testbed"
    splats = scan_text(text)
    assert splats and all(find_known(s, release, known) for s in splats), name


@pytest.mark.parametrize("path", sorted((LOGS / "splats").glob("*.log")), ids=lambda p: p.name)
def test_no_synthetic_splat_is_known(path):
    # the corpus holds the kinds a patch could introduce: none may pass for a known one
    known = load_known()
    assert [s for s in scan_text(path.read_text()) if find_known(s, "7.2.13-testbed", known)] == []


def test_known_needs_the_stack_and_the_release():
    known = load_known()
    (splat,) = [s for s in scan_text((LOGS / "real" / "debug-acpi-replug-odebug.log").read_text(errors="replace"))][:1]
    assert find_known(splat, "7.2.13-testbed", known) is not None
    assert find_known(splat, None, known) is None  # no boot banner: cannot tell the kernel
    assert find_known(splat, "7.3.0", known) is None
    body = splat.body.replace(" kfree+", " kvfree+")  # another path to the same free
    moved = splat.__class__(splat.kind, splat.title, 1, 2, "", body, splat.signature)
    assert find_known(moved, "7.2.13-testbed", known) is None


def _lockdep_splat():
    (splat,) = scan_text((LOGS / "real" / "debug-pciehp-unplug.log").read_text(errors="replace"))
    return splat


def test_a_third_lock_in_the_known_cycle_is_a_new_splat():
    known = load_known()
    splat = _lockdep_splat()
    assert find_known(splat, "7.2.13-testbed", known) is not None
    extra = (
        "-> #2 (&p2pdma->pool_lock){+.+.}-{4:4}:\n"
        "       __mutex_lock+0x148/0x1b80\n"
        "       pci_p2pdma_release+0x20/0x90\n"
        "\n"
        "-> #1 (pci_rescan_remove_lock)"
    )
    body = splat.body.replace("-> #1 (pci_rescan_remove_lock)", extra, 1)
    (longer,) = scan_text(body)
    assert "&p2pdma->pool_lock" in longer.signature
    assert find_known(longer, "7.2.13-testbed", known) is None


def test_the_chain_must_match_even_when_the_signature_would():
    known = load_known()
    splat = _lockdep_splat()
    body = splat.body.replace("-> #1 (pci_rescan_remove_lock)", "-> #1 (pci_bus_sem)", 1)
    other = splat.__class__(splat.kind, splat.title, 1, 2, "", body, splat.signature)
    assert find_known(other, "7.2.13-testbed", known) is None


def test_bad_file_reports_each_problem_with_its_line(tmp_path):
    bad = tmp_path / "known.yaml"
    bad.write_text(
        "known:\n"
        "  - kind: kasan\n"
        "    signature: '('\n"
        "    stack: [f]\n"
        "    kernel: 7\\.2\\.\n"
        "    why: x\n"
        "  - kind: nonsense\n"
        "    signature: t\n"
        "    kernel: k\n"
        "    colour: red\n"
        "  - kind: lockdep\n"
        "    signature: s\n"
        "    kernel: k\n"
        "    why: y\n"
    )
    with pytest.raises(KnownSplatsError) as err:
        load_known(bad)
    text = str(err.value)
    assert f"{bad}:3: known[0].signature: not a valid regex" in text
    assert f"{bad}:7: known[1].kind: unknown splat kind 'nonsense'" in text
    assert f"{bad}:10: known[1].colour: unknown key" in text
    assert f"{bad}:7: known[1]: missing 'why'" in text
    assert f"{bad}:7: known[1]: must pin the report with 'chain' or 'stack'" in text
    assert f"{bad}:11: known[2]: a lockdep entry must pin its chain" in text


def test_file_without_a_list(tmp_path):
    bad = tmp_path / "known.yaml"
    bad.write_text("entries: []\n")
    with pytest.raises(KnownSplatsError, match="known: must be a list"):
        load_known(bad)


def test_scan_log_marks_known_splats(capsys):
    from testbed.cli import main

    log = str(LOGS / "real" / "debug-acpi-replug-odebug.log")
    assert main(["scan-log", log]) == 0
    out = capsys.readouterr().out
    assert "[known: known-splats.yaml:" in out and "all 2 splats are known" in out
    assert main(["scan-log", "--strict", log]) == 1


class _Reporter:
    def __init__(self):
        self.lines: list[str] = []

    def section(self, title: str) -> None:
        self.lines.append(f"== {title}")

    def write_line(self, line: str, **_: object) -> None:
        self.lines.append(line)


def test_run_summary_lists_each_known_splat_and_writes_tsv(tmp_path):
    from testbed.pytest_plugin.state import KnownSeen
    from testbed.pytest_plugin.summary import _known_summary

    known = load_known()
    log = LOGS / "real" / "debug-pciehp-switch-unplug.log"
    seen = [KnownSeen.of("t::a", log, s, find_known(s, "7.2.13-testbed", known)) for s in scan_text(log.read_text())]
    reporter, tsv = _Reporter(), tmp_path / "known-splats.tsv"
    _known_summary(reporter, seen, strict=False, tsv=tsv)
    text = "\n".join(reporter.lines)
    assert "t::a: lockdep: possible circular locking dependency" in text and "lock-checked" in text
    assert "--strict-splats makes them fail" in text
    assert len(tsv.read_text().splitlines()) == 1 + len(seen)
    empty = _Reporter()
    _known_summary(empty, [], strict=False, tsv=tmp_path / "none.tsv")
    assert empty.lines == [] and not (tmp_path / "none.tsv").exists()
