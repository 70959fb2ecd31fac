"""`testbed matrix`: the nightly matrix's cells as text or JSON, whole or one shard, and the
plan files a CI run wires its jobs with; `testbed matrix run`: one cell, as a CI job runs it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..kernel.request import SUITE_SETS
from ..paths import results_root
from .cells import ACCELS, CONFIGS, PRESETS, QEMUS, Cell, cell_from_json, cells, measured, without_base_fixes_cells
from .plan import Plan, append_github_outputs, write_plan
from .run import run_cell
from .shard import parse_shard, shards


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "matrix",
        help="the nightly matrix: topology x IOMMU mode x kernel config x accel x QEMU cells, as text or --json, "
        "whole or --shard K/N; `matrix run` runs one cell",
    )
    p.add_argument("--json", action="store_true", help="one JSON document (a CI job's dynamic matrix)")
    p.add_argument("--shard", metavar="K/N", help="only the K-th of N shards, balanced by measured durations")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named selection: nightly (every topology, IOMMU mode and config, and the hot-unplug suite on "
        "debug-full without the base fixes) or fast (two topologies, "
        "their own IOMMU, the default config); --topology, --kernel-config and --iommu override its parts",
    )
    p.add_argument("--topology", action="append", metavar="NAME", help="only these topologies (repeatable)")
    p.add_argument(
        "--kernel-config",
        "--config",  # the old spelling; --kernel-config as everywhere else (testbed, pytest, make CONFIG=)
        dest="kernel_config",
        action="append",
        choices=SUITE_SETS,
        help="only these kernel config sets (repeatable; default: default, debug-full)",
    )
    p.add_argument("--accel", action="append", choices=ACCELS, help="accelerators (default: kvm)")
    p.add_argument(
        "--qemu",
        action="append",
        choices=QEMUS,
        help="the QEMU axis (repeatable): distro (the host's) and/or built (the testbed's, `testbed qemu build`; "
        "default: the preset's, nightly both, else distro)",
    )
    p.add_argument(
        "--iommu",
        choices=("all", "own"),
        help="all (the default): each topology under its own IOMMU and the other modes it allows "
        "(<name>.iommu-<mode>); own: only its own",
    )
    p.add_argument(
        "--durations",
        type=Path,
        action="append",
        metavar="DIR",
        help="results directories whose run.json give cell durations (default: results/pytest/*)",
    )
    p.add_argument(
        "--plan",
        type=Path,
        metavar="FILE",
        help="also write the plan (the --json document) to FILE, for `testbed merge --plan FILE`",
    )
    p.add_argument(
        "--github-output",
        type=Path,
        metavar="FILE",
        help="append the step outputs cells (the cell jobs' matrix, one line of JSON) and kernels (the "
        "kernel jobs': each config, its selftest companion, base fixes on or off) to FILE ($GITHUB_OUTPUT)",
    )
    p.set_defaults(func=_matrix)
    actions = p.add_subparsers(dest="matrix_command", metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="run one cell's tests into OUT/<cell id>/ (cell.json, junit.xml, results/, vm/) as "
        "`testbed merge` reads them; KVM where it works, TCG where not",
    )
    run.add_argument("--cell", required=True, metavar="JSON", help="the cell as `testbed matrix --json` lists it")
    run.add_argument("--out", type=Path, required=True, metavar="DIR")
    run.set_defaults(func=_run)


def _selected(args: argparse.Namespace) -> list[Cell]:
    preset = PRESETS[args.preset] if args.preset else None
    iommu = args.iommu or ("own" if preset and not preset.iommu_variants else "all")
    dirs = args.durations or sorted((results_root() / "pytest").glob("*"))
    found = cells(
        args.topology or (preset.topologies if preset else None),
        args.kernel_config or (preset.configs if preset else CONFIGS),
        args.accel or ("kvm",),
        measured(d / "run.json" for d in dirs),
        iommu_variants=iommu == "all",
        qemus=args.qemu or (preset.qemus if preset else ("distro",)),
    )
    if preset is not None:
        found += without_base_fixes_cells(preset.without_base_fixes, args.accel or ("kvm",))
    if not args.shard:
        return found
    try:
        k, n = parse_shard(args.shard)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return shards(found, n)[k - 1]


def _matrix(args: argparse.Namespace) -> int:
    plan = Plan(tuple(_selected(args)))
    if args.plan:
        write_plan(plan, args.plan)
    if args.github_output:
        append_github_outputs(plan, args.github_output)
    if args.json:
        print(json.dumps(plan.document(), indent=1))
        return 0
    print(f"{'cell':52} {'iommu':20} {'qemu':7} {'estimate':>9}")
    for c in plan.cells:
        print(f"{c.id:52} {c.iommu:20} {c.qemu:7} {c.estimate_s:8.0f}s")
    print(f"{len(plan.cells)} cells, {sum(c.estimate_s for c in plan.cells) / 60:.0f} min estimated")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        doc = json.loads(args.cell)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--cell: not valid JSON: {exc.msg}") from None
    return run_cell(cell_from_json(doc, "--cell"), args.out)
