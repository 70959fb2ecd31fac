"""testbed bisect's bookkeeping: git's verdict parsed, steps read back, the report; refusals
before anything builds."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from testbed.ab.bisect import BisectResult, Step, _first_bad, read_steps
from testbed.cli import main

from .git_repos import git, tiny_kernel

GIT_OUTPUT = """running  '/usr/bin/python3' '-m' 'testbed.ab.bisect' '/tmp/b' 'default' '--' '-m' 'p2p'
testbed bisect: 0ceeefcc1a2b good (PCI/P2PDMA: say where pci_free_p2pmem() returns memory)
2f5cd77ab9e8c0d1b2a3f4e5d6c7b8a9f0e1d2c3 is the first bad commit
commit 2f5cd77ab9e8c0d1b2a3f4e5d6c7b8a9f0e1d2c3
"""


def test_first_bad_commit_from_git_bisect_run():
    assert _first_bad(GIT_OUTPUT) == "2f5cd77ab9e8c0d1b2a3f4e5d6c7b8a9f0e1d2c3"
    assert _first_bad("Bisecting: 0 revisions left to test after this (roughly 0 steps)\n") is None


def test_steps_round_trip_and_report(tmp_path):
    steps = [
        Step("a" * 40, "good one", "good", (), (), str(tmp_path / "s0"), 30.0),
        Step("b" * 40, "the bad one", "bad", ("t::every_pair[two-switch]",), ("WARNING in f",), "r1", 31.5),
    ]
    (tmp_path / "steps.jsonl").write_text("".join(json.dumps(s.__dict__) + "\n" for s in steps))
    assert read_steps(tmp_path) == steps
    lines = BisectResult(steps[1], tuple(steps)).lines()
    assert f"first bad commit: {'b' * 40} the bad one" in lines
    assert "  failed: t::every_pair[two-switch]" in lines and "  new splat: WARNING in f" in lines


def _repo(tmp_path):
    repo = tiny_kernel(tmp_path / "linux", {"f": "0"})
    (repo / "f").write_text("1")
    git(repo, "commit", "-q", "-a", "-m", "c1")
    return repo


def test_refusals_before_anything_builds(tmp_path, capsys):
    repo = _repo(tmp_path)
    assert main(["bisect", "--ksrc", str(repo), "--good", "HEAD~1", "--bad", "HEAD"]) == 2  # no selection
    assert "after --" in capsys.readouterr().err
    assert main(["bisect", "--ksrc", str(repo), "--good", "HEAD", "--bad", "HEAD~1", "--", "-m", "p2p"]) == 2
    assert "is not an ancestor" in capsys.readouterr().err
    assert main(["bisect", "--ksrc", str(repo), "--good", "nope", "--bad", "HEAD", "--", "-m", "p2p"]) == 2
    assert "'nope' is not a commit" in capsys.readouterr().err
    assert main(["bisect", "--ksrc", str(tmp_path), "--good", "a", "--bad", "b", "--", "-m", "p2p"]) == 2
    assert "not the top of a git repository" in capsys.readouterr().err


def _step_with(
    tmp_path, monkeypatch, outcomes: dict[str, str], tests: dict[str, dict[str, str]], ends: tuple = ()
) -> int:
    """One bisect step at a commit of a tiny tree, its pytest run replaced by a run.json."""
    import testbed.kernel
    from testbed.ab import bisect

    tmp_path.mkdir()
    tree = tiny_kernel(tmp_path / "tree")
    monkeypatch.chdir(tree)
    monkeypatch.setattr(testbed.kernel, "ensure_kernel", lambda *a, **k: None)

    def pytest_run(argv, cwd):
        results = Path(argv[argv.index("--results-dir") + 1])
        results.mkdir(parents=True)
        (results / "run.json").write_text(json.dumps({"outcomes": outcomes, "tests": tests}))
        return 1 if any(o in ("failed", "error") for o in outcomes.values()) else 0

    monkeypatch.setattr(bisect, "run_child", pytest_run)
    out = tmp_path / "out"
    out.mkdir()
    if ends:  # the --bad and --good steps, checked before git bisect runs
        (out / bisect.STEPS_FILE).write_text("".join(json.dumps(asdict(e)) + "\n" for e in ends))
    return bisect.step(out, "default", ["-m", "p2p"])


def test_a_step_that_failed_only_for_the_machinery_is_skipped(tmp_path, monkeypatch):
    from testbed.ab.bisect import BAD, SKIP

    machinery = {"t::x": {"infra": "InfraError: QEMU exited during boot"}}
    assert _step_with(tmp_path / "1", monkeypatch, {"t::x": "error", "t::y": "passed"}, machinery) == SKIP
    both = {"t::x": "error", "t::y": "failed"}  # a real failure beside it: the commit is bad
    assert _step_with(tmp_path / "2", monkeypatch, both, machinery) == BAD


ONLY_SKIPPED = """Bisecting: 1 revision left to test after this (roughly 1 step)
There are only 'skip'ped commits left to test.
The first bad commit could be any of:
1111111111111111111111111111111111111111
2222222222222222222222222222222222222222
We cannot bisect more!
bisect run cannot continue any more
"""


def test_commits_left_open_by_skipped_steps_are_reported():
    from testbed.ab.bisect import _candidates

    assert _first_bad(ONLY_SKIPPED) is None
    assert _candidates(ONLY_SKIPPED) == ("1" * 40, "2" * 40)
    assert _candidates(GIT_OUTPUT) == ()
    result = BisectResult(None, (), _candidates(ONLY_SKIPPED))
    assert result.lines() == [
        "the first bad commit is one of 2 (skipped steps left it open):",
        "  " + "1" * 40,
        "  " + "2" * 40,
    ]


def test_between_the_ends_a_step_is_bad_for_the_failure_being_bisected(tmp_path, monkeypatch):
    """Another test failing at one commit in the range (broken there, fixed again before --bad)
    is not the failure being bisected: bisect on what fails at --bad, as a developer does."""
    from testbed.ab.bisect import BAD, GOOD

    ends = (
        Step("b" * 40, "the bad end", "bad", ("t::x",), ("WARNING in foo",), "/r/0", 1.0),
        Step("g" * 40, "the good end", "good", (), (), "/r/1", 1.0),
    )
    other = {"t::x": "passed", "t::y": "failed"}
    assert _step_with(tmp_path / "1", monkeypatch, other, {}, ends) == GOOD
    same = {"t::x": "failed", "t::y": "passed"}
    assert _step_with(tmp_path / "2", monkeypatch, same, {}, ends) == BAD
    assert _step_with(tmp_path / "3", monkeypatch, other, {}) == BAD  # an end: any failure
