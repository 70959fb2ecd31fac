"""`testbed coverage`: the reports of a `pytest --coverage` run, and the scope.

testbed coverage report RESULTS_DIR [--scope FILE]   (re)write the reports, print the table
testbed coverage scope [--scope FILE]                what is in scope, and why
testbed coverage tests RESULTS_DIR FILE:LINE[-LAST]  which tests execute these lines
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .report import tests_for
from .runreport import load_index, report_run
from .scope import DEFAULT_SCOPE, load_scope


def register(sub: argparse._SubParsersAction) -> None:
    cov = sub.add_parser("coverage", help="kernel coverage: reports of a `pytest --coverage` run, the scope")
    actions = cov.add_subparsers(dest="coverage_command", metavar="ACTION", required=True)
    report = actions.add_parser("report", help="write lcov, Cobertura XML, HTML, uncovered.md and the index of a run")
    report.add_argument("results", type=Path, metavar="RESULTS_DIR", help="a results/pytest/<run> of pytest --coverage")
    report.add_argument("--coverage-scope", "--scope", dest="scope", type=Path, default=DEFAULT_SCOPE, metavar="FILE")
    report.set_defaults(func=_report)
    scope = actions.add_parser("scope", help="the files and functions in scope, and why")
    scope.add_argument("--coverage-scope", "--scope", dest="scope", type=Path, default=DEFAULT_SCOPE, metavar="FILE")
    scope.set_defaults(func=_scope)
    tests = actions.add_parser("tests", help="the tests that execute a line range (the run's index)")
    tests.add_argument("results", type=Path, metavar="RESULTS_DIR")
    tests.add_argument("where", metavar="FILE:LINE[-LAST]", help="e.g. drivers/vfio/pci/vfio_pci_dmabuf.c:120-130")
    tests.set_defaults(func=_tests)


def _report(args: argparse.Namespace) -> int:
    directory = args.results / "coverage"
    if not directory.is_dir():
        raise ConfigError(f"{args.results}: no coverage/ in it (run pytest with --coverage)")
    for line in report_run(directory, load_scope(args.scope)):
        print(line)
    return 0


def _scope(args: argparse.Namespace) -> int:
    scope = load_scope(args.scope)
    for entry in scope.entries:
        what = ", ".join(entry.functions) if entry.functions else "every function"
        print(f"{entry.path}: {what}\n    {' '.join(entry.why.split())}")
    return 0


def _tests(args: argparse.Namespace) -> int:
    path, _, lines = args.where.rpartition(":")
    try:
        first, _, last = lines.partition("-")
        span = (int(first), int(last or first))
    except ValueError:
        raise ConfigError(f"{args.where}: expected FILE:LINE or FILE:FIRST-LAST") from None
    for test in tests_for(load_index(args.results), path, *span):
        print(test)
    return 0
