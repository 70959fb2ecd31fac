"""The mutant verdict against a base run, and the report a mutation run writes."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.mutate import report
from testbed.mutate.judge import Status, fails_fast, judge
from testbed.runs.record import SplatRecord
from testbed.runs.results import RunResults


def _run(outcomes: dict[str, str], splats: tuple[SplatRecord, ...] = ()) -> RunResults:
    return RunResults(Path("/r"), outcomes, splats, (), {}, {}, (), "", (), {})


BASE = _run(
    {"t::a": "passed", "t::b": "passed", "t::c": "xfailed"}, (SplatRecord("WARNING: old", "warn", "t::a", None, ""),)
)


def test_nothing_changed_survives():
    assert judge(BASE, _run(dict(BASE.outcomes), BASE.splats), ("t::a",)).status is Status.SURVIVED


def test_an_outcome_that_changes_kills_and_says_which():
    verdict = judge(BASE, _run({"t::a": "failed", "t::b": "passed", "t::c": "xfailed"}), ())
    assert verdict.status is Status.KILLED
    assert verdict.reasons == ("t::a: passed -> failed",)


def test_a_strict_xfail_that_passes_kills():
    assert judge(BASE, _run({"t::c": "xpassed"}), ("t::c",)).status is Status.KILLED


def test_only_the_chosen_tests_count():
    assert judge(BASE, _run({"t::a": "passed", "t::b": "failed"}), ("t::a",)).status is Status.SURVIVED


def test_a_test_that_did_not_run_kills():
    verdict = judge(BASE, _run({"t::b": "passed"}), ("t::a", "t::b"))
    assert verdict.status is Status.KILLED
    assert "not run" in verdict.reasons[0]


def test_a_new_splat_kills_an_old_one_does_not():
    same = _run(dict(BASE.outcomes), (SplatRecord("WARNING: old", "warn", "t::b", None, ""),))
    assert judge(BASE, same, ()).status is Status.SURVIVED
    new = _run(dict(BASE.outcomes), (SplatRecord("KASAN: use-after-free in foo", "kasan", "t::a", None, ""),))
    verdict = judge(BASE, new, ())
    assert verdict.status is Status.KILLED
    assert verdict.reasons == ("new splat (1x): KASAN: use-after-free in foo",)


def _result(status: Status, function: str = "f", n: int = 0) -> report.MutantResult:
    return report.MutantResult(
        f"x.c:{function}:{n}", "drivers/x.c", function, "drop-call", 10 + n, 10 + n, "delete foo()",
        f"mutants/{n}.patch", status, ("t::a: passed -> failed",) if status.detected else (), ("t::a",),
    )  # fmt: skip


def test_score_counts_detected_over_killed_survived_and_not_covered():
    results = [
        _result(Status.KILLED, n=1),
        _result(Status.TIMEOUT, n=2),
        _result(Status.SURVIVED, n=3),
        _result(Status.NOT_COVERED, n=4),
        _result(Status.INVALID, n=5),
        _result(Status.EQUIVALENT, n=6),
        _result(Status.NOT_RUN, n=7),
    ]
    s = report.score(results)
    assert (s.detected, s.counted) == (2, 4)
    assert s.text() == "2/4 (50 %)"


def test_results_round_trip_and_the_report_lists_survivors_with_their_diff(tmp_path: Path):
    (tmp_path / "mutants").mkdir()
    (tmp_path / "mutants" / "3.patch").write_text("Subject: x\n---\ndiff --git a/x b/x\n-\tfoo();\n")
    results = [_result(Status.KILLED, "g", 1), _result(Status.SURVIVED, "f", 3)]
    for r in results:
        report.append(tmp_path, r)
    assert report.load(tmp_path) == results
    path = report.write(results, tmp_path, ["Selection: `-m vfio`"])
    text = path.read_text()
    assert "**Score: 1/2 (50 %)**" in text
    assert "### `x.c:f:3` (survived)" in text and "-\tfoo();" in text
    assert "| `drivers/x.c` | `f` | 0/1 (0 %) | 0 | 1 | 0 | 0 |" in text
    doc = json.loads((tmp_path / "mutants.json").read_text())
    assert doc["functions"]["drivers/x.c:g"]["percent"] == 100.0


def test_a_run_stopped_at_its_first_failure_is_judged_by_that_failure():
    stopped = _run({"t::a": "failed"})
    verdict = judge(BASE, stopped, (), stopped_at_first_failure=True)
    assert verdict.status is Status.KILLED
    assert verdict.reasons == (
        "t::a: passed -> failed",
        "2 later test(s) not run: the run stopped at its first failure (-x)",
    )
    # a run that was not told to stop there: every missing test is a reason of its own
    assert len(judge(BASE, stopped, ()).reasons) == 3


def test_a_mutant_run_stops_at_its_first_failure_only_where_the_base_failed_nothing():
    assert fails_fast(BASE, ())  # passed, passed, xfailed
    broken = _run({"t::a": "passed", "t::b": "failed"})
    assert not fails_fast(broken, ()) and fails_fast(broken, ("t::a",))


def test_a_failure_of_the_machinery_kills_nothing():
    """A mutant whose test failed because QEMU died (run.json's infra) was counted killed."""
    from dataclasses import replace

    machinery = {"t::a": {"infra": "InfraError: QEMU exited during boot"}}
    only = replace(_run({"t::a": "error", "t::b": "passed", "t::c": "xfailed"}), tests=machinery)
    verdict = judge(BASE, only, ())
    assert verdict.status is Status.INVALID and not verdict.status.counted
    assert verdict.reasons == (
        "the machinery failed, not the mutant: t::a: passed -> error (InfraError: QEMU exited during boot)",
    )
    beside = replace(_run({"t::a": "error", "t::b": "failed", "t::c": "xfailed"}), tests=machinery)
    assert judge(BASE, beside, ()).reasons == ("t::b: passed -> failed",)  # a real kill beside it
