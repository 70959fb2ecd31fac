"""gcovr over gcov counters laid out like a kernel's: a tiny program built the way kbuild builds
(the compiler runs in the build directory), run twice, its counters taken into two snapshot
directories, each made a tracefile, the two merged.

kbuild names sources by `$(srctree)`: `../src/...` style relative names (the tests' sibling
layout), `../drivers/...` for O= inside the tree, absolute paths for O= outside it, and
kernel-relative names when built with -fprofile-prefix-map. Each must come out kernel-relative.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.coverage import gcovr
from testbed.coverage.scope import Scope, ScopeEntry
from testbed.errors import ConfigError

FOO_C = Path(__file__).resolve().parent.parent / "fixtures" / "coverage" / "src" / "drivers" / "x" / "foo.c"
FOO = "drivers/x/foo.c"

needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which(gcovr.gcov_executable()) is None, reason="needs gcc and its gcov"
)


class Tree:
    """A source tree and a build directory; `build` compiles foo.c from the build directory."""

    def __init__(self, root: Path, layout: str):
        self.layout = layout
        self.srctree = root / ("linux" if layout == "o-inside" else "src")
        self.builddir = self.srctree / "build" if layout == "o-inside" else root / "build"
        (self.srctree / "drivers" / "x").mkdir(parents=True)
        (self.builddir / "drivers" / "x").mkdir(parents=True)
        shutil.copy(FOO_C, self.srctree / FOO)
        self.root = root

    def build(self) -> None:
        source = {
            "sibling": f"../src/{FOO}",
            "o-inside": f"../{FOO}",
            "absolute": str(self.srctree / FOO),
            "prefix-map": str(self.srctree / FOO),
        }[self.layout]
        extra = [f"-fprofile-prefix-map={self.srctree}/="] if self.layout == "prefix-map" else []
        cc = ["gcc", "--coverage", "-O0", *extra]
        subprocess.run([*cc, "-c", "-o", "drivers/x/foo.o", source], cwd=self.builddir, check=True)
        subprocess.run([*cc, "-o", "foo", "drivers/x/foo.o"], cwd=self.builddir, check=True)

    def run(self, snapshot: str, *args: str) -> Path:
        """Run the program, move its counters into a snapshot directory (as a guest copy would)."""
        subprocess.run(["./foo", *args], cwd=self.builddir, check=True, capture_output=True)
        snap = self.root / snapshot / "drivers" / "x"
        snap.mkdir(parents=True)
        shutil.move(self.builddir / "drivers" / "x" / "foo.gcda", snap / "foo.gcda")
        return self.root / snapshot


def _scope(*paths: str) -> Scope:
    return Scope(Path("scope.yaml"), tuple(ScopeEntry(p, "why", None, f"scope.yaml:{i}") for i, p in enumerate(paths)))


def _counts(tracefile: Path) -> dict[int, int]:
    (file,) = json.loads(tracefile.read_text())["files"]
    assert file["file"] == FOO
    return {line["line_number"]: line["count"] for line in file["lines"]}


@needs_gcc
@pytest.mark.parametrize("layout", ["sibling", "o-inside", "absolute", "prefix-map"])
def test_two_snapshots_make_tracefiles_and_merge(tmp_path, layout):
    tree = Tree(tmp_path, layout)
    tree.build()
    one = tree.run("snap1", "4", "0")  # bus address, every range mapped
    two = tree.run("snap2", "-1", "1", "1")  # not supported, the unwind taken
    out = tmp_path / "out"
    t1 = gcovr.tracefile(one, tree.builddir, tree.srctree, out / "snap1.json")
    t2 = gcovr.tracefile(two, tree.builddir, tree.srctree, out / "snap2.json", scope=_scope(FOO))
    assert (_counts(t1)[26], _counts(t1)[16]) == (0, 1)  # the goto of the unwind; the bus-address return
    assert (_counts(t2)[26], _counts(t2)[16]) == (1, 0)
    assert (out / "snap1.log").read_text().startswith(f"$ {sys.executable} -m gcovr ")

    report = gcovr.merge([t1, t2], tree.srctree, out / "merged", _scope(FOO))
    merged = json.loads(report.json.read_text())
    assert _counts(report.json)[13] == 2 and _counts(report.json)[26] == 1 and _counts(report.json)[41] == 0
    functions = {f["name"]: f["execution_count"] for f in merged["files"][0]["functions"]}
    assert functions == {"map_type": 2, "map_ranges": 2, "never_called": 0, "main": 2}
    lcov = report.lcov.read_text()
    assert f"SF:{tree.srctree.resolve() / FOO}\n" in lcov and "FNDA:2,map_type" in lcov and "DA:26,1" in lcov
    assert f'filename="{FOO}"' in report.cobertura.read_text()
    assert "foo.c" in report.html.read_text() and list(report.html.parent.glob("index.foo.c.*.html"))
    # gcov ran in private directories: nothing left in the build directory or the tree
    assert not list(tmp_path.rglob("*.gcov")) and not list(tmp_path.rglob(".testbed-gcov-*"))


@needs_gcc
def test_a_scope_file_without_counters_counts_as_never_run(tmp_path):
    tree = Tree(tmp_path, "sibling")
    tree.build()
    empty = tmp_path / "snap-empty"
    empty.mkdir()  # the module was never loaded: no counters, but the notes are there
    counts = _counts(gcovr.tracefile(empty, tree.builddir, tree.srctree, tmp_path / "t.json", scope=_scope(FOO)))
    assert counts and set(counts.values()) == {0}


@needs_gcc
def test_only_the_scope_counts(tmp_path):
    tree = Tree(tmp_path, "sibling")
    tree.build()
    snap = tree.run("snap", "4", "0")
    with pytest.raises(ConfigError, match="no .gcda counters in .* for the files of scope.yaml"):
        gcovr.tracefile(snap, tree.builddir, tree.srctree, tmp_path / "t.json", scope=_scope("drivers/pci/p2pdma.c"))
    (other,) = json.loads(
        gcovr.merge(
            [gcovr.tracefile(snap, tree.builddir, tree.srctree, tmp_path / "t.json")],
            tree.srctree,
            tmp_path / "m",
            _scope("drivers/pci/p2pdma.c", "drivers/x/foo.c"),
        ).json.read_text()
    )["files"]
    assert other["file"] == FOO


@needs_gcc
def test_counters_of_another_build_are_refused(tmp_path):
    tree = Tree(tmp_path, "sibling")
    tree.build()
    snap = tree.run("snap", "4", "0")
    (tree.srctree / FOO).write_text((tree.srctree / FOO).read_text().replace("v * 2", "v * 3"))
    tree.build()  # new notes, old counters
    with pytest.raises(ConfigError, match="another build than its .gcno notes .*stamp mismatch"):
        gcovr.tracefile(snap, tree.builddir, tree.srctree, tmp_path / "t.json")
    shutil.rmtree(tree.builddir / "drivers")
    with pytest.raises(ConfigError, match=r"has no .gcno notes for 1 counter file\(s\) .*drivers/x/foo.gcda"):
        gcovr.tracefile(snap, tree.builddir, tree.srctree, tmp_path / "t.json")


@needs_gcc
def test_sources_of_another_tree_are_named(tmp_path):
    tree = Tree(tmp_path, "absolute")
    tree.build()
    snap = tree.run("snap", "4", "0")
    copy = tmp_path / "copy"
    shutil.copytree(tree.srctree, copy)  # the notes name the original tree's absolute paths
    with pytest.raises(ConfigError, match="none of the sources the notes in .* name is under .*copy"):
        gcovr.tracefile(snap, tree.builddir, copy, tmp_path / "t.json")


def test_inputs_are_checked_first(tmp_path):
    with pytest.raises(ConfigError, match="the snapshot .* is not a directory"):
        gcovr.tracefile(tmp_path / "none", tmp_path, tmp_path, tmp_path / "t.json")
    with pytest.raises(ConfigError, match="no tracefiles to merge"):
        gcovr.merge([], tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="tracefiles missing: .*nope.json"):
        gcovr.merge([tmp_path / "nope.json"], tmp_path, tmp_path / "out")


def test_tracefile_argv():
    argv = gcovr.tracefile_argv(Path("/w"), Path("/src"), Path("/o/t.json"), "gcov-12", ["/src/a\\.c$"])
    assert argv[:3] == [sys.executable, "-m", "gcovr"]
    assert argv[argv.index("--root") + 1] == "/src" and argv[argv.index("--gcov-executable") + 1] == "gcov-12"
    assert argv[argv.index("--gcov-object-directory") + 1] == "/w" and argv[-1] == "/w"
    assert "--exclude-unreachable-branches" in argv and argv[argv.index("--filter") + 1] == "/src/a\\.c$"


def test_gcov_matches_the_compiler(tmp_path):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'gcc (Debian 99.1.0-1) 99.1.0'\n")
    fake.chmod(0o755)
    assert gcovr.gcov_executable(str(fake)) == "gcov"  # no gcov-99 here
    assert gcovr.gcov_executable(str(tmp_path / "no-such-cc")) == "gcov"
    if shutil.which("gcc") and shutil.which("gcov-12"):
        major = subprocess.run(["gcc", "-dumpversion"], capture_output=True, text=True).stdout.strip().split(".")[0]
        assert gcovr.gcov_executable("gcc") == f"gcov-{major}"
