"""What a VM's console holds outside every test's window once the VM is gone (boot, between
tests, shutdown) and what its kmemleak scan found: each splat fails the session unless known.
No VM, no pytest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..logs.kinds import SplatKind
from ..logs.kmemleak import KmemleakScan
from ..logs.known import KnownSplat, console_splats, find_known, kernel_release
from ..logs.splat import Splat
from ..logs.windows import outside_windows


@dataclass(frozen=True)
class StraySplat:
    vm: str
    console_log: Path
    splat: Splat
    known: KnownSplat | None = None  # declared in known-splats.yaml: reported, not failed


def _part_of_a_stall(splat: Splat) -> bool:
    """An RCU stall report, or the NMI backtrace's "handler took too long" it brings along."""
    return splat.kind == SplatKind.RCU_STALL or splat.signature.startswith("INFO: NMI handler")


def judge_outside_windows(
    vm: str,
    console_log: Path,
    lines: list[str],
    leaks: KmemleakScan | None,
    boot_stalled: bool,
    known: tuple[KnownSplat, ...],
) -> list[StraySplat]:
    """Every splat of a VM's console outside the tests' windows, and every leak of its kmemleak
    scan: each fails the session unless known. `boot_stalled`: the boot ended in an RCU stall,
    reported with its retry, so the stall's own reports are not counted twice."""
    strays = []
    for splat, entry in console_splats(lines, known, outside_windows(lines)):
        if boot_stalled and _part_of_a_stall(splat):
            continue
        if leaks is not None and splat.kind == SplatKind.KMEMLEAK and splat.first_line > leaks.console_mark:
            continue  # the scan's "N new suspected memory leaks": each leak is reported below
        strays.append(StraySplat(vm, console_log, splat, entry))
    if leaks is not None:
        release = kernel_release(lines)
        strays += [StraySplat(vm, leaks.report, s, find_known(s, release, known)) for s in leaks.splats]
    return strays
