"""Whether a mutant was killed: its run against the base run, test by test (pure).

Killed: a test that ran on the mutant changed outcome against the base run (a pass that fails
or errors, a failure that passes, a strict xfail that passes), a test the base ran did not run
at all (the session died: a panic or a hang ends the run early), or a new splat signature
appeared (`testbed ab`'s comparison: by signature, new against the base). Survived: nothing
changed; a change the machinery made (run.json's infra: a QEMU that died, a guest that stopped)
kills nothing, and a run with only those is invalid, not counted. The other states are decided
before any test runs: invalid (does not build or apply),
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


# Base outcomes after which any failure of the mutant's run is a change: such a run may stop
# at its first failure (pytest -x), and the tests it then never ran decide nothing.
CLEAN_OUTCOMES = frozenset({"passed", "skipped", "xfailed"})


def fails_fast(base: RunResults, tests: tuple[str, ...]) -> bool:
    """Whether the mutant's run may stop at its first failure: the base run failed none of
    `tests` (empty: every test the base run has)."""
    chosen = tests or tuple(base.outcomes)
    return all(base.outcomes.get(test, "passed") in CLEAN_OUTCOMES for test in chosen)


def judge(
    base: RunResults, mutant: RunResults, tests: tuple[str, ...], stopped_at_first_failure: bool = False
) -> MutantOutcome:
    """The mutant's run against the base run over `tests` (node ids; empty: every test the
    base run has). `stopped_at_first_failure`: the run was told to stop there (-x), so tests
    it did not reach after a change are not reasons of their own."""
    chosen = tests or tuple(base.outcomes)
    reasons, not_run, machinery = [], [], []
    for test in chosen:
        before, after = base.outcomes.get(test), mutant.outcomes.get(test)
        if before is None:
            continue  # not in the base selection either: nothing to compare with
        if after is None:
            not_run.append(f"{test}: {before} -> not run (the session ended early)")
        elif after != before:
            infra = mutant.tests.get(test, {}).get("infra")  # the machinery's failure (run.json)
            if infra:
                machinery.append(f"{test}: {before} -> {after} ({infra})")
            else:
                reasons.append(f"{test}: {before} -> {after}")
    if stopped_at_first_failure and reasons and not_run:
        reasons.append(f"{len(not_run)} later test(s) not run: the run stopped at its first failure (-x)")
    else:
        reasons += not_run
    known_before = base.splat_counts(new_only=True)
    for signature, count in sorted(mutant.splat_counts(new_only=True).items()):
        if signature not in known_before:
            reasons.append(f"new splat ({count}x): {signature}")
    if not reasons and machinery:  # no verdict on the mutant: not counted, as one that does not build
        return MutantOutcome(Status.INVALID, (f"the machinery failed, not the mutant: {machinery[0]}", *machinery[1:]))
    return MutantOutcome(Status.KILLED if reasons else Status.SURVIVED, tuple(reasons))
