"""The fast paths: gcov-tool adds snapshots up to what gcovr finds in their merged tracefiles, and
one gcov process gives a snapshot's line counts as gcovr's JSON has them. On the tiny program
built the kbuild way (tests/unit/test_coverage_gcovr.py)."""

from __future__ import annotations

import json

from testbed.coverage import gcovr, gcovtool

from .test_coverage_gcovr import FOO, Tree, _counts, _scope, needs_gcc


@needs_gcc
def test_adding_up_gives_what_merging_tracefiles_gives(tmp_path):
    tree = Tree(tmp_path, "absolute")
    tree.build()
    one, two = tree.run("snap1", "4", "0"), tree.run("snap2", "2", "1")
    scope = _scope(FOO)
    traces = [
        gcovr.tracefile(s, tree.builddir, tree.srctree, tmp_path / f"{s.name}.json", scope=scope) for s in (one, two)
    ]
    by_gcovr = json.loads(gcovr.merge(traces, tree.srctree, tmp_path / "out", scope).json.read_text())
    added = gcovtool.merge_snapshots([one, two], tmp_path / "added")
    summed = gcovr.tracefile(added, tree.builddir, tree.srctree, tmp_path / "added.json", scope=scope)
    expected = {line["line_number"]: line["count"] for line in by_gcovr["files"][0]["lines"]}
    assert _counts(summed) == expected
    assert any(count > 1 for count in expected.values())


@needs_gcc
def test_a_snapshots_lines_as_gcovr_names_them(tmp_path):
    tree = Tree(tmp_path, "absolute")
    tree.build()
    snap = tree.run("snap1", "4", "0")
    doc = gcovtool.lines_of(snap, tree.builddir, tree.srctree, _scope(FOO))
    (file,) = doc["files"]
    assert file["file"] == FOO
    trace = gcovr.tracefile(snap, tree.builddir, tree.srctree, tmp_path / "t.json", scope=_scope(FOO))
    executed = {n for n, c in _counts(trace).items() if c}
    assert executed and executed <= {line["line_number"] for line in file["lines"] if line["count"]}
    assert gcovtool.lines_of(snap, tree.builddir, tree.srctree, _scope("drivers/y/other.c")) == {"files": []}
