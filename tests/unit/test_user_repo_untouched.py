"""The user's kernel repository stays byte-identical. The series-apply path (`--patches`) and the
tree preparation of `testbed ab --base` and `testbed bisect` work in the testbed's own
repositories in the cache (borrowing the user's objects read-only), and every file and directory
of the user's .git is as it was: refs, packed-refs, worktrees/, config, index, HEAD, every loose
object and pack (content, mode and mtime), including the registration of a worktree of the
user's whose directory is gone, which `git worktree prune` would have dropped."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed.ab import bisect as bisect_mod
from testbed.ab.worktree import checkout
from testbed.kernel import ownrepo, patches
from testbed.kernel.build import kernel_root
from testbed.kernel.source import SourceTree, user_tree

from .git_repos import git

_PAST = time.time() - 3600  # files older than the index: no racily clean entries to refresh


def _write(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    os.utime(repo / name, (_PAST, _PAST))


def _commit(repo: Path, name: str, text: str, subject: str) -> str:
    _write(repo, name, text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", subject)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def user(tmp_path: Path) -> Path:
    """A user's kernel repository as they are: history with tags and a branch, packed refs, a
    pack and loose objects, a worktree whose directory they deleted (prunable, still registered)."""
    repo = tmp_path / "linux"
    repo.mkdir()
    git(repo, "init", "-q")
    _commit(repo, "Makefile", "VERSION = 7\n", "c0")
    _commit(repo, "Kconfig", 'mainmenu "x"\n', "c1")
    git(repo, "tag", "-a", "-m", "v1", "v1")
    git(repo, "branch", "topic")
    git(repo, "gc", "-q")  # a pack and packed-refs
    _commit(repo, "f", "good\n", "c2")  # loose objects from here on
    _commit(repo, "f", "bad\n", "c3")
    _commit(repo, "g", "1\n", "c4")
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "gone"), "HEAD~1")
    shutil.rmtree(tmp_path / "gone")
    assert "prunable" in git(repo, "worktree", "list", "--porcelain")
    return repo


def snapshot(repo: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under .git: directories, and files with their bytes' hash, mode and mtime."""
    out: dict[str, tuple[object, ...]] = {}
    for path in sorted((repo / ".git").rglob("*")):
        info = path.lstat()
        if path.is_dir() and not path.is_symlink():
            out[str(path.relative_to(repo))] = ("dir", info.st_mode)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(repo))] = ("file", digest, info.st_mode, info.st_mtime_ns)
    return out


def assert_unchanged(before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]) -> None:
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert (sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys()), changed) == ([], [], [])


def _series(user: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    """Two mboxes made in a clone: one on the user's HEAD, one with base-commit: HEAD~2."""
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(user), str(clone))
    head = git(clone, "rev-parse", "HEAD").strip()
    _commit(clone, "Makefile", "VERSION = 8\n", "bump")
    on_head = tmp_path / "on-head.mbox"
    on_head.write_text(git(clone, "format-patch", "--stdout", "--thread", "--cover-letter", f"{head}..HEAD"))
    base = git(clone, "rev-parse", "HEAD~3").strip()
    git(clone, "checkout", "-q", "--detach", base)
    _commit(clone, "Kconfig", 'mainmenu "y"\n', "rename")
    on_base = tmp_path / "on-base.mbox"
    on_base.write_text(git(clone, "format-patch", "--stdout", f"--base={base}", f"{base}..HEAD"))
    return on_head, on_base, base


def _fake_step(tmp_path: Path) -> Path:
    """What `git bisect run` calls instead of a kernel build and pytest: bad where f says so."""
    script = tmp_path / "step"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, subprocess, sys\n"
        "out = pathlib.Path(sys.argv[3])\n"
        "commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()\n"
        "bad = pathlib.Path('f').is_file() and pathlib.Path('f').read_text() == 'bad\\n'\n"
        "step = dict(commit=commit, subject='', verdict='bad' if bad else 'good', failed=[], new_splats=[],\n"
        "            results='', seconds=0.0)\n"
        "with (out / 'steps.jsonl').open('a') as f:\n"
        "    f.write(json.dumps(step) + '\\n')\n"
        "sys.exit(1 if bad else 0)\n"
    )
    script.chmod(0o755)
    return script


def test_series_ab_and_bisect_leave_the_users_repository_byte_identical(
    user: Path, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
):
    on_head, on_base, base = _series(user, tmp_path)
    (user / "Kconfig").write_text('mainmenu "local edit"\n')  # uncommitted: carried into the tree
    (user / "local.c").write_text("int local;\n")  # untracked: carried too
    before = snapshot(user)
    trees = kernel_root() / "trees"

    # --patches: as build.py applies a series (and a base-fix or coverage build without one)
    source = user_tree(user, progress=lambda _: None)
    tree = patches.apply_series(source, patches.discover(on_head), trees)
    assert (tree / "Makefile").read_text() == "VERSION = 8\n" and (tree / "local.c").is_file()
    assert (tree / "Kconfig").read_text() == 'mainmenu "local edit"\n'
    tree = patches.apply_series(source, patches.discover(on_base), trees)
    assert git(tree, "rev-parse", "HEAD~1").strip() == base and (tree / "Kconfig").read_text() == 'mainmenu "y"\n'
    patches.apply_series(source, (), trees / "base-fixes")
    patches.apply_series(source, (), trees / "coverage")

    # testbed ab --base, twice (the second reuses the repository)
    ab_tree = checkout(user, "v1", "ab-base")
    assert not (ab_tree / "f").exists()
    assert checkout(user, "topic", "ab-base") == ab_tree

    # testbed bisect, with real `git bisect run` and a step that needs no kernel
    monkeypatch.setattr(bisect_mod, "sys", SimpleNamespace(executable=str(_fake_step(tmp_path))))
    good, bad = git(user, "rev-parse", "HEAD~2").strip(), git(user, "rev-parse", "HEAD").strip()
    result = bisect_mod.bisect(user, good, bad, ["-m", "x"], "default", tmp_path / "bisect")
    assert result.first_bad is not None and result.first_bad.commit == git(user, "rev-parse", "HEAD~1").strip()

    assert_unchanged(before, snapshot(user))
    assert {".git/packed-refs", ".git/index", ".git/HEAD", ".git/config", ".git/worktrees/gone/gitdir"} <= before.keys()
    assert any(k.endswith(".pack") for k in before) and any(len(Path(k).name) == 38 for k in before)
    assert "prunable" in git(user, "worktree", "list", "--porcelain")  # still registered
    for made in (tree, ab_tree, trees / "base-fixes", trees / "coverage"):
        for repo in [made] if (made / ".git").exists() else made.iterdir():
            assert (repo / ".git").is_dir()  # repositories of their own, not linked worktrees
            assert (repo / ".git/objects/info/alternates").read_text() == f"{user}/.git/objects\n"


def test_applying_reads_local_changes_without_refreshing_the_index(user: Path, tmp_path: Path):
    """`git diff` would rewrite the index of a tree whose files were only touched."""
    os.utime(user / "Makefile")  # same bytes, new mtime: stat-dirty
    (user / "g").write_text("2\n")
    before = snapshot(user)
    head = git(user, "rev-parse", "HEAD").strip()
    source = SourceTree(user, "git:x", "git", head)
    tree = patches.apply_series(source, (), tmp_path / "trees")
    assert (tree / "g").read_text() == "2\n"
    assert_unchanged(before, snapshot(user))


def test_an_old_linked_worktree_in_the_cache_is_replaced_not_pruned(
    user: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    trees = tmp_path / "trees"
    old = patches.worktree_path(user, trees)
    git(user, "worktree", "add", "-q", "--detach", str(old), "HEAD")  # what an older testbed did
    before = snapshot(user)
    head = git(user, "rev-parse", "HEAD").strip()
    with caplog.at_level(logging.WARNING):
        tree = patches.apply_series(SourceTree(user, "git:x", "git", head), (), trees)
    assert tree == old and (tree / ".git").is_dir() and (tree / "g").read_text() == "1\n"
    assert "linked worktree" in caplog.text and f"{user}/.git/worktrees/" in caplog.text
    assert_unchanged(before, snapshot(user))


def test_a_broken_repository_of_ours_is_made_anew(user: Path, tmp_path: Path):
    head = git(user, "rev-parse", "HEAD").strip()
    path = ownrepo.checkout(tmp_path / "t", user, head)
    (path / ".git" / "index").write_bytes(b"garbage")
    assert ownrepo.checkout(path, user, git(user, "rev-parse", "HEAD~1").strip()) == path
    assert (path / "f").read_text() == "bad\n" and not (path / "g").exists()


def test_reading_the_identity_of_a_touched_tree_leaves_its_index_alone(user: Path):
    """`git diff HEAD` would refresh the index's stat data of a touched file: it reads a copy."""
    os.utime(user / "Makefile")  # same bytes, new mtime: stat-dirty
    before = snapshot(user)
    user_tree(user, progress=lambda _: None)
    assert_unchanged(before, snapshot(user))
