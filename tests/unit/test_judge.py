"""The judge of a test's kernel window (pytest_plugin/judge.py): a pure function of what the
window found and how strict the run is."""

from __future__ import annotations

import re
from pathlib import Path

from testbed.guestvm.window import WindowFindings
from testbed.logs.known import KnownSplat
from testbed.logs.splat import Splat
from testbed.pytest_plugin.judge import judge_window

LOG = Path("/results/vm/x/console.log")
WARN = Splat("warning", "WARNING in foo", 10, 20, "WARNING: foo\n...", signature="WARNING in foo")
LOCKDEP = Splat("lockdep", "possible circular locking", 30, 60, "=====", signature="LOCKDEP circular a b")
KNOWN = KnownSplat("lockdep", re.compile("LOCKDEP"), (), (), re.compile(""), "a base-kernel report", "known.yaml:3")


def verdict(**kw) -> WindowFindings:
    return WindowFindings(**({"splats": [], "missing": [], "lines": (1, 100), "complete": True} | kw))


def test_a_clean_window_fails_nothing():
    judged = judge_window(verdict(), "t", LOG, strict=False)
    assert judged.problems == () and judged.splats == () and judged.unchecked is None


def test_an_unknown_splat_fails_with_where_it_is_and_is_recorded():
    judged = judge_window(verdict(splats=[WARN]), "t", LOG, strict=False)
    assert judged.problems == (f"kernel splat during the test: WARNING in foo ({LOG}:10-20)\nWARNING: foo\n...",)
    assert [s.signature for s in judged.splats] == ["WARNING in foo"]


def test_a_known_splat_is_listed_and_fails_only_when_strict():
    lost = verdict(known=[(LOCKDEP, KNOWN)], lockdep_lost=True)
    relaxed = judge_window(lost, "t", LOG, strict=False)
    assert relaxed.problems == () and len(relaxed.known_seen) == 1 and len(relaxed.splats) == 1
    assert relaxed.unchecked == "a known base-kernel lockdep report turned lockdep off during the test"
    strict = judge_window(lost, "t", LOG, strict=True)
    assert len(strict.problems) == 3  # the known splat, lockdep lost, not lock-checked
    assert "failing because of --strict-splats" in strict.problems[0]


def test_missing_messages_lost_lockdep_and_a_cut_window_fail():
    judged = judge_window(
        verdict(missing=["DMAR: fault"], lockdep_lost=True, complete=False, lockdep_off_at_start=True), "t", LOG, False
    )
    assert judged.problems == (
        "expected kernel message did not appear: DMAR: fault",
        "lockdep turned itself off during the test (debug_locks 1 -> 0): nothing after this point is lock-checked",
        f"the end marker never reached the console ({LOG})",
    )
    assert judged.unchecked == "lockdep was already off when the test began (an earlier report in this VM)"
