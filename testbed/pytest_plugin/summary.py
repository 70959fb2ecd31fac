"""The end of the run: the terminal summary (verdicts, census, the tree's own tests, boots,
splats, base fixes, coverage, known splats) and the session's finish (run.json, exit status,
the coverage report, what the pool and the kselftest session saw)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..coverage.runreport import report_run
from ..coverage.scope import DEFAULT_SCOPE, load_scope
from ..errors import TestbedError
from ..guestvm.machine_fingerprint import digest_of
from ..guestvm.machine_fingerprint import load as load_fingerprint
from ..runs.record import BootRecord, SplatRecord
from .junit import add_suite_properties
from .kselftest import SESSION_KEY, noted_summary
from .pool import fresh_summary
from .state import KnownSeen, Stray, TestbedState, state_of
from .timing import time_lines

if TYPE_CHECKING:
    from _pytest.terminal import TerminalReporter
from .options import in_ci


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
        terminalreporter.write_line(f"testbed: booted {name} to ready in {seconds:.1f}s")
    fresh = fresh_summary(state.fresh_waits)
    if fresh:
        terminalreporter.write_line(f"testbed: {fresh}")
    for why in state.boot_retries:
        terminalreporter.write_line(f"testbed: booted again after a stalled boot: {why}", yellow=True)
    for why in state.leaks_unchecked:
        terminalreporter.write_line(f"testbed: NOT LEAK-CHECKED, a VM of a kmemleak kernel: {why}", yellow=True)


def _time_summary(terminalreporter: TerminalReporter, state: TestbedState) -> None:
    if not state.boot_seconds:  # a run without VMs: its time is pytest's own summary
        return
    lines = time_lines(state.record.durations, state.boot_seconds, state.fresh_waits)
    if lines:
        terminalreporter.section("where the time went")
        for line in lines:
            terminalreporter.write_line(line)


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
    selftest_lines = state.kselftest_lines + noted_summary(state.kselftest_noted)
    if selftest_lines:
        terminalreporter.section("the tree's own tests: skips, known failures, build fixes")
        for line in selftest_lines:
            terminalreporter.write_line(line)
        if state.kselftest_noted:
            tsv = state.results / "kselftest-known.tsv"
            rows = ["test\toutcome\treason"] + ["\t".join(n) for n in state.kselftest_noted]
            tsv.parent.mkdir(parents=True, exist_ok=True)
            tsv.write_text("\n".join(rows) + "\n")
            terminalreporter.write_line(f"(every skip and known failure in {tsv})")
    _boot_summary(terminalreporter, state)
    _time_summary(terminalreporter, state)
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


@pytest.hookimpl(tryfirst=True)  # before pytest's junitxml writes its file
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
        state.record.selection = _selection(config)
        state.record.write(state.results)
    add_suite_properties(config, state.record)
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


def _selection(config: pytest.Config) -> list[str]:
    """What chose the run's tests, as pytest parsed it: the paths or node ids, -k, -m and the
    testbed's options that select (not the results dir, kernel, patches or QEMU, which each side
    of a comparison sets for itself, nor -n, -x, -p)."""
    out = [str(arg) for arg in config.args]
    for flag, dest in (("-k", "keyword"), ("-m", "markexpr")):
        if config.getoption(dest):
            out += [flag, str(config.getoption(dest))]
    for name in ("topology", "selftest_suite"):
        for value in config.getoption(name) or []:
            out += [f"--{name.replace('_', '-')}", str(value)]
    return out + (["--matrix"] if config.getoption("matrix") else [])


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
    state.leaks_unchecked += pool.leaks_unchecked
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
        digest = digest_of(load_fingerprint(kept)) if kept else None
        state.record.boot(
            launch.topology, launch.vm, launch.bzimage, launch.accel, kept, launch.kernel_config, state.results, digest
        )
