"""The reports of a coverage run, from its snapshots (snapshots.py): every snapshot's counters
added up per kernel (across VMs, topologies and xdist workers) and turned by gcovr into lcov,
Cobertura XML and HTML;
the per-file and per-function table; uncovered.md; and index.json, the "which tests execute
this line" index `testbed mutate` runs only the relevant tests from.

Everything lands in `<results>/coverage/`. A snapshot's notes (.gcno) come from its kernel's
cache entry (`coverage/gcno/`, kept by the build), its sources from the tree the kernel was
built in (the notes name them by absolute path).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..kernel.artifact import read_manifest
from .declared import load_declared
from .gcovr import merge, tracefile
from .gcovtool import lines_of, merge_snapshots
from .report import Index, index, not_built, summarize, table_lines, tests_for, uncovered_markdown, uncovered_ranges
from .scope import Scope
from .snapshots import OUTSIDE, SnapshotRecord, load_records

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
INDEX_FILE = "index.json"
TABLE_FILE = "table.txt"
UNCOVERED_FILE = "uncovered.md"


@dataclass(frozen=True)
class KernelNotes:
    """Where a snapshot's notes and sources are."""

    gcno: Path  # the kernel's kept notes, laid out like its build directory
    srctree: Path  # the tree it was built in


def notes_of(record: SnapshotRecord) -> KernelNotes:
    entry = Path(record.kernel).parent
    manifest = read_manifest(entry)
    if manifest is None or manifest.built_in is None:
        raise ConfigError(f"coverage: the kernel {record.kernel} of snapshot {record.directory} is gone")
    return KernelNotes(entry / "coverage" / "gcno", manifest.built_in)


def _check_sources(notes: KernelNotes, scope: Scope) -> None:
    """The tree must still hold the sources the kernel was built from (a later coverage build of
    another series resets it): the kept copies say what they were."""
    kept = notes.gcno.parent / "src"
    changed = [
        p for p in scope.paths()
        if (kept / p).is_file() and (notes.srctree / p).read_bytes() != (kept / p).read_bytes()
    ]  # fmt: skip
    if changed:
        raise ConfigError(
            f"coverage: {notes.srctree} has moved on since this kernel was built ({', '.join(changed[:3])} changed: "
            "another coverage build used the tree); rebuild the kernel and run again"
        )


def kernel_notes(records: Sequence[SnapshotRecord], scope: Scope) -> dict[str, KernelNotes]:
    """The notes of each kernel the run booted (read once per kernel, not per snapshot), its
    tree checked to still hold what it was built from."""
    notes = {}
    for r in records:
        if r.kernel not in notes:
            notes[r.kernel] = notes_of(r)
            _check_sources(notes[r.kernel], scope)
    return notes


def totals(
    coverage_dir: Path, records: Sequence[SnapshotRecord], scope: Scope, notes: dict[str, KernelNotes]
) -> list[Path]:
    """Per kernel, every snapshot's counters added up (gcov-tool) and one gcovr tracefile of it."""
    out = []
    for kernel, n in notes.items():
        key = Path(kernel).parent.name
        dirs = [coverage_dir / r.directory for r in records if r.kernel == kernel]
        merged = merge_snapshots(dirs, coverage_dir / "merged" / key)
        out.append(tracefile(merged, n.gcno, n.srctree, coverage_dir / "tracefiles" / f"{key}.json", scope=scope))
    return out


def per_test(
    coverage_dir: Path, records: Sequence[SnapshotRecord], scope: Scope, notes: dict[str, KernelNotes]
) -> dict[str, dict[str, Any]]:
    """Each test's line counts (a test with two snapshots gets both), gcov in parallel."""
    mine = [r for r in records if r.test != OUTSIDE]

    def one(r: SnapshotRecord) -> tuple[str, dict[str, Any]]:
        n = notes[r.kernel]
        return r.test, lines_of(coverage_dir / r.directory, n.gcno, n.srctree, scope)

    out: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for test, doc in pool.map(one, mine):
            out.setdefault(test, {"files": []})["files"] += doc["files"]
    return out


def report_run(coverage_dir: Path, scope: Scope, progress: Progress = print) -> list[str]:
    """Every report of the run under coverage_dir; the table's lines."""
    records = load_records(coverage_dir)
    if not records:
        raise ConfigError(f"coverage: no snapshots in {coverage_dir} (no VM test ran on a coverage kernel)")
    notes = kernel_notes(records, scope)
    srctrees = {n.srctree for n in notes.values()}
    if len(srctrees) > 1:
        raise ConfigError(f"coverage: the run's kernels were built in several trees ({', '.join(map(str, srctrees))})")
    srctree = srctrees.pop()
    progress(f"coverage: {len(records)} snapshot(s): adding up, then gcovr")
    merged = merge(totals(coverage_dir, records, scope, notes), srctree, coverage_dir, scope)
    data = json.loads(merged.json.read_text())
    files, functions = summarize(data, scope)
    lines = table_lines(files, functions, not_built(data, scope))
    (coverage_dir / TABLE_FILE).write_text("\n".join(lines) + "\n")
    uncovered = uncovered_markdown(uncovered_ranges(data, scope), load_declared(), srctree)
    (coverage_dir / UNCOVERED_FILE).write_text(uncovered)
    idx = index(per_test(coverage_dir, records, scope, notes))
    (coverage_dir / INDEX_FILE).write_text(json.dumps(idx) + "\n")
    tests = len({r.test for r in records if r.test != OUTSIDE})
    lines.append(
        f"(per test: {tests} test(s), {len(records)} snapshot(s) from {len({r.vm for r in records})} VM(s); "
        f"{merged.lcov}, {merged.cobertura}, {merged.html}, {coverage_dir / UNCOVERED_FILE}, "
        f"{coverage_dir / INDEX_FILE})"
    )
    return lines


def load_index(run_dir: Path) -> Index:
    """The line -> tests index of a `pytest --coverage` results directory."""
    path = run_dir / "coverage" / INDEX_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no coverage index in {run_dir} ({exc}); was it a `pytest --coverage` run?") from None
    return data


__all__ = ["INDEX_FILE", "load_index", "report_run", "tests_for"]
