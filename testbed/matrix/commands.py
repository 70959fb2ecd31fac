"""`testbed matrix`: the nightly matrix's cells as text or JSON, whole or one shard."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..kernel.request import SUITE_SETS
from ..paths import results_root
from .cells import ACCELS, CONFIGS, cells, measured
from .shard import parse_shard, shards


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "matrix",
        help="the nightly matrix: topology x IOMMU mode x kernel config x accel cells, as text or --json, "
        "whole or --shard K/N",
    )
    p.add_argument("--json", action="store_true", help="one JSON document (a CI job's dynamic matrix)")
    p.add_argument("--shard", metavar="K/N", help="only the K-th of N shards, balanced by measured durations")
    p.add_argument("--topology", action="append", metavar="NAME", help="only these topologies (repeatable)")
    p.add_argument(
        "--config",
        action="append",
        choices=SUITE_SETS,
        help="only these kernel configs (repeatable; default: default, debug-full)",
    )
    p.add_argument("--accel", action="append", choices=ACCELS, help="accelerators (default: kvm)")
    p.add_argument(
        "--iommu",
        choices=("all", "own"),
        default="all",
        help="all: each topology under its own IOMMU and the other modes it allows (<name>.iommu-<mode>); "
        "own: only its own",
    )
    p.add_argument(
        "--durations",
        type=Path,
        action="append",
        metavar="DIR",
        help="results directories whose run.json give cell durations (default: results/pytest/*)",
    )
    p.set_defaults(func=_matrix)


def _matrix(args: argparse.Namespace) -> int:
    dirs = args.durations or sorted((results_root() / "pytest").glob("*"))
    runs = [d / "run.json" for d in dirs]
    found = cells(
        args.topology,
        args.config or CONFIGS,
        args.accel or ("kvm",),
        measured(runs),
        iommu_variants=args.iommu == "all",
    )
    if args.shard:
        try:
            k, n = parse_shard(args.shard)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        found = shards(found, n)[k - 1]
    if args.json:
        print(json.dumps({"include": [c.as_json() for c in found]}, indent=1))
        return 0
    print(f"{'cell':40} {'iommu':20} {'estimate':>9}")
    for c in found:
        print(f"{c.id:40} {c.iommu:20} {c.estimate_s:8.0f}s")
    print(f"{len(found)} cells, {sum(c.estimate_s for c in found) / 60:.0f} min estimated")
    return 0
