"""testbed ab on the results of real runs: the three demo series (tests/series/) against one base
run of `tests/vm/test_p2p.py -k test_every_pair_matches_the_oracle --topology two-switch`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from testbed.ab.compare import compare, render_markdown, render_text
from testbed.cli import main
from testbed.errors import ConfigError
from testbed.runs.results import load_results

AB = Path(__file__).resolve().parent.parent / "logs" / "ab"
EVERY_PAIR = "tests/vm/test_p2p.py::test_every_pair_matches_the_oracle[two-switch]"


def _compare(series: str):
    return compare(load_results(AB / "base"), load_results(AB / series))


def test_a_series_that_changes_nothing():
    c = _compare("changes-nothing")
    assert not c.changed() and c.worse() == []
    assert render_text(c)[-1] == "verdict: no change"
    assert c.base_kernels != c.series_kernels  # two different kernels, and the report says which
    assert "1 patch(es): 0001-PCI-P2PDMA-say-where" in c.series_kernels[0]


def test_a_series_that_adds_a_splat():
    c = _compare("adds-warning")
    assert [(t.nodeid, t.before, t.after) for t in c.tests] == [(EVERY_PAIR, "passed", "failed")]
    assert [(s.signature, s.before, s.after, s.worse) for s in c.splats] == [
        ("WARNING in p2pmem_alloc_mmap", 0, 1, True)
    ]
    assert c.verdicts == ()
    assert "new splat: 1x WARNING in p2pmem_alloc_mmap" in c.worse()


def test_a_series_that_flips_a_verdict():
    c = _compare("allows-q35")
    assert [(v.pair, v.before, v.after) for v in c.verdicts] == [
        ("two-switch nvme0->nvme2 from_p2pmem", "EINVAL", "transferred"),
        ("two-switch nvme0->nvme2 to_p2pmem", "EINVAL", "transferred"),
    ]
    assert c.splats == ()
    assert c.worse() == [f"{EVERY_PAIR}: passed -> failed"]
    md = render_markdown(c)
    assert "| two-switch nvme0->nvme2 to_p2pmem | EINVAL | transferred | NOT_SUPPORTED EINVAL |" in md


def test_reversed_is_better_not_worse():
    c = compare(load_results(AB / "adds-warning"), load_results(AB / "base"))
    assert c.changed() and c.worse() == []
    assert [(s.before, s.after) for s in c.splats] == [(1, 0)]


def test_known_splats_do_not_make_a_series_worse(tmp_path):
    known = tmp_path / "known"
    shutil.copytree(AB / "adds-warning", known)
    doc = json.loads((known / "run.json").read_text())
    doc["splats"][0]["known"] = "known-splats.yaml:40"
    doc["outcomes"][EVERY_PAIR] = "passed"
    (known / "run.json").write_text(json.dumps(doc))
    c = compare(load_results(AB / "base"), load_results(known))
    assert [s.known for s in c.splats] == [True] and c.worse() == []


def test_compare_command_exit_status_and_files(tmp_path, capsys):
    assert main(["ab", "--compare", str(AB / "base"), str(AB / "changes-nothing"), "--out", str(tmp_path / "a")]) == 0
    assert main(["ab", "--compare", str(AB / "base"), str(AB / "adds-warning"), "--out", str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "0 -> 1   WARNING in p2pmem_alloc_mmap  NEW" in out
    doc = json.loads((tmp_path / "b" / "comparison.json").read_text())
    assert doc["worse"] and doc["splats"][0]["signature"] == "WARNING in p2pmem_alloc_mmap"
    assert (tmp_path / "b" / "report.md").read_text().startswith("# testbed ab")


def test_bad_arguments_fail_before_anything_runs(tmp_path, capsys):
    assert main(["ab", "--compare", str(tmp_path), str(AB / "base")]) == 2
    assert "no run.json" in capsys.readouterr().err
    assert main(["ab", "--patches", str(tmp_path / "missing"), "--", "-m", "p2p"]) == 2
    assert main(["ab", "--patches", str(AB)]) == 2  # no pytest selection
    assert main(["ab", "--patches", str(AB), "--base", "v7.2", "--", "-m", "p2p"]) == 2  # --base needs --ksrc
    with pytest.raises(ConfigError, match="not valid JSON"):
        (tmp_path / "run.json").write_text("{")
        load_results(tmp_path)


def test_ab_over_two_qemus_checks_both_before_running(tmp_path, capsys):
    """--qemus BASE OTHER: one kernel, two QEMUs; a bad QEMU or a kernel-side option is refused
    before either side starts (exit 2, nothing under --out)."""
    out = tmp_path / "ab"
    assert main(["ab", "--qemus", "distro", "/nonexistent/qemu", "--out", str(out), "--", "-m", "p2p"]) == 2
    assert "not 'distro', 'built' or an executable" in capsys.readouterr().err
    series = tmp_path / "s.mbox"
    series.write_text("")
    argv = ["ab", "--qemus", "distro", "built", "--patches", str(series), "--out", str(out), "--", "-m", "p2p"]
    assert main(argv) == 2
    assert "no --patches" in capsys.readouterr().err
    assert not out.exists()


def _outcomes(tmp_path: Path, name: str, outcomes: dict[str, str]) -> Path:
    side = tmp_path / name
    shutil.copytree(AB / "base", side)
    doc = json.loads((side / "run.json").read_text())
    doc["outcomes"] = outcomes
    (side / "run.json").write_text(json.dumps(doc))
    return side


@pytest.mark.parametrize(
    ("before", "after", "worse"),
    [
        ("passed", None, True),  # gone from the series' run: a KUnit suite it dropped
        ("passed", "skipped", True),  # it no longer checks anything
        ("passed", "failed", True),
        ("skipped", "error", True),
        ("xfailed", "xpassed", False),  # a known bug the series fixed
        ("passed", "xfailed", False),  # listed: some known failures come and go on the base itself
        ("failed", "passed", False),
        ("skipped", None, False),
        (None, "passed", False),
    ],
)
def test_what_counts_as_worse(tmp_path, before, after, worse):
    base = {"t::a": "passed", **({"t::x": before} if before else {})}
    series = {"t::a": "passed", **({"t::x": after} if after else {})}
    c = compare(
        load_results(_outcomes(tmp_path, "b", base)),
        load_results(_outcomes(tmp_path, "s", series)),
    )
    assert [t.worse for t in c.tests] == [worse]
    assert bool(c.worse()) is worse


def test_a_splat_the_base_printed_too_is_more_often_not_new(tmp_path):
    more = tmp_path / "more"
    shutil.copytree(AB / "adds-warning", more)
    doc = json.loads((more / "run.json").read_text())
    doc["splats"] = doc["splats"] * 2
    doc["outcomes"][EVERY_PAIR] = "passed"
    (more / "run.json").write_text(json.dumps(doc))
    c = compare(load_results(AB / "adds-warning"), load_results(more))
    (s,) = c.splats
    assert (s.before, s.after, s.new, s.worse) == (1, 2, False, False) and c.worse() == []
    assert any("more often" in line for line in render_text(c))
    gone = compare(load_results(AB / "adds-warning"), load_results(AB / "base"))
    assert [s.known for s in gone.splats] == [False]  # unknown on the base: not "known" once gone


def test_a_change_the_machinery_made_is_inconclusive_not_worse(tmp_path, capsys):
    """A base VM that did not boot (an InfraError) hid every regression of its tests; a
    series-side one blamed the series. Either side's machinery failure makes the change
    inconclusive: listed, exit 3 when nothing else is worse."""
    base = _outcomes(tmp_path, "b", {"t::a": "passed", "t::x": "error"})
    doc = json.loads((base / "run.json").read_text())
    doc["tests"] = {"t::x": {"infra": "InfraError: QEMU exited during boot"}}
    (base / "run.json").write_text(json.dumps(doc))
    series = _outcomes(tmp_path, "s", {"t::a": "passed", "t::x": "failed"})
    c = compare(load_results(base), load_results(series))
    assert c.worse() == [] and c.inconclusive() == ["t::x: error -> failed (base: InfraError: QEMU exited during boot)"]
    assert any("INCONCLUSIVE" in line for line in render_text(c))
    assert main(["ab", "--compare", str(base), str(series), "--out", str(tmp_path / "out")]) == 3
    assert "inconclusive for 1 test(s)" in capsys.readouterr().out


def test_the_base_side_is_built_where_the_series_applies(tmp_path, monkeypatch, capsys):
    """A series with a base-commit: line is applied there; the base side must be built there too,
    or every commit between it and HEAD would count as the series'."""
    from types import SimpleNamespace

    from testbed.ab import commands

    from .git_repos import git, tiny_kernel

    tree = tiny_kernel(tmp_path / "tree")
    first = git(tree, "rev-parse", "HEAD").strip()
    (tree / "later.c").write_text("int later;\n")
    git(tree, "add", "later.c")
    git(tree, "commit", "-q", "-m", "a commit after the series' base")
    head = git(tree, "rev-parse", "HEAD").strip()

    def args(base: str | None, base_commit: str) -> SimpleNamespace:
        monkeypatch.setattr(commands, "discover", lambda path: (SimpleNamespace(base_commit=base_commit),))
        return SimpleNamespace(patches=tmp_path / "s.mbox", ksrc=tree, base=base)

    assert commands._base_side(args(None, first)) == first  # HEAD is later: built at the base-commit
    assert "not on HEAD" in capsys.readouterr().out
    assert commands._base_side(args(None, head)) is None  # the tree as it is
    assert commands._base_side(args(None, "")) is None  # no base-commit: HEAD, as the series side
    assert commands._base_side(args(first[:12], first)) == first[:12]
    with pytest.raises(ConfigError, match="is not the series' base-commit"):
        commands._base_side(args(head, first))


def test_two_runs_of_different_selections_are_said_to_be(tmp_path):
    """--compare and --base-results take runs made elsewhere: a test 'gone' because the other run
    never selected it would read as the series' doing."""

    def side(name: str, chosen: list[str]) -> Path:
        path = _outcomes(tmp_path, name, {"t::a": "passed"})
        doc = json.loads((path / "run.json").read_text())
        doc["selection"] = chosen
        (path / "run.json").write_text(json.dumps(doc))
        return path

    same = compare(load_results(side("b", ["-m", "p2p"])), load_results(side("s", ["-m", "p2p"])))
    assert same.not_alike == ()
    other = compare(load_results(side("b2", ["-m", "p2p"])), load_results(side("s2", ["-m", "vfio"])))
    assert other.not_alike == ("pytest selection: -m p2p | -m vfio",)
    assert any(line.startswith("NOT ONE SELECTION") for line in render_text(other))
