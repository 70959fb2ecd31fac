"""Whether a mutant was killed: its run against the base run, test by test (pure).

Killed: a test that ran on the mutant changed outcome against the base run (a pass that fails
or errors, a failure that passes, a strict xfail that passes), a test the base ran did not run
at all (the session died: a panic or a hang ends the run early), or a new splat signature
appeared (`testbed ab`'s comparison: by signature, new against the base). Survived: nothing
changed. The other states are decided before any test runs: invalid (does not build or apply),
not covered (no selected test executes its lines), timeout (the deadline ended the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..runs.results import RunResults


class Status(Enum):
    KILLED = "killed"
    TIMEOUT = "killed (timeout/crash)"
    SURVIVED = "survived"
    NOT_COVERED = "not covered"
    INVALID = "invalid"
    EQUIVALENT = "equivalent"  # declared in mutation-equivalents.yaml: not counted
    NOT_RUN = "not run"  # the budget ran out first: not counted

    @property
    def detected(self) -> bool:
        return self in (Status.KILLED, Status.TIMEOUT)

    @property
    def counted(self) -> bool:
        """In the score's denominator: a mutant that should have been detected."""
        return self in (Status.KILLED, Status.TIMEOUT, Status.SURVIVED, Status.NOT_COVERED)


@dataclass(frozen=True)
class MutantOutcome:
    status: Status
    reasons: tuple[str, ...] = ()  # what changed, for a killed mutant; why, for the others


def judge(base: RunResults, mutant: RunResults, tests: tuple[str, ...]) -> MutantOutcome:
    """The mutant's run against the base run over `tests` (node ids; empty: every test the
    base run has)."""
    chosen = tests or tuple(base.outcomes)
    reasons = []
    for test in chosen:
        before, after = base.outcomes.get(test), mutant.outcomes.get(test)
        if before is None:
            continue  # not in the base selection either: nothing to compare with
        if after is None:
            reasons.append(f"{test}: {before} -> not run (the session ended early)")
        elif after != before:
            reasons.append(f"{test}: {before} -> {after}")
    known_before = base.splat_counts(new_only=True)
    for signature, count in sorted(mutant.splat_counts(new_only=True).items()):
        if signature not in known_before:
            reasons.append(f"new splat ({count}x): {signature}")
    return MutantOutcome(Status.KILLED if reasons else Status.SURVIVED, tuple(reasons))
