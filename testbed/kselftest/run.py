"""Run one selftest program in a booted guest and judge it: KTAP cases, exit, splats per case.

The program's output is relayed line by line into /dev/kmsg by the guest helper, so the console
shows `kselftest iommu/iommufd: #  RUN iommufd_ioas.mock_domain.area ...` before whatever the
kernel printed while that case ran: a splat is charged to the case whose RUN line came last
before it (the relay can lag the kernel by a line, so the whole run is charged as well).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import GuestError
from ..guestvm import GuestVM
from ..guestvm import window as kernel_window
from ..logs.known import KnownSplat
from ..logs.ktap import KtapCase, KtapReport, Status, parse_ktap
from ..logs.splat import Splat, strip_prefix
from .build import SelftestBuild
from .catalog import Program

log = logging.getLogger(__name__)

GUEST_DIR = "/run/testbed/kselftest"
HUGEPAGES = 96  # 2 MiB pages: vfio hugetlb_2mb variants, iommufd dirty128M_huge (64 of them)
RUN_SLACK_S = 60.0  # SSH and relay on top of the program's own timeout


@dataclass(frozen=True)
class ChargedSplat:
    splat: Splat
    case: str | None  # the case that was running, if any
    known: KnownSplat | None = None


@dataclass(frozen=True)
class ProgramRun:
    program: Program
    device: str | None  # the topology's endpoint id handed to the program
    bdf: str | None
    exit_status: int
    timed_out: bool
    seconds: float
    output: Path  # the program's raw output (KTAP), kept with the results
    window_log: Path  # the kernel log while it ran
    report: KtapReport | None
    splats: tuple[ChargedSplat, ...]
    console_log: Path  # the console of the VM it ran in (its splats' line numbers point there)
    lockdep_lost: bool = False

    @property
    def id(self) -> str:
        return self.program.name + (f"@{self.device}" if self.device else "")

    def case(self, name: str) -> KtapCase | None:
        if self.report is None:
            return None
        return next((c for c in self.report.cases if c.name == name), None)

    def new_splats(self, case: str | None = None) -> list[ChargedSplat]:
        """Splats no known-splats entry excuses (of one case, or of the whole run)."""
        return [s for s in self.splats if s.known is None and (case is None or s.case == case)]

    def counts(self) -> dict[Status, int]:
        return self.report.counts() if self.report is not None else {}


def _tag(program: Program, device: str | None) -> str:
    return program.id + (f"@{device}" if device else "")


def _charge(
    window: list[str], first_line: int, tag: str, splats: list[tuple[Splat, KnownSplat | None]]
) -> tuple[ChargedSplat, ...]:
    run_re = re.compile(rf"kselftest {re.escape(tag)}: #\s+RUN\s+(\S+)")
    done_re = re.compile(rf"kselftest {re.escape(tag)}: (?:not )?ok \d+ (\S+)")
    running: list[tuple[int, str | None]] = []  # (line, case running from then on)
    for offset, raw in enumerate(window):
        text = strip_prefix(raw)
        m = run_re.search(text)
        if m:
            running.append((first_line + offset, m.group(1)))
        elif done_re.search(text):
            running.append((first_line + offset, None))
    charged = []
    for splat, known in splats:
        case = None
        for line, name in running:
            if line > splat.first_line:
                break
            case = name
        charged.append(ChargedSplat(splat, case, known))
    return tuple(charged)


def run_program(
    vm: GuestVM,
    build: SelftestBuild,
    program: Program,
    device: str | None,
    dest: Path,
    known: tuple[KnownSplat, ...] = (),
) -> ProgramRun:
    """Run `program` (against `device`, bound to vfio-pci first) and keep its output under dest."""
    dest.mkdir(parents=True, exist_ok=True)
    tag = _tag(program, device)
    remote = f"{GUEST_DIR}/{program.suite}/{program.name}"
    vm.run(["mkdir", "-p", f"{GUEST_DIR}/{program.suite}"], check=True)
    vm.machine.wait_ssh().put(build.binary(program), remote)
    vm.run(["chmod", "+x", remote], check=True)
    bdf = vm.bdf(device) if device else None
    ready = vm.agent("kselftest", "prepare", {"bdfs": [bdf] if bdf else [], "hugepages": HUGEPAGES})
    if not ready.get("ok"):
        what = f"hand {device} ({bdf}) to vfio-pci" if device else "reserve hugepages"
        raise GuestError(f"could not {what} for {program.id}: {ready}")
    out = f"{GUEST_DIR}/{tag.replace('/', '_')}.ktap"
    opened = kernel_window.begin(vm, f"kselftest {tag}")
    result = vm.agent(
        "kselftest",
        "run",
        {
            "argv": [remote] + ([bdf] if bdf else []),
            "out": out,
            "timeout": program.timeout_s,
            "tag": tag,
            "cwd": GUEST_DIR,
        },
        timeout=program.timeout_s + RUN_SLACK_S,
    )
    findings = kernel_window.end(vm, f"kselftest {tag}", opened, kernel_window.ExpectedMessages(), known)
    output = dest / f"{tag.replace('/', '_')}.ktap"
    vm.machine.wait_ssh().get(out, output, timeout=vm.machine.timeouts.guest_command)
    text = output.read_text(errors="replace")
    lines = vm.machine.console_log.read_text(errors="replace").splitlines()
    begin_line, end_line = findings.lines
    window = lines[begin_line : end_line - 1]
    window_log = dest / f"{tag.replace('/', '_')}.kernel.log"
    window_log.write_text("\n".join(window) + "\n")
    reports = parse_ktap(text.splitlines())
    splats: list[tuple[Splat, KnownSplat | None]] = [(s, None) for s in findings.splats]
    splats += list(findings.known)
    charged = _charge(window, begin_line + 1, tag, splats)
    run = ProgramRun(
        program,
        device,
        bdf,
        int(result.get("status", -1)),
        bool(result.get("timed_out")),
        float(result.get("seconds", 0.0)),
        output,
        window_log,
        reports[0] if reports else None,
        charged,
        vm.machine.console_log,
        findings.lockdep_lost,
    )
    log.debug("%s: exit %s in %.1fs, %s", tag, run.exit_status, run.seconds, run.counts())
    return run
