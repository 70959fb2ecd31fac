"""`testbed merge CELLS... --out DIR [--plan FILE]`: the cells of a matrix run as one result.

Writes junit.xml (every cell's cases, named after the cell), summary.md (counts per cell, every
failing result, new splats by signature, every P2P verdict: a CI job summary), index.html (the
cell x test table) and, with --kcidb, kcidb.json (validated against the KCIDB schema). Exit 1
when a cell failed a test or left a new splat. A cell without usable results (its results
broken, or, given the plan `testbed matrix --plan` wrote, planned and never arrived) is named
and fails the merge as an InfraError (exit 3), after everything is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import ConfigError, InfraError
from .cells import LostCell, lost_cells, scan_cells, unplanned
from .kcidb import Links, kcidb, kcidb_available
from .merge import failing, write_all

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge the cells of a matrix run: one JUnit, a summary, an HTML table, KCIDB")
    p.add_argument("cells", nargs="+", type=Path, metavar="DIR", help="directories holding <cell>/results/run.json")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument(
        "--plan",
        type=Path,
        action="append",
        metavar="FILE",
        help="the plan(s) `testbed matrix --plan FILE` wrote: every planned cell must have results (repeatable)",
    )
    p.add_argument(
        "--kcidb", action="store_true", help="also write kcidb.json (KCIDB schema, validated; the `kcidb` extra)"
    )
    p.add_argument(
        "--log-base",
        metavar="URL",
        help="KCIDB log URLs: URL + each file's path below the cell directories (where the artifacts are "
        "published); file:// URLs of the files here without it",
    )
    p.add_argument(
        "--append-summary",
        type=Path,
        metavar="FILE",
        help="append summary.md to FILE as well ($GITHUB_STEP_SUMMARY), whatever the verdict",
    )
    p.set_defaults(func=_merge)


def _planned(plans: list[Path] | None) -> tuple[str, ...] | None:
    if not plans:
        return None
    from ..matrix.plan import load_plan

    ids = tuple(dict.fromkeys(i for path in plans for i in load_plan(path).ids))
    log.debug("%d cells planned in %s", len(ids), ", ".join(map(str, plans)))
    return ids


def _merge(args: argparse.Namespace) -> int:
    if args.kcidb:
        kcidb_available()
    planned = _planned(args.plan)
    scan = scan_cells(args.cells, missing_ok=planned is not None)
    if planned is None and not scan.ids():
        raise ConfigError(f"no cell (a <cell>/results/run.json) under {', '.join(map(str, args.cells))}")
    cells = list(scan.cells)
    lost = lost_cells(scan, planned)
    extra = unplanned(scan, planned) if planned is not None else ()
    paths = write_all(cells, args.out, lost, extra)
    if args.kcidb:
        paths["kcidb"] = args.out / "kcidb.json"
        links = Links(tuple(args.cells), args.log_base)
        paths["kcidb"].write_text(json.dumps(kcidb(cells, links), indent=1) + "\n")
    if args.append_summary:
        with args.append_summary.open("a") as out:
            out.write(paths["markdown"].read_text())
    bad = failing(cells)
    new = sum(sum(c.new_splats().values()) for c in cells)
    print(
        f"{len(cells)} cells, {sum(len(c.run.outcomes) for c in cells)} results, {len(bad)} failing, "
        f"{new} new splats, {len(lost)} without results"
    )
    for name, path in paths.items():
        print(f"  {name}: {path}")
    for cell_id in extra:
        print(f"  not in the plan (merged all the same): {cell_id}", file=sys.stderr)
    if lost:
        raise InfraError(_lost_message(lost))
    return 1 if bad or new else 0


def _lost_message(lost: tuple[LostCell, ...]) -> str:
    return f"{len(lost)} cell(s) without usable results:\n" + "\n".join(f"  {c.id}: {c.reason}" for c in lost)
