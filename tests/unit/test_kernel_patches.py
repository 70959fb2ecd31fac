"""Patch series: mbox vs directory discovery, and applying them in a worktree (real git, tmp)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.kernel import patches
from testbed.kernel.source import SourceTree, git_identity, user_tree

from .git_repos import git, tiny_kernel

DIFF_A = """\
diff --git a/Makefile b/Makefile
--- a/Makefile
+++ b/Makefile
@@ -1 +1 @@
-VERSION = 7
+VERSION = 8
"""

DIFF_B = """\
diff --git a/Kconfig b/Kconfig
--- a/Kconfig
+++ b/Kconfig
@@ -1 +1,2 @@
 mainmenu "x"
+# patched
"""


def _mail(n: int, subject: str, diff: str, postmark: str = "From git@z Thu Jan  1 00:00:00 1970", of: int = 2) -> str:
    return (
        f"{postmark}\nFrom: Dev <dev@example.org>\nDate: Thu, 1 Jan 2026 00:00:00 +0000\n"
        f"Subject: [PATCH {n}/{of}] {subject}\n\nWhy.\n\nSigned-off-by: Dev <dev@example.org>\n"
        f"---\n{diff}--\n2.47.0\n\n"
    )


COVER = (
    "From git@z Thu Jan  1 00:00:00 1970\nFrom: Dev <dev@example.org>\n"
    "Subject: [PATCH 0/2] the series\n\nA cover letter\n From a quoted line, no diff.\n\n"
)


def test_mbox_is_split_and_the_cover_letter_skipped(tmp_path: Path):
    mbox = tmp_path / "series.mbx"
    mbox.write_text(COVER + _mail(1, "bump version", DIFF_A) + _mail(2, "touch\n Kconfig", DIFF_B))
    series = patches.discover(mbox)
    assert [p.name for p in series] == ["0001 [PATCH 1/2] bump version", "0002 [PATCH 2/2] touch Kconfig"]
    assert all(p.is_mail for p in series)
    assert b"VERSION = 8" in series[0].content and b"patched" not in series[0].content


def test_format_patch_postmark_is_recognised():
    text = _mail(1, "x", DIFF_A, "From 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001", of=1)
    (patch,) = patches.split_mbox(text.encode(), "x.patch")
    assert patch.is_mail and patch.name == "0001 [PATCH 1/1] x"


def test_directory_is_applied_in_name_order(tmp_path: Path):
    (tmp_path / "0002-b.patch").write_text(_mail(2, "b", DIFF_B))
    (tmp_path / "0001-a.patch").write_text(_mail(1, "a", DIFF_A))
    (tmp_path / "0000-cover-letter.patch").write_text(COVER)
    (tmp_path / "notes.txt").write_text(DIFF_A)
    (tmp_path / "10-plain.patch").write_text(DIFF_A)
    series = patches.discover(tmp_path)
    assert [p.name for p in series] == ["0001-a.patch", "0002-b.patch", "10-plain.patch"]
    assert [p.is_mail for p in series] == [True, True, False]


def test_bad_series_paths(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such file"):
        patches.discover(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no \\*.patch files"):
        patches.discover(tmp_path)
    (tmp_path / "x.mbx").write_text(COVER)
    with pytest.raises(ConfigError, match="no patch"):
        patches.discover(tmp_path / "x.mbx")


def test_series_hash_follows_content_and_order(tmp_path: Path):
    a = patches.Patch("a", b"1", True)
    b = patches.Patch("b", b"2", True)
    assert patches.series_hash((a, b)) == patches.series_hash((a, b))
    assert patches.series_hash((a, b)) != patches.series_hash((b, a))
    assert patches.series_hash((a,)) != patches.series_hash((patches.Patch("a", b"3", True),))


# applying, on a tiny git "kernel" in tmp


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return tiny_kernel(tmp_path / "linux")


def test_series_applies_in_a_worktree_and_leaves_the_tree_alone(tree: Path, tmp_path: Path):
    source = user_tree(tree, progress=lambda _: None)
    series = (
        patches.Patch("0001 a", _mail(1, "a", DIFF_A).encode(), True),
        patches.Patch("02-plain.patch", DIFF_B.encode(), False),
    )
    wt = patches.apply_series(source, series, tmp_path / "trees")
    assert (wt / "Makefile").read_text() == "VERSION = 8\n"
    assert "# patched" in (wt / "Kconfig").read_text()
    assert (tree / "Makefile").read_text() == "VERSION = 7\n"
    assert git(tree, "status", "--porcelain") == ""
    # again with only the first patch: same worktree, reset to the base first
    again = patches.apply_series(source, series[:1], tmp_path / "trees")
    assert again == wt and "# patched" not in (wt / "Kconfig").read_text()


def test_uncommitted_changes_are_carried_into_the_worktree(tree: Path, tmp_path: Path):
    (tree / "Kconfig").write_text('mainmenu "x"\n# local edit\n')
    (tree / "new.c").write_text("int x;\n")
    source = user_tree(tree, progress=lambda _: None)
    wt = patches.apply_series(source, (patches.Patch("a", DIFF_A.encode(), False),), tmp_path / "t")
    assert "# local edit" in (wt / "Kconfig").read_text()
    assert (wt / "new.c").read_text() == "int x;\n"
    assert (wt / "Makefile").read_text() == "VERSION = 8\n"


def test_failing_patch_is_named_with_git_output(tree: Path, tmp_path: Path):
    source = user_tree(tree, progress=lambda _: None)
    bad = DIFF_A.replace("-VERSION = 7", "-VERSION = 6")
    series = (
        patches.Patch("0001 good", _mail(1, "good", DIFF_B).encode(), True),
        patches.Patch("0002 [PATCH 2/2] broken", _mail(2, "broken", bad).encode(), True),
    )
    with pytest.raises(ConfigError) as err:
        patches.apply_series(source, series, tmp_path / "trees")
    msg = str(err.value)
    assert "0002 [PATCH 2/2] broken" in msg and "git am" in msg and "Makefile" in msg
    # the next run starts clean (no am session left behind)
    wt = patches.apply_series(source, series[:1], tmp_path / "trees")
    assert "# patched" in (wt / "Kconfig").read_text()


def test_plain_tree_is_copied_not_modified(tmp_path: Path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "Makefile").write_text("VERSION = 7\n")
    (plain / "Kconfig").write_text('mainmenu "x"\n')
    source = user_tree(plain, progress=lambda _: None)
    assert source.kind == "tree"
    wt = patches.apply_series(source, (patches.Patch("a", DIFF_A.encode(), False),), tmp_path / "t")
    assert (wt / "Makefile").read_text() == "VERSION = 8\n"
    assert (plain / "Makefile").read_text() == "VERSION = 7\n" and not (plain / ".git").exists()


def test_git_identity_tracks_head_diff_and_untracked(tree: Path):
    head, first = git_identity(tree)
    assert first.startswith(f"git:{head}:")
    assert git_identity(tree)[1] == first
    (tree / "Kconfig").write_text('mainmenu "y"\n')
    second = git_identity(tree)[1]
    assert second != first
    (tree / "new.c").write_text("int y;\n")
    assert git_identity(tree)[1] not in (first, second)


def test_in_tree_configured_source_is_refused(tree: Path):
    (tree / ".config").write_text("CONFIG_A=y\n")
    with pytest.raises(ConfigError, match="mrproper"):
        user_tree(tree)


def test_not_a_kernel_tree(tmp_path: Path):
    with pytest.raises(ConfigError, match="not a kernel source tree"):
        user_tree(tmp_path)


def test_source_tree_is_a_value():
    assert SourceTree(Path("/x"), "id", "git", "h") == SourceTree(Path("/x"), "id", "git", "h")


def test_a_rewrite_in_the_same_clock_tick_as_the_commit_still_changes_the_identity(tree: Path):
    """Racy git: a file rewritten at its old size within the clock tick in which `git add` wrote
    the index has the stat data the index holds (mtimes are coarse), so only the index's own
    mtime (not older than the entry's) tells git to compare contents; the private copy of the
    index must keep it. Set up by hand: the tick T, and ctime out of play."""
    git(tree, "config", "core.trustctime", "false")  # ctime cannot be set from here
    tick = (1_700_000_000, 1_700_000_000)
    kconfig = tree / "Kconfig"
    os.utime(kconfig, tick)
    git(tree, "update-index", "--refresh")  # the entry's mtime: T
    index = tree / ".git" / "index"
    os.utime(index, tick)  # written in the same tick
    first = git_identity(tree)[1]
    kconfig.write_text('mainmenu "y"\n')  # the size of 'mainmenu "x"'
    os.utime(kconfig, tick)
    assert git_identity(tree)[1] != first
