"""`testbed kselftest TOPO [SUITE...]`: the tree's own tests in a topology, through pytest.

The command is a front door to tests/vm/test_kselftest.py, so a run from the shell and a run
from `pytest -m kselftest` give the same items, JUnit, artifacts and end-of-run summary.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..children import run_child
from ..errors import ConfigError
from ..kernel.request import SUITE_SETS
from ..kernel.request import add_options as add_kernel_options
from ..kernel.request import from_options as kernel_request
from ..paths import REPO_ROOT, checkout_root
from ..vm.accel import ACCELS
from .catalog import SUITES

SUITE_NAMES = (*SUITES, "kunit")
TEST_FILE = REPO_ROOT / "tests" / "vm" / "test_kselftest.py"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kselftest",
        help="run the kernel tree's own selftests and KUnit suites in a topology",
        description="Build the tree's iommu and vfio selftests (and boot its selftest kernel, "
        "KUnit at boot) and run them in TOPO: one result per KTAP case.",
    )
    p.add_argument("topology", metavar="TOPO", help="topology name or YAML file (e.g. kselftest)")
    p.add_argument("suites", nargs="*", metavar="SUITE", help=f"suites to run: {', '.join(SUITE_NAMES)} (default: all)")
    add_kernel_options(p.add_argument, SUITE_SETS)  # the selftest fragment goes on top of the set
    p.add_argument("--accel", choices=ACCELS, default=os.environ.get("ACCEL", "auto"))
    p.add_argument(
        "--nightly", action="store_true", help="include the nightly-only programs (vfio_pci_device_init_perf_test)"
    )
    p.add_argument("--list", action="store_true", help="list the cases that would run, run nothing")
    p.set_defaults(func=cmd_kselftest)


def pytest_argv(args: argparse.Namespace) -> list[str]:
    unknown = [s for s in args.suites if s not in SUITE_NAMES]
    if unknown:
        raise ConfigError(f"testbed kselftest: unknown suite {', '.join(unknown)}; allowed: {', '.join(SUITE_NAMES)}")
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(TEST_FILE),
        "-p",
        "no:cacheprovider",
        "-rsx",
        "--topology",
        str(args.topology),
        "--accel",
        args.accel,
        "--kernel-config",
        args.kernel_config,
    ]
    for suite in args.suites:
        argv += ["--selftest-suite", suite]
    kernel = kernel_request(lambda name: getattr(args, name))  # bad input fails here, before pytest
    if kernel.bzimage or kernel.ksrc:
        argv += ["--kernel", str(kernel.bzimage or kernel.ksrc)]
    if kernel.patches is not None:
        argv += ["--patches", str(kernel.patches)]
    if kernel.base_fixes is False:
        argv.append("--no-base-fixes")
    if kernel.coverage_scope is not None:
        argv += ["--coverage-scope", str(kernel.coverage_scope)]
    if args.nightly:
        argv.append("--matrix")
    argv += ["--collect-only", "-q"] if args.list else ["-q"]
    return argv


def cmd_kselftest(args: argparse.Namespace) -> int:
    argv = pytest_argv(args)
    print("testbed: " + " ".join(argv[2:]), file=sys.stderr, flush=True)
    return run_child(argv, checkout_root())
