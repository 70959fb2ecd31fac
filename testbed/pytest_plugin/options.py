"""Options, markers and the run's state: what `pytest --help` lists under p2p-testbed, and
what pytest_configure decides before anything boots (the kernel to boot, where results go,
the plugin objects that see every report)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ..errors import ConfigError
from ..kernel.configsets import COVERAGE_SETS, build_set
from ..kernel.request import SUITE_SETS, KernelRequest
from ..kernel.request import add_options as add_kernel_options
from ..kernel.request import from_options as kernel_request
from ..logs.known import load_known
from ..paths import KNOWN_SPLATS_FILE, results_root
from ..vm.accel import ACCELS
from ..vm.qemu import QEMU_ENV
from ..vm.qemu import choose as choose_qemu
from .coverage import CoverageCollector
from .state import STATE_KEY, TestbedState

log = logging.getLogger(__name__)

MARKERS = {
    "p2p": "P2P map/unmap through NVMe CMB p2pmem (boots VMs)",
    "hotunplug": "hot-unplug and replug of P2P providers and clients (boots VMs)",
    "vfio": "VFIO dma-buf export, iommufd import and revoke (boots VMs)",
    "p2pdma_api": "the kernel-side probe module: map type census, dma-buf import, revoke, IOVA API (boots VMs)",
    "aer": "AER errors injected into the ports above P2P providers and dma-buf exporters (boots VMs)",
    "kselftest": "the kernel tree's own tests in a topology: iommufd and VFIO selftests, KUnit at boot "
    "(boots VMs with the selftest kernel)",
    "kunit": "the KUnit suites of the selftest kernel, run at boot (dma-buf, IOMMU page tables)",
    "slow": "long-running: cycles, soaks, debug kernels",
    "ab": "testbed ab and bisect end to end on the demo series (builds kernels, boots VMs; --matrix only)",
    "qemu": "starts real QEMU processes, no guest kernel needed",
    "topology": "topology(*defaults, needs=NEED, matrix=(...), cases=None): what a VM test needs from a "
    "topology (testbed/topology/needs/; the `roles` fixture names the devices) and the shipped "
    "topologies it runs on by default (matrix: more under --matrix); --topology NAME|FILE runs it on "
    "every given topology that has what it needs. cases(topology, config) -> [(id, case)]: one item "
    "per case and topology, None for a case the options leave out",
}


def _choose_qemu(option: str | None, patches: Path | None) -> None:
    """--qemu, resolved once on the controller to a binary (a `built` QEMU is built here, not in
    each worker) and handed to the workers and children in the environment they inherit."""
    try:
        choose_qemu(option, patches)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("testbed", "p2p-testbed VM suites")
    group.addoption(
        "--topology",
        action="append",
        default=[],
        metavar="NAME|FILE",
        help="run every VM test that has what it needs on this topology, a shipped name or your "
        "YAML file (repeatable); the end of the run lists the tests that did not apply and why",
    )
    add_kernel_options(group.addoption, SUITE_SETS)
    group.addoption("--accel", choices=ACCELS, default=os.environ.get("ACCEL", "auto"))
    group.addoption(
        "--qemu",
        default=None,
        metavar="distro|built|PATH",
        help="the QEMU the VMs run on: the host's package (distro, the default), the testbed's pinned "
        "build with switch-local P2P routing and switch ACS (built; made if missing), or a binary "
        f"(default: ${QEMU_ENV} or distro)",
    )
    group.addoption(
        "--qemu-patches",
        type=Path,
        default=None,
        metavar="SERIES",
        help="with --qemu built: your QEMU patches after the testbed's (a patch, an mbox or a directory of "
        "*.patch, read as --patches is); part of the QEMU build's cache key",
    )
    group.addoption(
        "--keep-vm", action="store_true", help="leave shared VMs running at the end (ssh in with `testbed ssh`)"
    )
    group.addoption(
        "--matrix", action="store_true", help="run each VM test on its whole matrix of topologies (nightly)"
    )
    group.addoption(
        "--selftest-suite",
        action="append",
        default=[],
        metavar="SUITE",
        help="the tree's own tests: only this suite (iommu, vfio, kunit; repeatable)",
    )
    group.addoption(
        "--results-dir",
        type=Path,
        metavar="DIR",
        help="where this run's verdicts, run.json and artifacts go (default: results/pytest/<date-time>)",
    )
    group.addoption(
        "--no-spare-vms",
        action="store_true",
        help="boot each destructive test's VM when it starts, not as a warm spare during the test before",
    )
    group.addoption(
        "--coverage",
        action="store_true",
        help="boot the coverage kernel (--kernel-config coverage: gcov for the files of coverage-scope.yaml "
        "or --coverage-scope) and report which lines of the scope each test executed: a table at the end, "
        "lcov, Cobertura XML, HTML and uncovered.md under <results>/coverage",
    )
    group.addoption(
        "--strict-splats",
        action="store_true",
        help="fail on splats the base kernel is known to print (known-splats.yaml) too",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if not hasattr(config, "workerinput"):
        _choose_qemu(config.getoption("qemu"), config.getoption("qemu_patches"))
    run = time.strftime("%Y%m%d-%H%M%S")
    try:
        known = load_known(KNOWN_SPLATS_FILE)
    except ConfigError as exc:  # a broken file is reported before anything boots
        raise pytest.UsageError(str(exc)) from None
    try:
        kernel = kernel_request(config.getoption)
    except ConfigError as exc:  # a bad --kernel/--patches is reported before anything boots
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("coverage"):
        kernel = _coverage_kernel(kernel)
    if hasattr(config, "workerinput"):  # an xdist worker: the controller chose the run's directory
        results = Path(config.workerinput["testbed_results"])
    else:
        results = config.getoption("results_dir") or results_root() / "pytest" / run
    state = config.stash[STATE_KEY] = TestbedState(results.resolve(), known, kernel)
    if build_set(kernel.config_set) in COVERAGE_SETS:
        worker = config.workerinput["workerid"] if hasattr(config, "workerinput") else "main"
        state.coverage = CoverageCollector(state.results, worker)
    _sigterm_stops_the_session()
    config.pluginmanager.register(_OutcomeRecorder(state), "testbed-outcomes")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistController(state), "testbed-xdist")


def _sigterm_stops_the_session() -> None:
    """A SIGTERM (a CI engine's cancel, `testbed ab` stopped) ends the run as Ctrl-C does: the
    fixtures' teardowns stop the VMs, run.json and the JUnit file are written. Python's default
    would end the process at once, its QEMUs going only with it."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    # once: a SIGTERM sent to the whole process group reaches pytest twice (directly and from a
    # parent that forwards it); a second KeyboardInterrupt would cut the teardown the first began
    signal.signal(signal.SIGTERM, _ignore_again)
    raise KeyboardInterrupt(f"signal {signum}")


def _ignore_again(signum: int, frame: object) -> None:
    log.warning("signal %d again: the run is already stopping", signum)


def _coverage_kernel(kernel: KernelRequest) -> KernelRequest:
    """--coverage: the coverage build of the default set (the only one with a coverage twin)."""
    if kernel.bzimage is not None:
        raise pytest.UsageError(
            f"--coverage builds its own kernel (gcov for the scope's files); --kernel {kernel.bzimage} is built "
            "already: give the tree (--kernel TREE) instead"
        )
    if build_set(kernel.config_set) in COVERAGE_SETS:
        return kernel
    if kernel.config_set != "default":
        raise pytest.UsageError(
            f"--coverage boots the coverage config set (default + gcov); it does not combine with "
            f"--kernel-config {kernel.config_set}"
        )
    return kernel.with_config("coverage")


class _XdistController:
    """pytest -n N: the workers boot their own VMs (names, run directories and sockets are
    unique per launch); the controller gives them the run's results directory and merges what
    each saw into one state, so the end of the run and run.json look as with one process."""

    def __init__(self, state: TestbedState) -> None:
        self.state = state

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["testbed_results"] = str(self.state.results)

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        self.state.absorb(getattr(node, "workeroutput", {}).get("testbed"))


class _OutcomeRecorder:
    """Every test's outcome into run.json, and how many VM tests ran (reports carry no config,
    so a plugin object; under xdist the controller's sees every worker's reports)."""

    def __init__(self, state: TestbedState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.state.record.outcome(
            report.nodeid, report.when, report.outcome, hasattr(report, "wasxfail"), report.duration
        )
        if report.when == "setup":
            facts = {
                "topology": getattr(report, "testbed_topology", None),
                "path": getattr(report, "testbed_path", None),
            }
            self.state.record.describe(report.nodeid, **{k: v for k, v in facts.items() if v})
        if getattr(report, "wasxfail", None):
            self.state.record.describe(report.nodeid, xfail=str(report.wasxfail))
        if getattr(report, "testbed_infra", None):
            self.state.record.describe(report.nodeid, infra=str(report.testbed_infra))
        if report.when == "call" and getattr(report, "testbed_topology", None):
            self.state.vm_tests_run += 1
