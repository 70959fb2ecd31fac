"""Entry point registered in pyproject (`pytest11`): options, markers, VM fixtures, splat checks.

pytest -m p2p                       the P2P suite on the topologies each test names
pytest -m hotunplug --kernel-config debug
pytest --topology two-switch-iommu  only tests that can run there, only there
pytest --kernel ~/linux/arch/x86/boot/bzImage   your own build (or a source tree)
pytest --strict-splats              splats of the base kernel (known-splats.yaml) fail too
pytest -m p2p --coverage            kernel coverage of the scope's code, per test (results/.../coverage/)
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..coverage.runreport import report_run
from ..coverage.scope import DEFAULT_SCOPE, load_scope
from ..errors import ConfigError, TestbedError
from ..guestvm import GuestVM
from ..guestvm import window as kernel_window
from ..kernel.artifact import built_patches
from ..kernel.configsets import COVERAGE_SETS, build_set
from ..kernel.request import SUITE_SETS, KernelRequest
from ..kernel.request import add_options as add_kernel_options
from ..kernel.request import from_options as kernel_request
from ..kernel.upstream_fixes import KernelBug, expectation
from ..logs.known import KnownSplat, load_known
from ..paths import KNOWN_SPLATS_FILE, results_root
from ..topology import load_topology
from ..topology.model import Topology
from ..topology.needs import Need, Roles
from . import artifacts
from .coverage import CoverageCollector
from .kselftest import SESSION_KEY, KselftestSession, session_of
from .pool import BootOptions, VmPool, fresh_summary
from .record import BootRecord, SplatRecord, plain
from .report import CensusTable, VerdictTable
from .state import STATE_KEY, KnownSeen, Stray, TestbedState, state_of

if TYPE_CHECKING:
    from _pytest.terminal import TerminalReporter

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
VM_KEY = pytest.StashKey[GuestVM]()  # per item: the VM the test used, for its artifacts
UNCHECKED_KEY = pytest.StashKey[str]()  # per item: why part of it ran without lockdep
WINDOW_KEY = pytest.StashKey[tuple]()  # per item: its console window (first, last line)


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
    group.addoption("--accel", choices=("auto", "kvm", "tcg"), default=os.environ.get("ACCEL", "auto"))
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
    if kernel.base_fixes is False:
        os.environ["TESTBED_BASE_FIXES"] = "0"  # every kernel build of this run (workers inherit it)
    if hasattr(config, "workerinput"):  # an xdist worker: the controller chose the run's directory
        results = Path(config.workerinput["testbed_results"])
    else:
        results = config.getoption("results_dir") or results_root() / "pytest" / run
    state = config.stash[STATE_KEY] = TestbedState(results.resolve(), known, kernel)
    if build_set(kernel.config_set) in COVERAGE_SETS:
        worker = config.workerinput["workerid"] if hasattr(config, "workerinput") else "main"
        state.coverage = CoverageCollector(state.results, worker)
    config.pluginmanager.register(_OutcomeRecorder(state), "testbed-outcomes")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistController(state), "testbed-xdist")


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
        on_vm = any(name == "topology" for name, _ in report.user_properties)
        if on_vm and report.when == "call":
            self.state.vm_tests_run += 1


@functools.cache
def _topology(name: str) -> Topology:
    """A shipped name or a user's file, loaded once per session (problems are usage errors)."""
    try:
        return load_topology(name)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each VM test runs on every topology of the session that has what it needs: by default the
    shipped ones it names (and its `matrix` under --matrix), with --topology the ones given."""
    if "testbed_topology" not in metafunc.fixturenames:
        return
    nodeid = metafunc.definition.nodeid
    mark = metafunc.definition.get_closest_marker("topology")
    if mark is None or not isinstance(mark.kwargs.get("needs"), Need):
        pytest.fail(
            f"{nodeid}: a VM test declares what it needs: @pytest.mark.topology(<defaults>, needs=<Need>) "
            "(testbed/topology/needs/)",
            pytrace=False,
        )
    need: Need = mark.kwargs["needs"]
    state = state_of(metafunc.config)
    state.vm_tests_declared = True
    chosen = metafunc.config.getoption("topology")
    names = list(mark.args)
    if metafunc.config.getoption("matrix"):
        names = list(dict.fromkeys(names + list(mark.kwargs.get("matrix", ()))))
    applicable = []
    for name in chosen or names:
        topo = _topology(name)
        if need.bind(topo) is not None:
            applicable.append(name)
        elif chosen:
            state.not_applicable[(topo.name, nodeid)] = need.why_not(topo)
        else:  # a shipped default that lost what the test needs: the declaration is wrong
            pytest.fail(
                f"{nodeid}: declared for topology '{name}', which lacks what it needs: {need.why_not(topo)}",
                pytrace=False,
            )
    if not applicable:  # not a skip: this test does not apply to the chosen topologies
        state.not_here.add(nodeid)
    ids = [_topology(name).name for name in applicable]
    cases = mark.kwargs.get("cases")
    if cases is not None and "topology_case" in metafunc.fixturenames:
        params = []
        for name, ident in zip(applicable, ids, strict=True):
            listed = cases(_topology(name), metafunc.config)
            params += [
                pytest.param(name, case, id=f"{ident}-{case_id}", marks=_group(name)) for case_id, case in listed
            ]
        # function scope: the case must not split the VM's session-scoped topology group
        metafunc.parametrize(
            ("testbed_topology", "topology_case"), params, indirect=["testbed_topology"], scope="function"
        )
        return
    # session scope groups the tests by topology, so each VM boots once
    params = [pytest.param(name, id=ident, marks=_group(name)) for name, ident in zip(applicable, ids, strict=True)]
    metafunc.parametrize("testbed_topology", params, indirect=True, scope="session")


def _group(topology: str) -> pytest.MarkDecorator:
    """pytest -n N --dist loadgroup: a topology's tests on one worker, so its VMs are shared
    there and its warm spares are used. A mark on the parameter is on the item from its
    creation (one added in collection_modifyitems came too late for xdist's workers)."""
    return pytest.mark.xdist_group(name=topology)


def _not_selected(item: pytest.Item) -> bool:
    """A `cases` function answers None for an item that its own options leave out."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return "topology_case" in params and params["topology_case"] is None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    placeholders = [i for i in items if _not_selected(i)]
    if placeholders:
        config.hook.pytest_deselected(items=placeholders)
        items[:] = [i for i in items if not _not_selected(i)]
    not_here = state_of(config).not_here
    if not_here:
        keep = [i for i in items if i.nodeid.split("[")[0] not in not_here]
        dropped = [i for i in items if i.nodeid.split("[")[0] in not_here]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
    items[:] = group_by_topology(items)
    for item in items:
        topology = _topology_of(item)
        if topology is not None:  # in JUnit, and how the end of the run counts the VM tests that ran
            item.user_properties.append(("topology", _topology(topology).name))


def _topology_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("testbed_topology") if callspec is not None else None


def group_by_topology(items: list[pytest.Item]) -> list[pytest.Item]:
    """The VM tests of one topology run one after another (in their collected order), so the
    pool's shared VMs are not evicted and rebooted between test files; other items keep their place."""
    first: dict[str, int] = {}
    keys = []
    for index, item in enumerate(items):
        topology = _topology_of(item)
        keys.append(index if topology is None else first.setdefault(topology, index))
    order = sorted(range(len(items)), key=lambda i: (keys[i], i))
    return [items[i] for i in order]


@pytest.fixture(scope="session")
def testbed_topology(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def roles(request: pytest.FixtureRequest, testbed_topology: str) -> Roles:
    """The devices that play this test's roles on its topology (`roles.provider`), from its need."""
    mark = request.node.get_closest_marker("topology")
    bound = mark.kwargs["needs"].bind(_topology(testbed_topology)) if mark else None
    assert bound is not None, f"{request.node.nodeid}: collected for {testbed_topology} without its roles"
    return bound


def _require_qemu() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None or shutil.which("qemu-img") is None:
        message = "qemu-system-x86_64/qemu-img not installed (`make deps` installs them)"
        if in_ci():
            pytest.fail(message)  # under CI a suite that cannot run is a failure
        pytest.skip(message)
    return path


@pytest.fixture
def require_qemu() -> str:
    """The QEMU binary; skips locally without it, fails under CI=true."""
    return _require_qemu()


@pytest.fixture(scope="session")
def testbed_pool(request: pytest.FixtureRequest) -> Iterator[VmPool]:
    _require_qemu()
    config = request.config
    accel = config.getoption("accel")
    options = BootOptions(accel=None if accel == "auto" else accel, kernel=state_of(config).kernel)
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def progress(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"testbed: {line}")

    pool = VmPool(options, progress, state_of(config).known)
    state_of(config).pool = pool
    collector = state_of(config).coverage
    if collector is not None:  # what ran since the last test (its end, or the boot) before it goes

        def take_the_rest(guest: GuestVM) -> None:
            collector.take(guest)

        pool.before_shutdown = take_the_rest
    yield pool
    if config.getoption("keep_vm"):
        for vm in pool.shared.values():
            progress(f"kept {vm.machine.name}: testbed ssh {vm.machine.name}")
        return
    pool.close()


def _boot_or_fail(fn: Callable[[], GuestVM]) -> GuestVM:
    """A VM that cannot boot is an error of the run, never a silent skip; one whose guest
    differs from what the oracle assumed fails its first test with both values."""
    try:
        guest = fn()
    except TestbedError as exc:
        pytest.fail(f"VM could not boot: {exc}", pytrace=False)
    if guest.model_problems and not guest.model_reported:
        guest.model_reported = True
        pytest.fail(
            "the guest is not the machine the verdict oracle assumed (fingerprint "
            f"{guest.fingerprint.path if guest.fingerprint else '?'}):\n  " + "\n  ".join(guest.model_problems),
            pytrace=False,
        )
    return guest


@pytest.fixture
def vm(request: pytest.FixtureRequest, testbed_pool: VmPool, testbed_topology: str) -> GuestVM:
    """The shared VM of this test's topology (booted once per session and topology)."""
    guest = _boot_or_fail(lambda: testbed_pool.shared_vm(testbed_topology))
    request.node.stash[VM_KEY] = guest
    return guest


@pytest.fixture
def fresh_vm(request: pytest.FixtureRequest, testbed_pool: VmPool, testbed_topology: str) -> Iterator[GuestVM]:
    """A VM of its own, for tests that destroy state (unplug, reset); shut down afterwards."""
    spare_next = not request.config.getoption("no_spare_vms") and _fresh_follows(request.node, testbed_topology)
    guest = _boot_or_fail(lambda: testbed_pool.fresh(testbed_topology, spare_next))
    request.node.stash[VM_KEY] = guest
    yield guest
    testbed_pool.release(guest)


def _fresh_follows(item: pytest.Item, topology: str) -> bool:
    """Another test that takes a fresh VM of this topology comes later in this process (under
    xdist --dist loadgroup a topology's tests all run on one worker, in collection order)."""
    items = item.session.items
    try:
        index = items.index(item)
    except ValueError:
        return False
    later = items[index + 1 :]
    return any("fresh_vm" in getattr(i, "fixturenames", ()) and _topology_of(i) == topology for i in later)


@pytest.fixture(scope="session")
def verdict_table(request: pytest.FixtureRequest) -> VerdictTable:
    """Rows of (pair, expected, observed, reason), printed after the run and saved as TSV."""
    state = state_of(request.config)
    return state.verdict_table()


@pytest.fixture(scope="session")
def kselftest_session(request: pytest.FixtureRequest) -> KselftestSession:
    """Builds, runs and end-of-run notes of the tree's own tests (tests/vm/test_kselftest.py)."""
    return session_of(request.config)


@pytest.fixture(scope="session")
def testbed_results(request: pytest.FixtureRequest) -> Path:
    """This run's results directory (results/pytest/<run>)."""
    return state_of(request.config).results


@pytest.fixture(scope="session")
def known_splats(request: pytest.FixtureRequest) -> tuple[KnownSplat, ...]:
    return state_of(request.config).known


@pytest.fixture(scope="session")
def census_table(request: pytest.FixtureRequest) -> CensusTable:
    """The probe's kernel answers against `testbed explain`: a line at the end, census.tsv."""
    return state_of(request.config).census_table()


@pytest.fixture
def kernel_bug(request: pytest.FixtureRequest) -> Callable[[GuestVM, KernelBug], None]:
    """`kernel_bug(vm, KNOWN_BUG)` at the start of a case that found a kernel bug: an expected
    failure where the bug is (testbed/kernel/upstream_fixes.py), strict on the base kernel; the
    report the bug leaves, if it has one, is expected there and tolerated where it may be."""
    messages: kernel_window.ExpectedMessages = request.getfixturevalue("kernel_messages")

    def mark(vm: GuestVM, bug: KernelBug) -> None:
        kernel = vm.plan.runtime.kernel
        patches = built_patches(kernel) if kernel is not None else None
        want = expectation(bug, vm.kernel_release() or "", patches)
        if want.xfail:
            request.applymarker(pytest.mark.xfail(strict=want.strict, reason=want.reason))
            if bug.splat is not None:
                messages.expect_splat(*bug.splat, want.reason, required=want.strict)

    return mark


@pytest.fixture
def kernel_messages() -> kernel_window.ExpectedMessages:
    """Declare kernel messages the test provokes: `kernel_messages.expect(r"DMAR: .*fault")`."""
    return kernel_window.ExpectedMessages()


@pytest.fixture(autouse=True)
def _kernel_window(request: pytest.FixtureRequest) -> Iterator[None]:
    """Begin/end markers around every VM test; splats in between fail it."""
    uses = [name for name in ("fresh_vm", "vm") if name in request.fixturenames]
    if not uses:
        yield
        return
    guest: GuestVM = request.getfixturevalue(uses[0])
    expected: kernel_window.ExpectedMessages = request.getfixturevalue("kernel_messages")
    locks = kernel_window.debug_locks(guest)
    coverage = state_of(request.config).coverage
    if coverage is not None:  # the counters so far are not this test's
        coverage.take(guest)
    first = kernel_window.begin(guest, request.node.nodeid)
    yield
    strict = request.config.getoption("strict_splats")
    verdict = kernel_window.end(guest, request.node.nodeid, first, expected, locks, state_of(request.config).known)
    # after the window is judged: a guest too broken to answer must not hide its splat
    problems = _take_counters(coverage, guest, request.node.nodeid)
    request.node.stash[WINDOW_KEY] = verdict.lines
    log = guest.machine.console_log
    record = state_of(request.config).record
    record.vms[request.node.nodeid] = guest.machine.name
    if guest.fingerprint is not None:  # which machine this result came from
        request.node.user_properties.append(("fingerprint", f"{guest.fingerprint.digest} {guest.fingerprint.path}"))
    for splat in verdict.splats:
        record.splats.append(SplatRecord.of(splat, request.node.nodeid, None, log))
        problems.append(
            f"kernel splat during the test: {splat.signature} "
            f"({log}:{splat.first_line}-{splat.last_line})\n{splat.excerpt}"
        )
    for splat, entry in verdict.known:
        record.splats.append(SplatRecord.of(splat, request.node.nodeid, entry, log))
        state_of(request.config).known_seen.append(KnownSeen.of(request.node.nodeid, log, splat, entry))
        if strict:
            problems.append(
                f"known base-kernel splat during the test ({entry.where}; failing because "
                f"of --strict-splats): {splat.signature} "
                f"({log}:{splat.first_line}-{splat.last_line})\n{splat.excerpt}"
            )
    for pattern in verdict.missing:
        problems.append(f"expected kernel message did not appear: {pattern}")
    if verdict.lockdep_lost and (strict or not verdict.lockdep_lost_to_known):
        problems.append(
            "lockdep turned itself off during the test (debug_locks 1 -> 0): nothing after this point is lock-checked"
        )
    unchecked = verdict.lockdep_off_at_start or verdict.lockdep_lost_to_known
    if unchecked:
        why = (
            "lockdep was already off when the test began (an earlier report in this VM)"
            if verdict.lockdep_off_at_start
            else "a known base-kernel lockdep report turned lockdep off during the test"
        )
        state_of(request.config).unchecked.append(request.node.nodeid)
        record.unchecked.append(request.node.nodeid)
        request.node.stash[UNCHECKED_KEY] = why
        request.node.user_properties.append(("lock_checked", f"no: {why}"))
        if strict:
            problems.append(f"not lock-checked (failing because of --strict-splats): {why}")
    if not verdict.complete:
        problems.append(f"the end marker never reached the console ({guest.machine.console_log})")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def _take_counters(coverage: CoverageCollector | None, guest: GuestVM, nodeid: str) -> list[str]:
    """--coverage: the test's own counters (named as run.json names the test, without xdist's
    @group); a problem, not an exception, when the guest cannot give them."""
    if coverage is None or not guest.machine.process.alive():
        return []
    try:
        coverage.take(guest, plain(nodeid))
    except TestbedError as exc:
        return [f"kernel coverage: the test's counters could not be read: {exc}"]
    return []


def pytest_report_teststatus(
    report: pytest.TestReport, config: pytest.Config
) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    """A test that passed with part of it not lock-checked is not a plain pass: its teardown
    reports "NOT LOCK-CHECKED" (U), counted in the final line, listed in the summary."""
    if report.when == "teardown" and report.passed and getattr(report, "testbed_unchecked", None):
        return "not lock-checked", "U", ("NOT LOCK-CHECKED", {"yellow": True})
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "teardown" and UNCHECKED_KEY in item.stash:
        report.testbed_unchecked = item.stash[UNCHECKED_KEY]
    guest = item.stash.get(VM_KEY, None)
    if not report.failed or guest is None or report.when == "setup" and call.excinfo is None:
        return
    dest = artifacts.test_dir(state_of(item.config).results, item.nodeid)
    written = artifacts.collect(guest, dest, item.stash.get(WINDOW_KEY, None))
    report.sections.append(("testbed artifacts", f"{dest}\n  " + "\n  ".join(written)))


def _no_vm_test_ran(config: pytest.Config) -> str | None:
    """Under CI=true a selection meant for VMs that ran none is a failure: why, or None."""
    state = state_of(config)
    if not in_ci() or hasattr(config, "workerinput") or state.vm_tests_run or config.getoption("collectonly"):
        return None
    chosen = config.getoption("topology")
    if not (chosen or state.vm_tests_declared):
        return None  # a selection without VM tests (the unit tests)
    where = f" on {', '.join(chosen)}" if chosen else ""
    return f"CI=true: no VM test ran{where} (a selection that runs no VM test proves nothing)"


def _boot_summary(terminalreporter: TerminalReporter, state: TestbedState) -> None:
    for name, seconds in state.boot_seconds:
        terminalreporter.write_line(f"testbed: booted {name} to SSH in {seconds:.1f}s")
    fresh = fresh_summary(state.fresh_waits)
    if fresh:
        terminalreporter.write_line(f"testbed: {fresh}")
    for why in state.boot_retries:
        terminalreporter.write_line(f"testbed: booted again after a stalled boot: {why}", yellow=True)


def _not_applicable_summary(terminalreporter: TerminalReporter, state: TestbedState, none_ran: str | None) -> None:
    """Per chosen topology, the tests that did not apply and the need it lacks; and under CI,
    that no VM test ran."""
    if none_ran:
        terminalreporter.write_line(f"testbed: {none_ran}", red=True)
    by_topology: dict[str, list[tuple[str, str]]] = {}
    for (topology, nodeid), why in sorted(state.not_applicable.items()):
        by_topology.setdefault(topology, []).append((nodeid, why))
    if not by_topology:
        return
    terminalreporter.section("tests that do not apply (what the topology lacks)")
    for topology, tests in by_topology.items():
        terminalreporter.write_line(f"{topology}: {len(tests)} test(s) not applicable")
        for nodeid, why in tests:
            terminalreporter.write_line(f"  {nodeid}: needs {why}")


def pytest_terminal_summary(terminalreporter: TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    state = state_of(config)
    _not_applicable_summary(terminalreporter, state, _no_vm_test_ran(config))
    table = state.verdicts
    if table is not None and table.rows:
        path = state.results / "verdicts.tsv"
        table.write_tsv(path)
        terminalreporter.section("P2P verdicts")
        for line in table.lines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(also in {path})")
    census = state.census
    if census is not None and census.rows:
        path = state.results / "census.tsv"
        census.write_tsv(path)
        terminalreporter.section("P2PDMA census: the kernel's answers (probe module)")
        terminalreporter.write_line(census.summary(), red=bool(census.disagreements()))
        for line in census.disagreements():
            terminalreporter.write_line(line, red=True)
        terminalreporter.write_line(f"(every pair in {path})")
    if state.kselftest_lines:
        terminalreporter.section("the tree's own tests: skips, known failures, build fixes")
        for line in state.kselftest_lines:
            terminalreporter.write_line(line)
        if state.kselftest_noted:
            tsv = state.results / "kselftest-known.tsv"
            rows = ["test\toutcome\treason"] + ["\t".join(n) for n in state.kselftest_noted]
            tsv.parent.mkdir(parents=True, exist_ok=True)
            tsv.write_text("\n".join(rows) + "\n")
            terminalreporter.write_line(f"(every skip and known failure in {tsv})")
    _boot_summary(terminalreporter, state)
    strict = config.getoption("strict_splats")
    for stray in state.strays:
        if stray.known is None or strict:
            terminalreporter.write_line(
                f"testbed: SPLAT outside any test in {stray.vm}: {stray.signature} "
                f"({stray.console}:{stray.first_line}-{stray.last_line})",
                red=True,
            )
            for line in stray.excerpt.splitlines():
                terminalreporter.write_line("    " + line, red=True)
    _base_fixes_summary(terminalreporter, state.record.boots)
    _coverage_summary(terminalreporter, state.coverage_lines)
    _known_summary(terminalreporter, state.known_seen, strict, state.results / "known-splats.tsv")
    _signature_summary(terminalreporter, state.record.splats)
    unchecked = state.unchecked
    if unchecked:
        terminalreporter.write_line(
            f"testbed: {len(unchecked)} test(s) ran in part without lockdep (off from an earlier "
            "report in the same VM, or turned off by a known one): NOT LOCK-CHECKED, not a plain pass:",
            yellow=True,
        )
        for nodeid in unchecked:
            terminalreporter.write_line(f"  {nodeid}")


def _coverage_summary(terminalreporter: TerminalReporter, lines: list[str]) -> None:
    if lines:
        terminalreporter.section("kernel coverage of the scope (pytest --coverage)")
        for line in lines:
            terminalreporter.write_line(line, red=line.startswith("kernel coverage: no report"))


def _base_fixes_summary(terminalreporter: TerminalReporter, boots: list[BootRecord]) -> None:
    """The base kernel bugs this run's kernels carried a fix for (kernel-configs/base-fixes)."""
    applied: dict[str, tuple[str, set[str]]] = {}
    for boot in boots:
        fixes = boot.kernel.get("base_fixes")
        for fix in fixes if isinstance(fixes, list) else []:
            why, kernels = applied.setdefault(str(fix.get("name")), (str(fix.get("why") or ""), set()))
            kernels.add(f"{boot.kernel.get('config_set')} {boot.kernel.get('key')}")
    if not applied:
        return
    terminalreporter.section("base fixes in the kernels (kernel-configs/base-fixes; --no-base-fixes: none)")
    for name, (why, kernels) in applied.items():
        terminalreporter.write_line(f"{name} (in {', '.join(sorted(kernels))}): {' '.join(why.split())[:300]}")


def _signature_summary(terminalreporter: TerminalReporter, records: list[SplatRecord]) -> None:
    """Every splat of the run by signature, with how often it was reported: the line two
    runs are compared by (testbed ab)."""
    if not records:
        return
    counts: dict[tuple[str, str | None], int] = {}
    for r in records:
        counts[(r.signature, r.known)] = counts.get((r.signature, r.known), 0) + 1
    terminalreporter.section("kernel splats by signature")
    for (signature, known), n in counts.items():
        tag = f"  [known: {known}]" if known else ""
        terminalreporter.write_line(f"{n:4d}  {signature}{tag}", red=known is None, yellow=known is not None)


def _known_summary(terminalreporter: TerminalReporter, seen: list[KnownSeen], strict: bool, tsv: Path) -> None:
    """Known base-kernel splats are never silent: each is listed with the entry that knows it
    (on the terminal and in known-splats.tsv beside the verdicts, for CI logs that get cut)."""
    if not seen:
        return
    terminalreporter.section("known kernel splats (known-splats.yaml)")
    entries: dict[str, KnownSeen] = {}
    rows = ["where\tkind\tsignature\tconsole\tentry"]
    for k in seen:
        entries[k.entry] = k
        terminalreporter.write_line(f"{k.where}: {k.signature} ({k.console}:{k.first_line}) -> {k.entry}")
        rows.append("\t".join((k.where, k.kind, k.signature, f"{k.console}:{k.first_line}", k.entry)))
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text("\n".join(rows) + "\n")
    terminalreporter.write_line(f"(also in {tsv})")
    for name, k in entries.items():
        terminalreporter.write_line(f"{name}: {k.why}")
    if any(k.entry_kind == "lockdep" for k in entries.values()):
        terminalreporter.write_line(
            "lockdep turns itself off after its first report: what ran after a "
            "known lockdep splat in the same VM was not lock-checked"
        )
    terminalreporter.write_line(
        "they failed the run (--strict-splats)"
        if strict
        else "they did not fail the run; --strict-splats makes them fail"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = state_of(config)
    strict = config.getoption("strict_splats")
    _collect(state, config, strict)
    if hasattr(config, "workeroutput"):  # an xdist worker: the controller reports and writes
        config.workeroutput["testbed"] = state.export()
        return
    if any(s.known is None or strict for s in state.strays) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _no_vm_test_ran(config) and session.exitstatus in (0, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state.record.outcomes and not config.getoption("collectonly"):
        state.record.write(state.results)
    if state.coverage is not None and state.vm_tests_run and not _coverage_report(state):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _coverage_report(state: TestbedState) -> bool:
    """--coverage: the run's reports (testbed/coverage/runreport.py); False when they failed."""
    assert state.coverage is not None
    scope_file = state.kernel.coverage_scope or DEFAULT_SCOPE
    try:
        state.coverage_lines = report_run(state.coverage.root, load_scope(scope_file), progress=lambda _: None)
    except TestbedError as exc:
        state.coverage_lines = [f"kernel coverage: no report: {exc}"]
        return False
    return True


def _collect(state: TestbedState, config: pytest.Config, strict: bool) -> None:
    """What this process's VM pool and kselftest session saw, into the state (plain data)."""
    selftests = config.stash.get(SESSION_KEY, None)
    if selftests is not None:
        state.kselftest_lines += selftests.summary()
        state.kselftest_noted += [(n.nodeid, n.what, n.reason) for n in selftests.noted]
    pool = state.pool
    if pool is None:
        return
    state.boot_seconds += pool.boot_seconds
    state.fresh_waits += pool.fresh_waits
    state.boot_retries += pool.boot_retries
    for s in pool.stray_splats:
        where = f"outside any test in {s.vm}"
        state.strays.append(
            Stray(s.vm, str(s.console_log), s.splat.first_line, s.splat.last_line, s.splat.signature,
                  s.known.where if s.known else None, s.splat.excerpt)
        )  # fmt: skip
        state.record.splats.append(SplatRecord.of(s.splat, where, s.known, s.console_log))
        if s.known is not None and not strict:
            state.known_seen.append(KnownSeen.of(where, s.console_log, s.splat, s.known))
    for launch in pool.launches:
        kept = None
        if launch.fingerprint is not None and launch.fingerprint.is_file():  # kept with the run's results
            kept = state.results / "fingerprints" / f"{launch.vm}.json"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(launch.fingerprint, kept)
        state.record.boot(launch.topology, launch.vm, launch.bzimage, launch.accel, kept, launch.kernel_config)
