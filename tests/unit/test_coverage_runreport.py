"""A coverage run's reports from its snapshot records, end to end on the tiny program built the
kbuild way: two tests' snapshots and one taken outside any test, the kernel's notes kept in its
cache entry, as pytest --coverage and the coverage build leave them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from testbed.coverage import runreport
from testbed.coverage.snapshots import OUTSIDE, SnapshotRecord, append_record
from testbed.errors import ConfigError

from .test_coverage_gcovr import FOO, Tree, _scope, needs_gcc


def _run(tmp_path: Path) -> tuple[Path, Tree]:
    tree = Tree(tmp_path, "absolute")
    tree.build()
    entry = tmp_path / "cache" / "kernel" / "k1"  # a kernel's cache entry, as build.py leaves it
    (entry / "coverage" / "gcno" / "drivers" / "x").mkdir(parents=True)
    shutil.copy(tree.builddir / "drivers/x/foo.gcno", entry / "coverage/gcno/drivers/x/foo.gcno")
    (entry / "coverage" / "src" / "drivers" / "x").mkdir(parents=True)
    shutil.copy(tree.srctree / FOO, entry / "coverage/src" / FOO)
    (entry / "manifest.json").write_text(json.dumps({"built_in": str(tree.srctree), "key": "k1"}))
    coverage = tmp_path / "results" / "coverage"
    for name, test, args in (
        ("gw0-00001", OUTSIDE, ("0", "0")),
        ("gw0-00002", "tests/vm/test_a.py::test_map[t]", ("4", "0")),
        ("gw1-00001", "tests/vm/test_b.py::test_unwind[t]", ("2", "1", "1")),
    ):
        snap = tree.run(f"snap-{name}", *args)
        shutil.move(snap, coverage / "snapshots" / name)
        record = SnapshotRecord(f"snapshots/{name}", test, "vm1", "t", str(entry / "bzImage"), str(tree.builddir), 1)
        append_record(coverage, name.split("-")[0], record)
    return coverage, tree


@needs_gcc
def test_a_run_gives_the_merged_reports_the_table_and_the_index(tmp_path):
    coverage, _ = _run(tmp_path)
    lines = runreport.report_run(coverage, _scope(FOO), progress=lambda _: None)
    assert lines[0].startswith("kernel coverage of the scope: lines ")
    assert any(line.startswith(FOO) for line in lines) and "never_called" in "\n".join(lines)
    for name in ("coverage.info", "coverage.xml", "html/index.html", "coverage.json", "uncovered.md", "table.txt"):
        assert (coverage / name).is_file(), name
    assert "SF:" in (coverage / "coverage.info").read_text()
    idx = runreport.load_index(coverage.parent)
    unwind = [int(n) for n, tests in idx[FOO].items() if tests == ["tests/vm/test_b.py::test_unwind[t]"]]
    assert unwind, "the unwind's lines name only the test that failed part-way"
    merged = json.loads((coverage / "coverage.json").read_text())
    (foo,) = merged["files"]
    main = min(line["line_number"] for line in foo["lines"] if line.get("function_name") == "main")
    # three runs of main, counted once each: the snapshot outside any test counts in the total
    assert next(line["count"] for line in foo["lines"] if line["line_number"] == main) == 3
    assert "never_called" in (coverage / "uncovered.md").read_text()


@needs_gcc
def test_a_tree_that_moved_on_since_the_build_is_named(tmp_path):
    coverage, tree = _run(tmp_path)
    (tree.srctree / FOO).write_text((tree.srctree / FOO).read_text() + "\n/* another series */\n")
    with pytest.raises(ConfigError, match="has moved on since this kernel was built"):
        runreport.report_run(coverage, _scope(FOO), progress=lambda _: None)


def test_a_run_without_snapshots_says_so(tmp_path):
    with pytest.raises(ConfigError, match="no snapshots"):
        runreport.report_run(tmp_path, _scope(FOO), progress=lambda _: None)
