"""`testbed mutate`: would a bug in the series' code turn a test red?

    testbed mutate [--scope FILE] [--function NAME] [--sample N --seed S] [--shard K/N]
                   [--budget MINUTES] [--coverage-run DIR] -- PYTEST_SELECTION
    testbed mutate --list ...      the mutants only (no build, no VM)

Writes results/mutate/<run>/report.md, mutants.json, results.jsonl and each mutant's patch
(mutants/*.patch: `testbed ab --patches` reproduces a verdict by hand). Exit status 1 when a
counted mutant survived.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..coverage.scope import DEFAULT_SCOPE, load_scope
from ..errors import ConfigError
from ..kernel.configsets import KERNEL_CONFIGS
from ..matrix.shard import parse_shard
from ..paths import results_root
from . import report
from .equivalents import EQUIVALENTS_FILE, load_equivalents
from .judge import Status
from .run import MutateOptions, all_mutants, mutate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mutate",
        help="mutation testing of the kernel: build mutants of the scope's functions, run the tests that execute them",
        description="Generate mutants of the in-scope kernel functions (operators: testbed/mutate/operators.py), "
        "build each as base + one patch, run the pytest selection after -- (only the tests that execute "
        "the mutated lines, with --coverage-run), and report which mutants no test noticed.",
    )
    p.add_argument(
        "--coverage-scope",
        "--scope",
        dest="scope",
        type=Path,
        default=DEFAULT_SCOPE,
        metavar="FILE",
        help="coverage scope (default: %(default)s)",
    )
    p.add_argument("--function", action="append", default=[], metavar="NAME", help="only this function (repeatable)")
    p.add_argument(
        "--mutant",
        action="append",
        default=[],
        metavar="ID",
        help="only this mutant (repeatable; `--list` prints the ids)",
    )
    p.add_argument("--sample", type=int, metavar="N", help="N mutants chosen at random (deterministic for --seed)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed for --sample (default: %(default)s)")
    p.add_argument("--shard", metavar="K/N", help="the K-th of N shards of the mutants (CI runners in parallel)")
    p.add_argument("--budget", type=float, metavar="MINUTES", help="start no mutant after this long")
    p.add_argument(
        "--mutant-timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="one mutant's test run at most; its deadline is 2x what the base run spent in the same tests + 60 s "
        "when that is shorter; past it the mutant counts as killed by timeout (default: %(default)s)",
    )
    p.add_argument(
        "--coverage-run",
        type=Path,
        metavar="DIR",
        help="a `pytest --coverage` results directory: run only the tests that execute each mutant",
    )
    p.add_argument("--base-results", type=Path, metavar="DIR", help="reuse this pytest run as the base run")
    p.add_argument("--ksrc", type=Path, metavar="TREE", help="your kernel tree (default: Debian's linux-source)")
    p.add_argument("--kernel-config", default="default", choices=KERNEL_CONFIGS, help="(default: %(default)s)")
    p.add_argument(
        "--equivalents",
        type=Path,
        default=EQUIVALENTS_FILE,
        metavar="FILE",
        help="declared equivalent mutants (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run directory (default: results/mutate/<date-time>); an existing one is continued",
    )
    p.add_argument("--keep-kernels", action="store_true", help="keep the mutants' kernels in the cache")
    p.add_argument("--list", action="store_true", help="print the mutants and exit (nothing is built)")
    p.set_defaults(func=_mutate)  # fmt: skip


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        return parse_shard(text)  # as testbed matrix --shard takes it
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _options(args: argparse.Namespace) -> MutateOptions:
    if args.sample is not None and args.sample < 1:
        raise ConfigError("--sample N needs N >= 1")
    if args.coverage_run is not None and not (args.coverage_run / "coverage").is_dir():
        raise ConfigError(f"--coverage-run {args.coverage_run}: no coverage/ in it (a `pytest --coverage` run?)")
    return MutateOptions(
        scope=load_scope(args.scope),
        selection=tuple(args.guest_command),
        functions=tuple(args.function),
        ids=tuple(args.mutant),
        sample=args.sample,
        seed=args.seed,
        shard=_shard(args.shard),
        budget_s=args.budget * 60 if args.budget is not None else None,
        mutant_timeout_s=args.mutant_timeout,
        coverage_run=args.coverage_run,
        base_results=args.base_results,
        ksrc=args.ksrc,
        kernel_config=args.kernel_config,
        equivalents=load_equivalents(args.equivalents),
    )


def _progress(line: str) -> None:
    print(f"testbed mutate: {line}", flush=True)


def _mutate(args: argparse.Namespace) -> int:
    opts = _options(args)
    if args.list:
        for m in all_mutants(opts, _progress):
            print(f"{m.id}\t{m.path}:{m.first_line}\t{m.function}\t{m.operator}\t{m.description}")
        return 0
    if not opts.selection:
        raise ConfigError('testbed mutate needs the pytest selection after --, e.g. -- -m "vfio or p2pdma_api"')
    run_dir = (args.out or results_root() / "mutate" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    started = time.monotonic()
    results = mutate(opts, run_dir, _progress)
    hours = (time.monotonic() - started) / 3600
    tried = [r for r in results if r.status is not Status.NOT_RUN]
    header = [
        f"Selection: `{' '.join(opts.selection)}`; scope `{opts.scope.file}`"
        + (f"; functions {', '.join(opts.functions)}" if opts.functions else "")
        + (f"; sample {opts.sample} (seed {opts.seed})" if opts.sample else "")
        + (f"; shard {args.shard}" if args.shard else ""),
        f"Coverage index: {opts.coverage_run or 'none (every mutant ran the whole selection)'}.",
        f"{len(tried)} mutant(s) in {hours * 60:.1f} min"
        + (f" ({len(tried) / hours:.1f} per hour)." if hours else "."),
    ]
    meta = {
        "selection": list(opts.selection),
        "coverage_run": str(opts.coverage_run) if opts.coverage_run else None,
        "minutes": round(hours * 60, 1),
    }
    path = report.write(results, run_dir, header, meta)
    for line in report.summary_lines(results):
        print(line)
    print(f"(report: {path})")
    return 1 if any(r.status in (Status.SURVIVED, Status.NOT_COVERED) for r in results) else 0
