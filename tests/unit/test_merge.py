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
from testbed.errors import ConfigError, InfraError
from testbed.report.cells import find_cells, lost_cells, scan_cells, unplanned
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


# -- a plan: every planned cell has results, or the merge fails naming it -------------------------


def _plan(tmp_path: Path, *extra: str) -> Path:
    """The plan `testbed matrix --plan` would write for the two recorded cells and `extra` ids."""
    include = [json.loads((d / "cell.json").read_text()) for d in sorted(CELLS.iterdir())]
    for cell_id in extra:
        topology = cell_id.removesuffix("-default-tcg")
        include.append(include[0] | {"id": cell_id, "topology": topology})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"include": include}))
    return path


def test_a_complete_plan_merges_as_before(tmp_path, capsys):
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    args = ["merge", str(CELLS), "--plan", str(_plan(tmp_path)), "--out", str(tmp_path / "m"), "--append-summary"]
    assert main([*args, str(summary)]) == 0
    assert "**Every cell passed.**" in summary.read_text() and summary.read_text().startswith("earlier step\n")
    assert "0 without results" in capsys.readouterr().out


def test_a_planned_cell_without_results_fails_the_merge_by_name(tmp_path, capsys):
    plan = _plan(tmp_path, "p2pdma-thru-iommu-default-tcg")
    out = tmp_path / "m"
    assert main(["merge", str(CELLS), "--plan", str(plan), "--out", str(out)]) == InfraError.exit_code
    err = capsys.readouterr().err
    assert "1 cell(s) without usable results" in err and "p2pdma-thru-iommu-default-tcg: no results" in err
    summary = (out / "summary.md").read_text()
    assert "Every cell passed" not in summary and "**1 cell(s) without results**" in summary
    assert "| p2pdma-thru-iommu-default-tcg | no results" in summary
    # the results that did arrive are merged all the same, and JUnit readers see the lost cell
    suites = {s.get("name", "") for s in ET.parse(out / "junit.xml").getroot().iter("testsuite")}
    assert "p2pdma-thru-iommu-default-tcg: no results" in suites
    assert any(name.startswith("two-switch-default-tcg: ") for name in suites)


def test_broken_cells_fail_the_merge_by_name(tmp_path, capsys):
    root = tmp_path / "cells"
    shutil.copytree(CELLS, root)
    (root / "acs-default-tcg" / "results" / "run.json").write_text('{"outcomes": ')  # cut off mid-upload
    died = root / "two-switch-default-tcg"
    shutil.rmtree(died / "results")  # cell.json written, the run never finished
    (died / "junit.xml").unlink()
    out = tmp_path / "m"
    assert main(["merge", str(root), "--plan", str(_plan(tmp_path)), "--out", str(out)]) == InfraError.exit_code
    err = capsys.readouterr().err
    assert "2 cell(s) without usable results" in err
    assert "acs-default-tcg: broken: " in err and "not valid JSON" in err
    assert "two-switch-default-tcg: broken: no results/run.json" in err
    assert "**2 cell(s) without results**" in (out / "summary.md").read_text()


def test_a_broken_cell_fails_without_a_plan_too(tmp_path, capsys):
    root = tmp_path / "cells"
    shutil.copytree(CELLS, root)
    run = root / "acs-default-tcg" / "results" / "run.json"
    run.write_text(json.dumps(json.loads(run.read_text()) | {"outcomes": {}}))
    assert main(["merge", str(root), "--out", str(tmp_path / "m")]) == InfraError.exit_code
    assert (
        "acs-default-tcg: broken: " in capsys.readouterr().err
        and "records no test outcome" in (tmp_path / "m" / "summary.md").read_text()
    )
    with pytest.raises(ConfigError, match="acs-default-tcg"):
        find_cells([root])


def test_no_artifacts_at_all_names_every_planned_cell(tmp_path, capsys):
    # download-artifact found nothing: the directory is not even there
    plan = _plan(tmp_path)
    assert main(["merge", str(tmp_path / "none"), "--plan", str(plan), "--out", str(tmp_path / "m")]) == 3
    err = capsys.readouterr().err
    assert "acs-default-tcg: no results" in err and "two-switch-default-tcg: no results" in err


def test_lost_and_unplanned_cells_from_a_scan():
    scan = scan_cells([CELLS])
    assert lost_cells(scan) == ()
    lost = lost_cells(scan, ["acs-default-tcg", "x-default-kvm"])
    assert [(c.id, c.reason.split(":")[0]) for c in lost] == [("x-default-kvm", "no results")]
    assert unplanned(scan, ["acs-default-tcg"]) == ("two-switch-default-tcg",)


def test_a_bad_plan_is_a_config_error(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"include": [{"id": "a"}]}))
    assert main(["merge", str(CELLS), "--plan", str(bad), "--out", str(tmp_path / "m")]) == ConfigError.exit_code
    bad.write_text("[]")
    assert main(["merge", str(CELLS), "--plan", str(bad), "--out", str(tmp_path / "m")]) == ConfigError.exit_code
