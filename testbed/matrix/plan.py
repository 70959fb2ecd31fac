"""A matrix plan as a file: the cells a run is meant to have, written by `testbed matrix --plan
FILE` (the `--json` document) and read back by `testbed merge --plan FILE`, which fails on every
planned cell without results. Also the plan as GitHub step outputs (a job's dynamic matrix)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..kernel.request import selftest_set
from .cells import Cell, cell_from_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    cells: tuple[Cell, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.cells)

    @property
    def kernels(self) -> tuple[tuple[str, bool], ...]:
        """The kernels the cells boot, (config, base fixes on), in plan order: one job each."""
        return tuple(dict.fromkeys((c.config, c.base_fixes) for c in self.cells))

    def kernel_jobs(self) -> dict[str, object]:
        """A matrix of the kernel jobs: each kernel the cells boot, its selftest companion (the
        cells' tree tests boot that one), and whether the base fixes go in (as the
        TESTBED_BASE_FIXES value the job's key and builds read)."""
        return {
            "include": [
                {"config": c, "selftest": selftest_set(c), "base_fixes": "1" if fixes else "0"}
                for c, fixes in self.kernels
            ]
        }

    def document(self) -> dict[str, object]:
        """The `testbed matrix --json` document: GitHub's `strategy.matrix` with `include`."""
        return {"include": [c.as_json() for c in self.cells]}


def write_plan(plan: Plan, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.document(), indent=1) + "\n")
    return path


def load_plan(path: Path) -> Plan:
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--plan {path}: cannot read it: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--plan {path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    entries = doc.get("include") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"--plan {path}: not a `testbed matrix --json` document (no include list)")
    cells = tuple(cell_from_json(entry, f"--plan {path}") for entry in entries)
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"--plan {path}: cells planned twice: {', '.join(dupes)}")
    log.debug("plan %s: %d cells", path, len(cells))
    return Plan(cells)


def github_outputs(plan: Plan) -> str:
    """`name=value` lines for $GITHUB_OUTPUT, each a matrix as one line of JSON: `cells` (the
    cell jobs) and `kernels` (the kernel jobs: config and selftest)."""
    cells = json.dumps(plan.document(), separators=(",", ":"))
    kernels = json.dumps(plan.kernel_jobs(), separators=(",", ":"))
    return f"cells={cells}\nkernels={kernels}\n"


def append_github_outputs(plan: Plan, path: Path) -> None:
    with path.open("a") as out:  # the runner's file collects every step's outputs: append
        out.write(github_outputs(plan))
