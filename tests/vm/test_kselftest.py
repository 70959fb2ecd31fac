"""The kernel tree's own tests inside the topology: iommufd and VFIO selftests, KUnit at boot.

The programs are built from the tree the guest kernel was built from (the Debian source, or
`--kernel TREE --patches MBOX` with the series applied) against its own uAPI headers, and the
guest boots that tree's selftest kernel (kernel-configs/selftest.config on top of the session's
config set). Each program runs once per device it takes (one endpoint of each kind vfio-pci can
take: NVMe, ivshmem, edu) and each case it reports is one item here, so JUnit lists them:

  test_selftest[<topo>-<program>@<device>-<case>]  the case's own verdict; a kernel splat
        logged while it ran fails it; a skip carries the test's reason; a failure declared in
        known-failures.yaml for this release is an expected failure, listed at the end
  test_selftest[<topo>-<program>@<device>]  the run: it ended (no timeout, no crash), every
        case the program lists reported, no splat while it ran; a program that cannot list its
        cases on the host (it opens the device first) is judged here case by case
  test_kunit[<topo>-kunit-<suite.case>]  the KUnit suites, run while the same VM booted
  test_suite_ran[<topo>-<suite>]  under CI=true a suite that ran nothing fails

Raw KTAP and the kernel log of each run are kept under results/pytest/<run>/kselftest/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.guestvm import GuestVM
from testbed.kselftest.run import ProgramRun
from testbed.logs.ktap import KtapCase, Status, parse_ktap
from testbed.pytest_plugin.kselftest import KselftestSession, KunitCase, SelftestCase, session_of
from testbed.pytest_plugin.options import in_ci
from testbed.topology import Topology
from testbed.topology.needs import ANY

pytestmark = pytest.mark.kselftest

SHIPPED = ("kselftest",)
# every IOMMU mode the shipped topologies have: intel translated and passthrough, virtio
MATRIX = ("two-switch-iommu", "two-switch-iommu-pt", "p2pdma-thru-virtio-iommu", "vfio-dmabuf")
LOG_LINES = 60


def _selftest_cases(topo: Topology, config: pytest.Config) -> list[tuple[str, object]]:
    return session_of(config).cases_for(topo, "selftest")


def _kunit_cases(topo: Topology, config: pytest.Config) -> list[tuple[str, object]]:
    return session_of(config).cases_for(topo, "kunit")


def _suite_cases(topo: Topology, config: pytest.Config) -> list[tuple[str, object]]:
    return [(suite, suite) for suite in session_of(config).suites_for(topo)]


def case_text(case: KtapCase) -> str:
    lines = list(case.log)
    if len(lines) > LOG_LINES:
        lines = lines[: LOG_LINES // 2] + [f"... ({len(lines) - LOG_LINES} lines)"] + lines[-LOG_LINES // 2 :]
    return "\n".join(lines)


def judge_case(
    request: pytest.FixtureRequest,
    session: KselftestSession,
    topology: str,
    vm: GuestVM,
    suite: str,
    case: KtapCase | None,
    test: str,
    device_kind: str | None,
    splats: list,
    where: str,
    console_log: Path,
) -> None:
    """Pass, skip with the test's reason, expected failure from known-failures.yaml, or fail.
    `console_log`: where the splats' line numbers point (the VM the program or KUnit ran in)."""
    nodeid = request.node.nodeid
    if case is None:
        session.count(topology, suite, False)
        pytest.fail(f"{test}: the program listed this case but never reported it ({where})", pytrace=False)
    splat_text = "\n\n".join(
        f"kernel splat while it ran: {s.kind}: {s.title} ({console_log}:{s.first_line}-{s.last_line})\n{s.excerpt}"
        for s in splats
    )
    if case.status is Status.SKIP:
        session.count(topology, suite, False)
        if splats:
            pytest.fail(splat_text, pytrace=False)
        reason = case.directive.removeprefix("SKIP").strip() or "(the test gave no reason)"
        undeclared = session.skipped(nodeid, test, device_kind, vm.kernel_release(), reason)
        if undeclared:
            pytest.fail(f"{undeclared} ({where})", pytrace=False)
        pytest.skip(reason)
    session.count(topology, suite, True)
    if case.status is Status.PASS:
        if splats:
            pytest.fail(f"{test} passed, but the kernel printed a splat while it ran\n\n{splat_text}", pytrace=False)
        return
    release = vm.kernel_release()
    output = "\n".join(case.log)
    known = session.known_failure(test, device_kind, release, output)
    if known is not None and not splats:
        session.note(nodeid, "known", f"{known.where}: {known.why}")
        pytest.xfail(f"known failure of the base tree ({known.where})")
    status = "did not finish" if case.status is Status.ERROR else "failed"
    pytest.fail(
        f"{test} {status} ({where})\n{case_text(case)}" + (f"\n\n{splat_text}" if splats else ""), pytrace=False
    )


@pytest.mark.topology(*SHIPPED, matrix=MATRIX, needs=ANY, cases=_selftest_cases)
def test_selftest(
    request,
    testbed_pool,
    testbed_topology,
    topology_case: SelftestCase,
    kselftest_session,
    testbed_results,
    known_splats,
):
    session = kselftest_session
    vm = session.vm(testbed_pool, testbed_topology)
    run = session.run(
        vm, testbed_topology, topology_case.program, topology_case.device, testbed_results, known_splats, testbed_pool
    )
    kind = vm.topology.endpoint(topology_case.device).kind.value if topology_case.device else None
    where = f"raw output {run.output}, kernel log {run.window_log}"
    suite = topology_case.program.suite
    if topology_case.case is not None:
        case = run.case(topology_case.case)
        judge_case(
            request,
            session,
            testbed_topology,
            vm,
            suite,
            case,
            topology_case.test,
            kind,
            [s.splat for s in run.new_splats(topology_case.case)],
            where,
            run.console_log,
        )
        return
    judge_run(request, session, testbed_topology, vm, run, topology_case, kind, where)


def run_problems(
    session: KselftestSession, topology: str, vm: GuestVM, run: ProgramRun, kind: str | None, where: str
) -> list[str]:
    """What is wrong with a program's run as a whole (and, for a program pytest could not list,
    with its cases)."""
    problems = []
    if run.timed_out:
        problems.append(f"{run.id} did not finish in {run.program.timeout_s:.0f}s and was killed")
    elif run.exit_status < 0 or run.exit_status > 4:
        problems.append(f"{run.id} ended with status {run.exit_status} (killed by a signal?)")
    problems += [
        f"kernel splat during {run.id}, between cases: {s.splat.kind}: {s.splat.title} "
        f"({run.console_log}:{s.splat.first_line}-{s.splat.last_line})\n{s.splat.excerpt}"
        for s in run.new_splats()
        if s.case is None
    ]
    if run.lockdep_lost:
        problems.append(f"lockdep turned itself off during {run.id}: what ran after it was not lock-checked")
    listed = session.listed(run.program)
    if listed is not None:
        missing = [c for c in listed if run.case(c) is None]
        if missing and not problems:
            problems.append(f"{len(missing)} listed case(s) never reported, first {missing[0]} ({where})")
    # the cases no test item stands for (a program pytest could not list, or a case the listing
    # lacked) are judged here
    unlisted = [c for c in run.report.cases if listed is None or c.name not in listed] if run.report else []
    for case in unlisted:
        if case.status in (Status.FAIL, Status.ERROR):
            test = f"{run.program.id}:{case.name}"
            if session.known_failure(test, kind, vm.kernel_release(), "\n".join(case.log)) is None:
                lacking = "" if listed is None else " (a case the host's listing lacks)"
                problems.append(f"{case.name} failed{lacking}\n{case_text(case)}")
        session.count(topology, run.program.suite, case.status in (Status.PASS, Status.FAIL))
    return problems


def judge_run(
    request: pytest.FixtureRequest,
    session: KselftestSession,
    topology: str,
    vm: GuestVM,
    run: ProgramRun,
    topology_case: SelftestCase,
    kind: str | None,
    where: str,
) -> None:
    problems = run_problems(session, topology, vm, run, kind, where)
    if problems:
        pytest.fail("\n\n".join(problems) + f"\n({where})", pytrace=False)
    if run.report is not None and run.report.cases:
        return
    text = run.output.read_text(errors="replace").strip()
    if run.exit_status == 4:  # KSFT_SKIP before the harness started: the program says why
        first = text.splitlines()[0] if text else "exit status 4 (KSFT_SKIP), no reason printed"
        reason = re.sub(r"^1\.\.0\s*#\s*SKIP\s*", "", first)  # "1..0 # SKIP why": the plan says it
        undeclared = session.skipped(request.node.nodeid, topology_case.test, kind, vm.kernel_release(), reason)
        if undeclared:
            pytest.fail(f"{undeclared} ({where})", pytrace=False)
        pytest.skip(reason)
    known = session.known_failure(topology_case.test, kind, vm.kernel_release(), text)
    if known is not None:
        session.note(request.node.nodeid, "known", f"{known.where}: {known.why}")
        pytest.xfail(f"known failure of the base tree ({known.where})")
    # exit 0 too: a program that says nothing has checked nothing
    pytest.fail(
        f"{run.id} exited {run.exit_status} without reporting any case ({where})\n{text[-3000:]}", pytrace=False
    )


@pytest.mark.kunit
@pytest.mark.topology(*SHIPPED, matrix=MATRIX, needs=ANY, cases=_kunit_cases)
def test_kunit(request, testbed_pool, testbed_topology, topology_case: KunitCase, kselftest_session, known_splats):
    session = kselftest_session
    vm = session.vm(testbed_pool, testbed_topology)
    run = session.kunit(vm, testbed_topology, known_splats)
    where = f"console {vm.machine.console_log}"
    if topology_case.case is None:
        assert run.report is not None, f"the kernel ran no KUnit suite at boot ({where})"
        stray = [s for s, c, k in run.splats if c is None and k is None]
        assert not stray, "kernel splat during the KUnit run, outside any case:\n" + "\n".join(
            f"{s.kind}: {s.title} ({where}:{s.first_line})\n{s.excerpt}" for s in stray
        )
        return
    judge_case(
        request,
        session,
        testbed_topology,
        vm,
        "kunit",
        run.cases.get(topology_case.case),
        topology_case.test,
        None,
        run.new_splats(topology_case.case),
        where,
        vm.machine.console_log,  # KUnit ran while this VM booted
    )


def _by_hand_cases(topo: Topology, config: pytest.Config) -> list[tuple[str, object]]:
    chosen = [p for p in session_of(config).programs() if p.name == "iommufd"]
    return [(p.name, p) for p in chosen] or [("not-selected", None)]


@pytest.mark.topology(*SHIPPED, needs=ANY, cases=_by_hand_cases)
def test_relay_matches_a_run_by_hand(
    testbed_pool, testbed_topology, topology_case, kselftest_session, testbed_results, known_splats
):
    """The harness's path (relay, KTAP parser) reports what the program says when run by hand over SSH."""
    session = kselftest_session
    program = topology_case
    vm = session.vm(testbed_pool, testbed_topology)
    run = session.run(vm, testbed_topology, program, None, testbed_results, known_splats, testbed_pool)
    vm = session.vm(testbed_pool, testbed_topology)  # the VM it ran in, if its first one stopped
    remote = f"/run/testbed/kselftest/{program.suite}/{program.name}"
    by_hand = vm.run(f"cd /run/testbed/kselftest && {remote}", timeout=program.timeout_s)
    reports = parse_ktap(by_hand.stdout.splitlines())
    assert reports, f"{remote} printed no KTAP when run by hand:\n{by_hand.stdout[-2000:]}"
    hand = {c.name: c.status for c in reports[0].cases}
    harness = {c.name: c.status for c in run.report.cases} if run.report else {}
    listed = session.listed(program)
    assert listed, f"{program.id}: the harness listed none of its cases on the host"
    assert len(hand) == len(listed), f"a run by hand reported {len(hand)} cases, the host's listing {len(listed)}"
    assert harness, f"the harness's run of {program.id} reported no case"
    differ = sorted(n for n in hand.keys() | harness.keys() if hand.get(n) != harness.get(n))
    assert not differ, f"{len(differ)} case(s) differ between the harness and a run by hand: {differ[:10]}"


@pytest.mark.topology(*SHIPPED, matrix=MATRIX, needs=ANY, cases=_suite_cases)
def test_suite_ran(testbed_topology, topology_case: str, kselftest_session):
    """Under CI=true a suite that ran nothing (every case skipped, or none collected) fails."""
    ran = kselftest_session.ran.get((testbed_topology, topology_case), 0)
    if ran:
        return
    message = f"the {topology_case} suite ran no case on {testbed_topology} (all skipped or not collected)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
