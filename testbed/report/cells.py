"""The artifacts of a matrix run, read back: one directory per cell, as the CI workflow uploads
them (and as a local run can lay them out):

    <cell id>/cell.json       the cell, as `testbed matrix --json` printed it
    <cell id>/junit.xml       pytest --junitxml
    <cell id>/results/        pytest --results-dir: run.json, verdicts.tsv, fingerprints/, tests/
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ..ab.results import RunResults, load_results
from ..errors import ConfigError


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


def find_cells(roots: list[Path]) -> list[CellResults]:
    """Every cell under `roots` (a directory holding run.json below results/ is a cell)."""
    cells = []
    for root in roots:
        if not root.is_dir():
            raise ConfigError(f"{root}: not a directory of cell artifacts")
        for run in sorted(root.glob("**/results/run.json")):
            cells.append(_cell(run.parent.parent, run.parent))
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"cells found twice: {', '.join(dupes)}")
    if not cells:
        raise ConfigError(f"no cell (a <cell>/results/run.json) under {', '.join(map(str, roots))}")
    return sorted(cells, key=lambda c: c.id)


def _cell(directory: Path, results: Path) -> CellResults:
    meta_path = directory / "cell.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    junit_path = directory / "junit.xml"
    try:
        junit = ET.parse(junit_path).getroot() if junit_path.is_file() else None
    except ET.ParseError as exc:
        raise ConfigError(f"{junit_path}: not valid JUnit XML: {exc}") from None
    return CellResults(str(meta.get("id") or directory.name), meta, junit, load_results(results), directory)
