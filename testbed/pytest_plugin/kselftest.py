"""Plugin state for the tree's own tests (tests/vm/test_kselftest.py): one object per session.

It picks the selftest kernel that goes with the session's (`selftest` for the default config
set, `debug-selftest` under --kernel-config debug, or the user's --kernel as given), builds the
programs once, lists their cases for collection, runs each program once per VM and device, and
keeps what the end of the run lists: tests that skipped themselves (with their reason), known
base-tree failures met, and the build fixes applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..errors import GuestHung, TestbedError
from ..guestvm import GuestVM
from ..kernel.request import KernelRequest, selftest_set
from ..kselftest.build import SelftestBuild, ensure_selftests
from ..kselftest.catalog import Program, programs, selftest_devices
from ..kselftest.known import KnownFailure, find_failure, load_failures, load_skips
from ..kselftest.kunit import SELFTEST_APPEND, KunitRun, judge_boot, list_cases
from ..kselftest.run import ProgramRun, run_program
from ..logs.known import KnownSplat
from ..topology import Topology, load_topology_once
from ..topology.model import IommuType
from .kernelci import kselftest_path, kunit_path
from .options import in_ci
from .pool import VmPool, VmVariant
from .state import state_of

log = logging.getLogger(__name__)

# the KUnit suites run before init: ~20 s under TCG for the default kernel, minutes under the
# debug one (KASAN, lockdep); KVM seconds, scaled like every guest-paced wait
KUNIT_BOOT_WORK_S = 60.0
UNSAFE_INTERRUPTS = ("vfio_iommu_type1.allow_unsafe_interrupts=1", "iommufd.allow_unsafe_interrupts=1")
MARKS = ("kselftest", "kunit")


@dataclass(frozen=True)
class SelftestCase:
    """One collected item: a case of a program run against a device, or the run as a whole."""

    program: Program
    device: str | None
    case: str | None  # None: the run itself (exit status, splats, cases nobody listed)

    @property
    def test(self) -> str:
        """The name known-failures.yaml matches: `<program id>:<case>` (`:run` for the run)."""
        return f"{self.program.id}:{self.case or 'run'}"

    @property
    def kernelci_path(self) -> str:
        return kselftest_path(self.program.suite, self.program.name, self.case)


@dataclass(frozen=True)
class KunitCase:
    case: str | None  # "suite.case"; None: the boot as a whole

    @property
    def test(self) -> str:
        return f"kunit:{self.case or 'boot'}"

    @property
    def kernelci_path(self) -> str:
        return kunit_path(self.case)


@dataclass
class Noted:
    nodeid: str
    what: str  # "skip" (declared) | "undeclared skip" | "known"
    reason: str


@dataclass
class KselftestSession:
    config: pytest.Config
    known: tuple[KnownFailure, ...]
    known_skips: tuple[KnownFailure, ...]
    _bzimage: Path | None = None
    _build: SelftestBuild | None = None
    runs: dict[tuple[str, str, str | None], ProgramRun] = field(default_factory=dict)
    kunit_runs: dict[str, KunitRun] = field(default_factory=dict)
    broken: dict[tuple[str, str, str | None], TestbedError] = field(default_factory=dict)
    boot_failed: dict[str, TestbedError] = field(default_factory=dict)
    variants: dict[str, VmVariant] = field(default_factory=dict)
    noted: list[Noted] = field(default_factory=list)
    ran: dict[tuple[str, str], int] = field(default_factory=dict)  # (topology, suite) -> cases run
    reruns: list[str] = field(default_factory=list)  # programs run again after their guest stopped

    # -- which kernel ----------------------------------------------------------------------

    def kernel(self) -> KernelRequest:
        """The run's kernel request, with the selftest companion of its config set."""
        request = state_of(self.config).kernel
        return request.with_config(selftest_set(request.config_set)) if request.bzimage is None else request

    def kernel_config(self) -> str:
        return self.kernel().config_set

    def bzimage(self, progress: Callable[[str], None]) -> Path:
        if self._bzimage is None:
            self._bzimage = self.kernel().bzimage_path(progress)  # the user's own build as it is, or ours
        return self._bzimage

    def build(self, progress: Callable[[str], None]) -> SelftestBuild:
        if self._build is None:
            self._build = ensure_selftests(self.bzimage(progress), programs(nightly=True), progress)
        return self._build

    def suites(self) -> tuple[str, ...]:
        return tuple(self.config.getoption("selftest_suite"))

    def selected_suites(self) -> tuple[str, ...]:
        from ..kselftest.commands import SUITE_NAMES

        return self.suites() or SUITE_NAMES

    def programs(self) -> tuple[Program, ...]:
        chosen = tuple(s for s in self.suites() if s != "kunit")
        if self.suites() and not chosen:
            return ()
        return programs(chosen, nightly=self.config.getoption("matrix"))

    # -- collection -------------------------------------------------------------------------

    def wanted(self) -> bool:
        """Whether the -m expression can select these tests (else collection builds nothing)."""
        expr = self.config.getoption("markexpr")
        if not expr:
            return True
        try:
            from _pytest.mark.expression import Expression

            compiled = Expression.compile(expr)

            def carries(mark: str) -> Callable[..., bool]:
                # an item of this module carries its suite's mark, `kselftest` and `topology`
                return lambda name, /, **_: name in (mark, "kselftest", "topology")

            return any(compiled.evaluate(carries(mark)) for mark in MARKS)
        except Exception:  # a pytest without this module: build, to be safe
            return True

    def cases_for(self, topo: Topology, kind: str) -> list[tuple[str, object]]:
        """Collection: one (id, case) per item; a placeholder when -m leaves these tests out."""
        if not self.wanted():
            return [("not-selected", None)]
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")

        def progress(line: str) -> None:
            if reporter is not None:
                reporter.write_line(f"testbed: {line}")

        if kind == "kunit" and self.suites() and "kunit" not in self.suites():
            return [("not-selected", None)]
        try:
            cases: list[tuple[str, object]] = []
            cases += self.selftest_cases(topo, progress) if kind == "selftest" else self.kunit_cases(progress)
            return cases or [("not-selected", None)]
        except TestbedError as exc:  # a tree whose selftests do not build: say so, before anything boots
            raise pytest.UsageError(f"the tree's own tests cannot be collected: {exc}") from None

    def devices(self, topo: Topology, program: Program) -> tuple[str | None, ...]:
        """What `program` runs against on `topo`: nothing for a program of its own, one device of
        each kind otherwise, none without an IOMMU (vfio-pci takes no device outside an IOMMU
        group: the program does not apply there, said at the end of the run)."""
        if not program.device:
            return (None,)
        if topo.iommu.type is IommuType.NONE:
            state_of(self.config).not_applicable[(topo.name, f"{program.id} (on a device)")] = (
                "an IOMMU (vfio-pci takes no device outside an IOMMU group)"
            )
            return ()
        return selftest_devices(topo)

    def suites_for(self, topo: Topology) -> tuple[str, ...]:
        """The selected suites with something to run on `topo` (KUnit always: it runs at boot)."""
        runnable = {p.suite for p in self.programs() if self.devices(topo, p)}
        return tuple(s for s in self.selected_suites() if s == "kunit" or s in runnable)

    def selftest_cases(self, topo: Topology, progress: Callable[[str], None]) -> list[tuple[str, SelftestCase]]:
        build = self.build(progress)
        out = []
        for program in self.programs():
            for device in self.devices(topo, program):
                label = program.name + (f"@{device}" if device else "")
                out.append((label, SelftestCase(program, device, None)))
                for case in build.cases(program) or ():
                    out.append((f"{label}-{case}", SelftestCase(program, device, case)))
        return out

    def kunit_cases(self, progress: Callable[[str], None]) -> list[tuple[str, KunitCase]]:
        cases = list_cases(self.bzimage(progress))
        return [("kunit", KunitCase(None))] + [(f"kunit-{c}", KunitCase(c)) for c in cases]

    # -- running ----------------------------------------------------------------------------

    def vm(self, pool: VmPool, topology: str) -> GuestVM:
        """The topology's selftest VM, booted with KUnit enabled: its suites run during boot."""
        if topology in self.boot_failed:  # one boot attempt per topology, not one per case
            pytest.fail(f"the selftest VM of {topology} could not boot: {self.boot_failed[topology]}", pytrace=False)
        try:
            return pool.shared_vm(topology, self._variant(topology))
        except TestbedError as exc:
            self.boot_failed[topology] = exc
            pytest.fail(f"the selftest VM of {topology} could not boot: {exc}", pytrace=False)

    def _variant(self, topology: str) -> VmVariant:
        """How the topology's selftest VM boots (worked out once: every item asks)."""
        if topology not in self.variants:
            config = None if self.kernel().bzimage is not None else self.kernel_config()
            append: tuple[str, ...] = SELFTEST_APPEND
            if load_topology_once(topology).iommu.type is IommuType.VIRTIO:
                append += UNSAFE_INTERRUPTS  # virtio-iommu has no MSI isolation; VFIO refuses without
            self.variants[topology] = VmVariant(config, append, KUNIT_BOOT_WORK_S)
        return self.variants[topology]

    def run(
        self,
        vm: GuestVM,
        topology: str,
        program: Program,
        device: str | None,
        results: Path,
        known_splats: tuple[KnownSplat, ...],
        pool: VmPool | None = None,
    ) -> ProgramRun:
        """The program's run on `device`, made once. A guest that stopped under it (GuestHung:
        under TCG, a lost wakeup) says nothing about the program: with `pool`, it runs once
        more on a fresh VM (the stopped one is dirty, so the pool boots another), and the
        session's summary lists it."""
        key = (topology, program.id, device)
        if key in self.broken:  # one error per run, not one per case
            pytest.fail(f"{program.id} could not run: {self.broken[key]}", pytrace=False)
        if key not in self.runs:
            dest = results / "kselftest" / vm.topology.name
            try:
                try:
                    run = run_program(vm, self.build(lambda _: None), program, device, dest, known_splats)
                except GuestHung as exc:
                    if pool is None:
                        raise
                    self.reruns.append(f"{program.id} on {topology}: {str(exc).splitlines()[0]}")
                    fresh = self.vm(pool, topology)
                    run = run_program(fresh, self.build(lambda _: None), program, device, dest, known_splats)
            except TestbedError as exc:
                self.broken[key] = exc
                raise
            self.runs[key] = run
        return self.runs[key]

    def kunit(self, vm: GuestVM, topology: str, known_splats: tuple[KnownSplat, ...]) -> KunitRun:
        if topology not in self.kunit_runs:
            self.kunit_runs[topology] = judge_boot(vm.machine.console_log, known_splats)
        return self.kunit_runs[topology]

    def note(self, nodeid: str, what: str, reason: str) -> None:
        self.noted.append(Noted(nodeid, what, reason))

    def known_failure(
        self, test: str, device_kind: str | None, release: str | None, output: str
    ) -> KnownFailure | None:
        return find_failure(self.known, test, device_kind, release, output)

    def skipped(self, nodeid: str, test: str, device_kind: str | None, release: str | None, reason: str) -> str | None:
        """A case that skipped itself: noted, declared or not (known-skips.yaml); what fails it
        (an undeclared skip under CI), or None."""
        declared = find_failure(self.known_skips, test, device_kind, release, reason)
        if declared is not None:
            self.note(nodeid, "skip", reason)
            return None
        self.note(nodeid, "undeclared skip", reason)
        if not in_ci():
            return None
        return (
            f"{test} skipped itself ({reason}), and known-skips.yaml declares no such skip: under CI a "
            "case that stops running must not pass unnoticed; declare it there with why if it cannot run here"
        )

    def listed(self, program: Program) -> tuple[str, ...] | None:
        """The cases collected for program (None: it cannot list them on the host)."""
        return self._build.cases(program) if self._build is not None else None

    def count(self, topology: str, suite: str, ran: bool) -> None:
        self.ran[(topology, suite)] = self.ran.get((topology, suite), 0) + int(ran)

    # -- end of run -------------------------------------------------------------------------

    def summary(self) -> list[str]:
        """This process's part of the end of the run: programs run again, build fixes. What the
        cases noted is summed up over every worker (noted_summary)."""
        lines = []
        if self.reruns:
            lines.append(f"{len(self.reruns)} program(s) run again on a fresh VM after their guest stopped:")
            lines += [f"  {rerun}" for rerun in self.reruns]
        suites = {p.suite for p in self.programs()}
        fixes = [f for f in self._build.fixes if f.suite in suites] if self._build is not None else []
        if fixes:
            lines.append("build fixes applied to the tree's selftests (the tree itself is not edited):")
            lines += [f"  {fix.name}: {fix.why}" for fix in fixes]
        return lines


def noted_summary(noted: list[tuple[str, str, str]]) -> list[str]:
    """Known failures, undeclared and declared skips, from every worker's (nodeid, what, reason)."""
    lines = _with_examples(
        _grouped(noted, "known"),
        "known failure(s) of the base tree (known-failures.yaml; xfail, every one in kselftest-known.tsv):",
    )
    lines += _with_examples(
        _grouped(noted, "undeclared skip"),
        "case(s) skipped themselves with a reason known-skips.yaml does not declare (failures under CI):",
    )
    skips = _grouped(noted, "skip")
    if skips:
        lines.append(
            f"{sum(map(len, skips.values()))} case(s) skipped themselves; what QEMU or this "
            "guest could not give them, in the tests' own words (declared in known-skips.yaml):"
        )
        for reason, nodeids in sorted(skips.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(nodeids):4d} x {reason}")
    return lines


def _grouped(noted: list[tuple[str, str, str]], what: str) -> dict[str, list[str]]:
    """Node ids noted as `what`, grouped by reason (first seen first)."""
    groups: dict[str, list[str]] = {}
    for nodeid, kind, reason in noted:
        if kind == what:
            groups.setdefault(reason, []).append(nodeid)
    return groups


def _with_examples(groups: dict[str, list[str]], header: str, shown: int = 3) -> list[str]:
    """`groups` (reason -> node ids) under "N <header>", each reason with its first node ids."""
    if not groups:
        return []
    lines = [f"{sum(map(len, groups.values()))} {header}"]
    for reason, nodeids in groups.items():
        lines.append(f"  {len(nodeids):4d} x {reason}")
        lines += [f"         {nodeid}" for nodeid in nodeids[:shown]]
        if len(nodeids) > shown:
            lines.append(f"         ... and {len(nodeids) - shown} more")
    return lines


SESSION_KEY = pytest.StashKey[KselftestSession]()


def session_of(config: pytest.Config) -> KselftestSession:
    """The session's state, made at first use (collection of the first kselftest item)."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        session = config.stash[SESSION_KEY] = KselftestSession(config, load_failures(), load_skips())
    return session
