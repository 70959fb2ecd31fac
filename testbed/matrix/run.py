"""`testbed matrix run`: one cell of a matrix run, laid out the way `testbed merge` reads it:

OUT/<cell id>/cell.json   the cell
OUT/<cell id>/junit.xml   pytest --junitxml
OUT/<cell id>/results/    pytest --results-dir: run.json, verdicts.tsv, fingerprints/, tests/
OUT/<cell id>/vm/         each VM's directory: console, QEMU and QMP logs, and its disk
                          overlay and backing files (the CI upload leaves those out)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..children import run_child
from ..paths import checkout_root
from .cells import Cell

log = logging.getLogger(__name__)

RESULTS_ENV = "TESTBED_RESULTS"  # paths.results_root(): where each VM's directory goes


@dataclass(frozen=True)
class CellRun:
    cell: Cell
    directory: Path
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # set on top of the caller's environment


def accel_for(cell: Cell) -> str:
    # a kvm cell takes KVM where the runner has a working one and TCG where not (the probe in
    # testbed/vm/accel.py decides; run.json records what was used): a runner without KVM
    # still gives results, slower
    return "auto" if cell.accel == "kvm" else cell.accel


def prepare(cell: Cell, out: Path, python: str = sys.executable) -> CellRun:
    directory = out.resolve() / cell.id
    argv = (
        python,
        "-m",
        "pytest",
        *cell.pytest_args(accel_for(cell)),
        "-q",
        "--junitxml",
        str(directory / "junit.xml"),
        "--results-dir",
        str(directory / "results"),
    )
    # CI=true: a cell that cannot boot a VM fails instead of skipping (pytest_plugin)
    env = (("CI", "true"), (RESULTS_ENV, str(directory)))
    return CellRun(cell, directory, argv, env)


def run_cell(cell: Cell, out: Path) -> int:
    """Run the cell's tests; pytest's exit status."""
    run = prepare(cell, out)
    run.directory.mkdir(parents=True, exist_ok=True)
    (run.directory / "cell.json").write_text(json.dumps(cell.as_json()) + "\n")
    print(f"cell {cell.id}: {' '.join(run.argv[1:])}", flush=True)
    log.debug("cell %s: environment %s", cell.id, dict(run.env))
    return run_child(run.argv, checkout_root(), os.environ | dict(run.env))
