"""The artifacts of a matrix run, read back: one directory per cell, as `testbed matrix run`
writes them and the CI workflow uploads them (and as a local run can lay them out):

    <cell id>/cell.json       the cell, as `testbed matrix --json` printed it
    <cell id>/junit.xml       pytest --junitxml
    <cell id>/results/        pytest --results-dir: run.json, verdicts.tsv, fingerprints/, tests/

A cell whose results cannot be read, or that recorded no test, is broken, and a planned cell
with no directory at all is missing: both are lost results, which a merge names and fails on.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..runs.results import RunResults, load_results

log = logging.getLogger(__name__)

NO_ARTIFACT = "no results: nothing of this cell arrived (its job failed before the upload, was skipped or cancelled)"


@dataclass(frozen=True)
class CellResults:
    id: str
    cell: dict[str, object]  # cell.json ({} when the directory has none)
    junit: ET.Element | None  # the JUnit document's root
    run: RunResults
    directory: Path

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for outcome in self.run.outcomes.values():
            out[outcome] = out.get(outcome, 0) + 1
        return out

    def new_splats(self) -> dict[str, int]:
        return self.run.splat_counts(new_only=True)


@dataclass(frozen=True)
class LostCell:
    """A cell without usable results: broken (its directory is there) or missing (planned,
    never arrived)."""

    id: str
    reason: str
    directory: Path | None = None


@dataclass(frozen=True)
class CellScan:
    cells: tuple[CellResults, ...]
    broken: tuple[LostCell, ...]

    def ids(self) -> set[str]:
        return {c.id for c in self.cells} | {b.id for b in self.broken}


def scan_cells(roots: list[Path], missing_ok: bool = False) -> CellScan:
    """Every cell under `roots` (a directory holding cell.json or results/run.json), readable
    or broken. `missing_ok`: a root that is not there holds no cell (a plan still names them)."""
    directories: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            if missing_ok:
                log.warning("%s: not a directory; no cell there", root)
                continue
            raise ConfigError(f"{root}: not a directory of cell artifacts")
        directories |= _cell_directories(root)
    loaded = [_load(d) for d in sorted(directories)]
    cells = tuple(sorted((c for c in loaded if isinstance(c, CellResults)), key=lambda c: c.id))
    broken = tuple(sorted((c for c in loaded if isinstance(c, LostCell)), key=lambda c: c.id))
    ids = [c.id for c in loaded]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"cells found twice: {', '.join(dupes)}")
    return CellScan(cells, broken)


def find_cells(roots: list[Path]) -> list[CellResults]:
    """Every cell under `roots`; a broken one, or none at all, is an error."""
    scan = scan_cells(roots)
    if scan.broken:
        raise ConfigError("; ".join(f"cell {b.id}: {b.reason}" for b in scan.broken))
    if not scan.cells:
        raise ConfigError(f"no cell (a <cell>/results/run.json) under {', '.join(map(str, roots))}")
    return list(scan.cells)


def lost_cells(scan: CellScan, planned: Iterable[str] | None = None) -> tuple[LostCell, ...]:
    """The broken cells and, given the plan's cell ids, every planned cell that never arrived."""
    have = scan.ids()
    missing = [LostCell(i, NO_ARTIFACT) for i in dict.fromkeys(planned or ()) if i not in have]
    return tuple(sorted([*scan.broken, *missing], key=lambda c: c.id))


def unplanned(scan: CellScan, planned: Iterable[str]) -> tuple[str, ...]:
    """Cells that arrived but are not in the plan (merged all the same)."""
    return tuple(sorted(scan.ids() - set(planned)))


def _cell_directories(root: Path) -> set[Path]:
    # cell.json is written before the tests run: a cell that died early still shows up
    runs = {run.parent.parent for run in root.glob("**/results/run.json")}
    return runs | {meta.parent for meta in root.glob("**/cell.json")}


def _load(directory: Path) -> CellResults | LostCell:
    meta_path = directory / "cell.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, ValueError) as exc:
        return LostCell(directory.name, f"broken: {meta_path}: not valid JSON: {exc}", directory)
    if not isinstance(meta, dict):
        return LostCell(directory.name, f"broken: {meta_path}: not a JSON object", directory)
    cell_id = str(meta.get("id") or directory.name)
    try:
        cell = _results(cell_id, meta, directory)
    # whatever a damaged or truncated file makes the readers trip over: the cell is named, not lost
    except (ConfigError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = str(exc) if isinstance(exc, ConfigError) else f"{directory}: {type(exc).__name__}: {exc}"
        return LostCell(cell_id, f"broken: {why}", directory)
    if not cell.run.outcomes:
        return LostCell(cell_id, f"broken: {directory / 'results'} records no test outcome", directory)
    return cell


def _results(cell_id: str, meta: dict, directory: Path) -> CellResults:
    results = directory / "results"
    if not (results / "run.json").is_file():
        raise ConfigError(f"no results/run.json in {directory} (the run did not finish)")
    junit_path = directory / "junit.xml"
    try:
        junit = ET.parse(junit_path).getroot() if junit_path.is_file() else None
    except ET.ParseError as exc:
        raise ConfigError(f"{junit_path}: not valid JUnit XML: {exc}") from None
    return CellResults(cell_id, meta, junit, load_results(results), directory)
