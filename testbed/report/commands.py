"""`testbed merge CELLS... --out DIR`: the cells of a matrix run as one result.

Writes junit.xml (every cell's cases, named after the cell), summary.md (counts per cell, every
failing result, new splats by signature, every P2P verdict: a CI job summary), index.html (the
cell x test table) and, with --kcidb, kcidb.json (validated against the KCIDB schema). Exit 1
when a cell failed a test or left a new splat.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cells import find_cells
from .kcidb import kcidb
from .merge import failing, write_all


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge the cells of a matrix run: one JUnit, a summary, an HTML table, KCIDB")
    p.add_argument("cells", nargs="+", type=Path, metavar="DIR", help="directories holding <cell>/results/run.json")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--kcidb", action="store_true", help="also write kcidb.json (KCIDB schema, validated)")
    p.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
    cells = find_cells(args.cells)
    paths = write_all(cells, args.out)
    if args.kcidb:
        paths["kcidb"] = args.out / "kcidb.json"
        paths["kcidb"].write_text(json.dumps(kcidb(cells), indent=1) + "\n")
    bad = failing(cells)
    new = sum(sum(c.new_splats().values()) for c in cells)
    print(
        f"{len(cells)} cells, {sum(len(c.run.outcomes) for c in cells)} results, {len(bad)} failing, {new} new splats"
    )
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return 1 if bad or new else 0
