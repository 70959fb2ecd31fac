"""The fixtures of the VM suites: the topology and its roles, the VM pool and its VMs, the
run's tables, known kernel bugs and expected messages, and the kernel window around every
VM test (judged by judge.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..errors import ConfigError, InfraError, TestbedError
from ..guestvm import GuestVM
from ..guestvm import window as kernel_window
from ..kernel.artifact import built_patches
from ..kernel.upstream_fixes import BugSite, KernelBug, KnownKernelBug, expectation
from ..logs.known import KnownSplat
from ..runs.record import plain
from ..topology.needs import Roles
from .collection import _topology, _topology_of
from .coverage import CoverageCollector
from .judge import judge_window
from .kselftest import KselftestSession, session_of
from .options import in_ci
from .pool import BootOptions, VmPool
from .report import CensusTable, VerdictTable
from .state import state_of

VM_KEY = pytest.StashKey[GuestVM]()  # per item: the VM the test used, for its artifacts


# per item: why it failed for the machinery or the input, not the kernel (run.json, testbed ab)
INFRA_KEY = pytest.StashKey[str]()


def not_the_kernels(exc: BaseException) -> str | None:
    """What an exception says when it is the machinery's (InfraError) or the input's
    (ConfigError: a series that does not apply or build), not a verdict on the kernel."""
    if not isinstance(exc, (InfraError, ConfigError)):
        return None
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}"


UNCHECKED_KEY = pytest.StashKey[str]()  # per item: why part of it ran without lockdep


WINDOW_KEY = pytest.StashKey[tuple]()  # per item: its console window (first, last line)


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


def _boot_or_fail(node: pytest.Item, fn: Callable[[], GuestVM]) -> GuestVM:
    """A VM that cannot boot is an error of the run, never a silent skip; one whose guest
    differs from what the oracle assumed fails its first test with both values."""
    try:
        guest = fn()
    except TestbedError as exc:
        why = not_the_kernels(exc)
        if why is not None:
            node.stash[INFRA_KEY] = why
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
    guest = _boot_or_fail(request.node, lambda: testbed_pool.shared_vm(testbed_topology))
    request.node.stash[VM_KEY] = guest
    if not request.config.getoption("no_spare_vms") and _fresh_follows(request.node, testbed_topology):
        # the first destructive test of the topology (they run after its shared ones) finds it booted
        testbed_pool.prefetch_spare(testbed_topology)
    return guest


@pytest.fixture
def fresh_vm(request: pytest.FixtureRequest, testbed_pool: VmPool, testbed_topology: str) -> Iterator[GuestVM]:
    """A VM of its own, for tests that destroy state (unplug, reset); shut down afterwards."""
    spare_next = not request.config.getoption("no_spare_vms") and _fresh_follows(request.node, testbed_topology)
    guest = _boot_or_fail(request.node, lambda: testbed_pool.fresh(testbed_topology, spare_next))
    request.node.stash[VM_KEY] = guest
    yield guest
    testbed_pool.release(guest)


# per session: (nodeid -> index in the run's order, topology -> index of its last fresh_vm test)
LAST_FRESH_KEY = pytest.StashKey[tuple[dict[str, int], dict[str | None, int]]]()


def _fresh_follows(item: pytest.Item, topology: str) -> bool:
    """Another test that takes a fresh VM of this topology comes later in this process (under
    xdist --dist loadgroup a topology's tests all run on one worker, in collection order)."""
    session = item.session
    if LAST_FRESH_KEY not in session.stash:  # once: every shared-VM test asks
        where: dict[str, int] = {}
        last_fresh: dict[str | None, int] = {}
        for index, i in enumerate(session.items):
            where[i.nodeid] = index
            if "fresh_vm" in getattr(i, "fixturenames", ()):
                last_fresh[_topology_of(i)] = index
        session.stash[LAST_FRESH_KEY] = (where, last_fresh)
    where, last_fresh = session.stash[LAST_FRESH_KEY]
    at = where.get(item.nodeid)
    return at is not None and at < last_fresh.get(topology, -1)


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
def kernel_bug(request: pytest.FixtureRequest) -> Callable[[GuestVM, KernelBug], BugSite]:
    """`site = kernel_bug(vm, KNOWN_BUG)` at the start of a case that found a kernel bug, and
    `with site:` around the assertions that find it: an expected failure where the bug is
    (testbed/kernel/upstream_fixes.py), strict on the base kernel, taken only from those
    assertions (KnownKernelBug): any other failure of the case stays red. The report the bug
    leaves, if it has one, is expected there and tolerated where it may be."""
    messages: kernel_window.ExpectedMessages = request.getfixturevalue("kernel_messages")

    def mark(vm: GuestVM, bug: KernelBug) -> BugSite:
        kernel = vm.plan.runtime.kernel
        patches = built_patches(kernel) if kernel is not None else None
        want = expectation(bug, vm.kernel_release() or "", patches)
        if want.xfail:
            request.applymarker(pytest.mark.xfail(strict=want.strict, reason=want.reason, raises=KnownKernelBug))
            if bug.splat is not None:
                messages.expect_splat(*bug.splat, want.reason, required=want.strict)
        return BugSite(want)

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
    coverage = state_of(request.config).coverage
    if coverage is not None:  # the counters so far are not this test's
        coverage.take(guest)
    opened = kernel_window.begin(guest, request.node.nodeid)
    yield
    strict = request.config.getoption("strict_splats")
    findings = kernel_window.end(guest, request.node.nodeid, opened, expected, state_of(request.config).known)
    # after the window is judged: a guest too broken to answer must not hide its splat
    counter_problems = _take_counters(coverage, guest, request.node.nodeid)
    request.node.stash[WINDOW_KEY] = findings.lines
    state = state_of(request.config)
    state.record.vms[request.node.nodeid] = guest.machine.name
    judged = judge_window(findings, request.node.nodeid, guest.machine.console_log, strict)
    state.record.splats += judged.splats
    state.known_seen += judged.known_seen
    if judged.unchecked:
        state.unchecked.append(request.node.nodeid)
        state.record.unchecked.append(request.node.nodeid)
        request.node.stash[UNCHECKED_KEY] = judged.unchecked
    problems = [*counter_problems, *judged.problems]
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
