"""`testbed ab`: the same pytest selection on the base kernel and on base + a series, compared.

    testbed ab --patches SERIES [--ksrc TREE [--base REF]] [--qemu Q] -- PYTEST_ARGS
    testbed ab --qemus BASE OTHER [--ksrc TREE] -- PYTEST_ARGS
    testbed ab --compare RESULTS_A RESULTS_B

Each side is a plain pytest run of this checkout's suites with its own --results-dir; the
kernels come from the cache or are built (incrementally: the series is applied in one
worktree per tree). Exit status 1 when the series made something worse.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ..children import run_child
from ..errors import ConfigError, InfraError
from ..kernel.patches import discover
from ..kernel.source import is_git_toplevel
from ..paths import checkout_root, results_root
from ..runs.record import RUN_FILE
from ..runs.results import load_results
from ..vm.qemu import check_choice
from .compare import Comparison, compare, render_markdown, render_text
from .worktree import checkout, commit_in, require_git_tree, resolve

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ab",
        help="run a pytest selection on the base kernel and on base + a series; print what changed",
        description="Run the same pytest selection (after --) on the base kernel and on base + SERIES, "
        "then compare: tests that changed outcome, P2P verdicts and probe answers per pair, splats "
        "new and gone by signature, the kernels booted. Writes results/ab/<run>/report.md and "
        "comparison.json; exits 1 when the series made something worse.",
    )
    p.add_argument("--patches", type=Path, metavar="SERIES", help="an mbox or a directory of *.patch files")
    p.add_argument("--ksrc", type=Path, metavar="TREE", help="your kernel tree (default: Debian's linux-source)")
    p.add_argument("--base", metavar="REF", help="the base commit in --ksrc (default: what is checked out)")
    p.add_argument("--kernel-config", default="default", metavar="SET", help="config set for both kernels")
    p.add_argument("--base-results", type=Path, metavar="DIR", help="reuse this run as the base side")
    p.add_argument(
        "--qemu", metavar="distro|built|PATH", help="the QEMU both sides run on (default: $TESTBED_QEMU or distro)"
    )
    p.add_argument(
        "--qemus",
        nargs=2,
        metavar=("BASE", "OTHER"),
        help="compare two QEMUs (distro, built or a path) on the same kernel instead of two kernels: "
        "what the testbed's QEMU changes, e.g. --qemus distro built",
    )
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BASE", "SERIES"), help="compare two results dirs")
    p.add_argument("--out", type=Path, metavar="DIR", help="where the runs and the report go")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=_ab)


def _ab(args: argparse.Namespace) -> int:
    out = (args.out or results_root() / "ab" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    if args.compare:
        if args.patches or args.guest_command:
            raise ConfigError("--compare takes two results directories, no --patches or pytest arguments")
        return _report(compare(load_results(args.compare[0]), load_results(args.compare[1])), out, args.json)
    if args.qemus:
        return _ab_qemus(args, out)
    if args.patches is None:
        raise ConfigError("testbed ab needs --patches SERIES (or --qemus BASE OTHER, or --compare BASE SERIES)")
    if not args.guest_command:
        raise ConfigError("testbed ab needs the pytest selection after --, e.g. -- -m p2p --topology two-switch")
    if not args.patches.exists():
        raise ConfigError(f"--patches {args.patches}: no such file or directory")
    if args.base and args.ksrc is None:
        raise ConfigError("--base REF needs --ksrc TREE (a git tree holding REF)")
    tree = args.ksrc
    base = _base_side(args)
    if base:
        tree = checkout(require_git_tree(args.ksrc, "--ksrc"), base, "ab-base")
    kernel = ["--kernel", str(tree)] if tree else []
    qemu = ["--qemu", check_choice(args.qemu)] if args.qemu else []
    common = [*args.guest_command, "--kernel-config", args.kernel_config, *kernel, *qemu]
    if args.base_results:
        base_dir = args.base_results.resolve()
        load_results(base_dir)  # a bad directory fails before the series is built
    else:
        base_dir = out / "base"
        run_pytest([*common, "--results-dir", str(base_dir)], "base")
    series_dir = out / "series"
    run_pytest([*common, "--patches", str(args.patches.resolve()), "--results-dir", str(series_dir)], "series")
    return _report(compare(load_results(base_dir), load_results(series_dir)), out, args.json)


def _ab_qemus(args: argparse.Namespace, out: Path) -> int:
    """The selection on one kernel under two QEMUs: base/ on the first, series/ on the second
    (the report's sides), so the verdicts and outcomes the QEMU changes are listed."""
    if args.patches or args.base or args.base_results or args.qemu:
        raise ConfigError("--qemus compares two QEMUs on one kernel: no --patches, --base, --base-results or --qemu")
    if not args.guest_command:
        raise ConfigError("testbed ab needs the pytest selection after --, e.g. -- -m p2p --topology two-switch-iommu")
    sides = [check_choice(q) for q in args.qemus]  # both checked before either side runs
    kernel = ["--kernel", str(args.ksrc)] if args.ksrc else []
    common = [*args.guest_command, "--kernel-config", args.kernel_config, *kernel]
    for label, qemu, where in zip(("base", "series"), sides, (out / "base", out / "series"), strict=True):
        run_pytest([*common, "--qemu", qemu, "--results-dir", str(where)], f"{label} (QEMU {qemu})")
    return _report(compare(load_results(out / "base"), load_results(out / "series")), out, args.json)


def _base_side(args: argparse.Namespace) -> str | None:
    """The commit the base side builds (None: --ksrc as it is, or Debian's source). A series
    with a base-commit: line is applied there, so the base side is built there too: otherwise
    every commit between it and the tree's HEAD (and any uncommitted change, carried only onto
    HEAD) would be counted as the series'."""
    series = discover(args.patches)
    wanted = series[0].base_commit if series else ""
    if not wanted or args.ksrc is None or not is_git_toplevel(args.ksrc.expanduser().resolve()):
        return args.base
    tree = args.ksrc.expanduser().resolve()
    found = commit_in(tree, wanted)
    if found is None:  # the series side says so, with what to do, before building anything
        return args.base
    if args.base is None:
        head = resolve(tree, "HEAD")
        if head != found:
            print(f"testbed ab: the series applies on its base-commit {found[:12]}, not on HEAD ({head[:12]}): "
                  "the base side is built there too", flush=True)  # fmt: skip
        return found if head != found else None
    if resolve(tree, args.base) != found:
        raise ConfigError(
            f"--base {args.base} is not the series' base-commit {found[:12]}, on which the series side is "
            f"built: the two sides would differ by more than the series; pass --base {found[:12]} (or none)"
        )
    return args.base


def run_pytest(argv: list[str], side: str) -> int:
    """One side's pytest run; failing tests are results, not errors."""
    command = [sys.executable, "-m", "pytest", *argv]
    print(f"testbed ab: {side}: {' '.join(command)}", flush=True)
    code = run_child(command, checkout_root())
    results = Path(argv[argv.index("--results-dir") + 1])
    if code in (4, 5):  # pytest's usage error, or nothing collected: the selection
        raise ConfigError(f"the {side} run did not start (pytest exit {code}: the selection); see its output above")
    if code not in (0, 1) or not (results / RUN_FILE).is_file():
        raise InfraError(f"the {side} run did not complete (pytest exit {code}); see its output above")
    return code


def _report(c: Comparison, out: Path, as_json: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(render_markdown(c))
    (out / "comparison.json").write_text(json.dumps(c.as_json(), indent=1) + "\n")
    if as_json:
        print(json.dumps(c.as_json(), indent=1))
    else:
        for line in render_text(c):
            print(line)
        print(f"(report: {out / 'report.md'}, JSON: {out / 'comparison.json'})")
    if c.worse():
        return 1
    return InfraError.exit_code if c.inconclusive() else 0
