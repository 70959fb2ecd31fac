"""The judge of a VM test's kernel window: what the window found and how strict the run is, in;
the problems that fail the test and what the run's record keeps of it, out. No VM, no pytest.
(What lies outside every window is strays.py's.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..guestvm.window import WindowFindings
from ..runs.record import SplatRecord
from .state import KnownSeen


@dataclass(frozen=True)
class Judgement:
    problems: tuple[str, ...]  # each fails the test
    splats: tuple[SplatRecord, ...]  # every splat of the window, known or not (run.json)
    known_seen: tuple[KnownSeen, ...]  # known base-kernel splats, listed at the end of the run
    unchecked: str | None  # why part of the test ran without lockdep, or None


def judge_window(findings: WindowFindings, nodeid: str, log: Path, strict: bool) -> Judgement:
    """`log`: the VM's console log the findings' line numbers point into; `strict`:
    --strict-splats (known base-kernel splats, and a test not lock-checked, fail too)."""
    problems: list[str] = []
    splats = [SplatRecord.of(splat, nodeid, None, log) for splat in findings.splats]
    problems += [
        f"kernel splat during the test: {splat.signature} ({log}:{splat.first_line}-{splat.last_line})\n{splat.excerpt}"
        for splat in findings.splats
    ]
    splats += [SplatRecord.of(splat, nodeid, entry, log) for splat, entry in findings.known]
    known_seen = [KnownSeen.of(nodeid, log, splat, entry) for splat, entry in findings.known]
    if strict:
        problems += [
            f"known base-kernel splat during the test ({entry.where}; failing because of --strict-splats): "
            f"{splat.signature} ({log}:{splat.first_line}-{splat.last_line})\n{splat.excerpt}"
            for splat, entry in findings.known
        ]
    problems += [f"expected kernel message did not appear: {pattern}" for pattern in findings.missing]
    if findings.lockdep_lost and (strict or not findings.lockdep_lost_to_known):
        problems.append(
            "lockdep turned itself off during the test (debug_locks 1 -> 0): nothing after this point is lock-checked"
        )
    unchecked = None
    if findings.lockdep_off_at_start:
        unchecked = "lockdep was already off when the test began (an earlier report in this VM)"
    elif findings.lockdep_lost_to_known:
        unchecked = "a known base-kernel lockdep report turned lockdep off during the test"
    if unchecked and strict:
        problems.append(f"not lock-checked (failing because of --strict-splats): {unchecked}")
    if not findings.complete:
        problems.append(f"the end marker never reached the console ({log})")
    return Judgement(tuple(problems), tuple(splats), tuple(known_seen), unchecked)
