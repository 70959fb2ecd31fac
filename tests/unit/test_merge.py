"""testbed merge on two real cells (tests/logs/cells: pytest tests/vm/test_p2p.py tests/vm/test_boot.py
--matrix on two-switch and acs, TCG, with --junitxml and --results-dir), and a failing cell made
from one of them."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.errors import ConfigError
from testbed.report.cells import find_cells
from testbed.report.kcidb import kcidb, path_of
from testbed.report.merge import markdown, merged_junit

CELLS = Path(__file__).resolve().parent.parent / "logs" / "cells"


def test_cells_are_found_with_their_results():
    cells = find_cells([CELLS])
    assert [c.id for c in cells] == ["acs-default-tcg", "two-switch-default-tcg"]
    assert all(c.junit is not None and c.run.outcomes for c in cells)


def test_merged_junit_keeps_every_case_per_cell():
    cells = find_cells([CELLS])
    root = merged_junit(cells).getroot()
    cases = list(root.iter("testcase"))
    assert len(cases) == sum(len(list(c.junit.iter("testcase"))) for c in cells if c.junit is not None)
    assert {s.get("name", "").split(":")[0] for s in root.iter("testsuite")} == {c.id for c in cells}
    assert all(case.get("classname", "").split(".")[0] in {c.id for c in cells} for case in cases)


def test_summary_lists_cells_and_verdicts():
    md = markdown(find_cells([CELLS]))
    assert "| two-switch-default-tcg | 0 | 0 | 0 |" in md and "**Every cell passed.**" in md
    assert "| acs-default-tcg | acs " in md and "## P2P verdicts" in md


def test_kcidb_validates_and_names_tests():
    doc = kcidb(find_cells([CELLS]))
    assert doc["version"]["major"] >= 4
    assert len(doc["tests"]) == sum(len(c.run.outcomes) for c in find_cells([CELLS]))
    assert {t["status"] for t in doc["tests"]} <= {"PASS", "FAIL", "ERROR", "SKIP"}
    assert path_of("tests/vm/test_p2p.py::test_every_pair_matches_the_oracle[two-switch]") == (
        "testbed.test_p2p.test_every_pair_matches_the_oracle.two-switch"
    )


def _failing_copy(tmp_path: Path) -> Path:
    root = tmp_path / "cells"
    shutil.copytree(CELLS, root)
    run = root / "acs-default-tcg" / "results" / "run.json"
    doc = json.loads(run.read_text())
    nodeid = next(iter(doc["outcomes"]))
    doc["outcomes"][nodeid] = "failed"
    doc["splats"].append(
        {
            "signature": "WARNING in p2pmem_alloc_mmap",
            "kind": "warning",
            "where": nodeid,
            "known": None,
            "console": "c:1",
        }
    )
    run.write_text(json.dumps(doc))
    return root


def test_merge_command_fails_on_a_failing_cell(tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(CELLS), "--out", str(out), "--kcidb"]) == 0
    assert ET.parse(out / "junit.xml").getroot().tag == "testsuites"
    assert json.loads((out / "kcidb.json").read_text())["tests"]
    assert "<table>" in (out / "index.html").read_text()
    assert main(["merge", str(_failing_copy(tmp_path)), "--out", str(tmp_path / "m2")]) == 1
    summary = (tmp_path / "m2" / "summary.md").read_text()
    assert "**1 failing result(s)**" in summary and "`WARNING in p2pmem_alloc_mmap`" in summary


def test_no_cells_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no cell"):
        find_cells([tmp_path])
