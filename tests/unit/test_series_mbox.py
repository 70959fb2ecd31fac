"""Series input at b4's level: mboxes made by real `git format-patch` in a tmp repository, read
by b4's rules (thread order, newest revision, no cover letter or replies) and applied on their
`base-commit:` in the testbed's own repository of the tree."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.kernel import mbox, patches
from testbed.kernel.source import SourceTree, user_tree

from .git_repos import git, tiny_kernel


def _commit(repo: Path, name: str, text: str, subject: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", subject)
    return git(repo, "rev-parse", "HEAD").strip()


def _format_patch(repo: Path, base: str, *extra: str) -> list[str]:
    """The messages `git format-patch --thread` writes for base..HEAD, one string each."""
    out = repo.parent / "out"
    git(repo, "format-patch", "-q", "--thread", "-o", str(out), *extra, f"{base}..HEAD")
    files = sorted(out.iterdir())
    texts = [f.read_text() for f in files]
    for f in files:
        f.unlink()
    return texts


def _msgid(message: str) -> str:
    return next(line.split(None, 1)[1] for line in message.splitlines() if line.lower().startswith("message-id:"))


def _mbox(path: Path, *messages: str) -> Path:
    path.write_text("".join(m if m.endswith("\n\n") else m + "\n" for m in messages))
    return path


def _review(of: str, subject: str) -> str:
    """A reviewer's reply to message `of` quoting it and proposing a diff of their own inline."""
    return (
        "From reviewer@z Thu Jan  1 00:00:00 1970\n"
        "From: Rev <rev@example.org>\nDate: Fri, 2 Jan 2026 00:00:00 +0000\n"
        f"Subject: Re: {subject}\nMessage-Id: <review-1@example.org>\nIn-Reply-To: {of}\nReferences: {of}\n\n"
        "> +VERSION = 8\n\nWhy not this instead:\n\n"
        "diff --git a/Makefile b/Makefile\n--- a/Makefile\n+++ b/Makefile\n@@ -1 +1 @@\n-VERSION = 7\n+VERSION = 99\n\n"
        "Reviewed-by: Rev <rev@example.org>\n"
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return tiny_kernel(tmp_path / "linux")


def _subjects(repo: Path, base: str) -> list[str]:
    return git(repo, "log", "--reverse", "--format=%s", f"{base}..HEAD").splitlines()


def _series_on(tree: Path, cover: bool = True) -> tuple[str, list[str]]:
    """Two patches on the tree's HEAD where 2/2 only applies after 1/2, then HEAD moved back.
    `--base` writes base-commit: in the cover letter, or without one in 1/2."""
    base = git(tree, "rev-parse", "HEAD").strip()
    _commit(tree, "Makefile", "VERSION = 8\n", "bump the version")
    _commit(tree, "Makefile", "VERSION = 8\nPATCHLEVEL = 1\n", "add a patchlevel")
    messages = _format_patch(tree, base, *(["--cover-letter"] if cover else []), f"--base={base}")
    git(tree, "reset", "-q", "--hard", base)
    return base, messages


def test_a_thread_applies_in_patch_order_without_cover_and_review(tree: Path, tmp_path: Path):
    base, (cover, one, two) = _series_on(tree)
    review = _review(_msgid(one), "[PATCH 1/2] bump the version")
    thread = _mbox(tmp_path / "thread.mbox", cover, two, review, one)
    series = patches.discover(thread)
    assert [p.name for p in series] == ["0001 [PATCH 1/2] bump the version", "0002 [PATCH 2/2] add a patchlevel"]
    assert {p.base_commit for p in series} == {base}
    wt = patches.apply_series(user_tree(tree, progress=lambda _: None), series, tmp_path / "trees")
    assert (wt / "Makefile").read_text() == "VERSION = 8\nPATCHLEVEL = 1\n"  # not the review's 99
    assert _subjects(wt, base) == ["bump the version", "add a patchlevel"]


def test_only_the_newest_revision_applies(tree: Path, tmp_path: Path):
    base = git(tree, "rev-parse", "HEAD").strip()
    _commit(tree, "Makefile", "VERSION = 8\n", "bump the version")
    _commit(tree, "Kconfig", 'mainmenu "v1"\n', "name it")
    v1 = _format_patch(tree, base, "-v1", "--cover-letter")
    git(tree, "reset", "-q", "--hard", base)
    # v2 reworks the series; amended commits keep v1's author date, so the number decides
    _commit(tree, "Makefile", "VERSION = 9\n", "bump the version further")
    _commit(tree, "Kconfig", 'mainmenu "v2"\n', "name it better")
    _commit(tree, "README", "hello\n", "say hello")
    v2 = _format_patch(tree, base, "-v2", "--cover-letter")
    git(tree, "reset", "-q", "--hard", base)
    # v2 before v1 in the file and its patches shuffled: neither order matters
    both = _mbox(tmp_path / "both.mbox", v2[0], v2[3], v2[1], v2[2], *v1)
    series = patches.discover(both)
    assert [p.name[5:] for p in series] == [
        "[PATCH v2 1/3] bump the version further",
        "[PATCH v2 2/3] name it better",
        "[PATCH v2 3/3] say hello",
    ]
    wt = patches.apply_series(user_tree(tree, progress=lambda _: None), series, tmp_path / "trees")
    assert (wt / "Makefile").read_text() == "VERSION = 9\n" and (wt / "Kconfig").read_text() == 'mainmenu "v2"\n'


def test_base_commit_is_honoured_when_head_moved_on(tree: Path, tmp_path: Path):
    base, (one, two) = _series_on(tree, cover=False)
    # the user's HEAD moved on, with a change the series would not apply on
    _commit(tree, "Makefile", "VERSION = 7\nEXTRAVERSION = -rc1\n", "start rc1")
    (tree / "local.c").write_text("int local;\n")  # made on HEAD: not carried onto the base
    series = patches.discover(_mbox(tmp_path / "s.mbox", one, two))  # no cover: base-commit is in 1/2
    assert series[0].base_commit == base
    wt = patches.apply_series(user_tree(tree, progress=lambda _: None), series, tmp_path / "trees")
    assert (wt / "Makefile").read_text() == "VERSION = 8\nPATCHLEVEL = 1\n"
    assert git(wt, "rev-parse", "HEAD~2").strip() == base and not (wt / "local.c").exists()
    # the same series without its base-commit: line goes on HEAD, where it does not apply
    bare = [m.replace(f"base-commit: {base}\n", "") for m in (one, two)]
    with pytest.raises(ConfigError, match="does not apply"):
        patches.apply_series(
            user_tree(tree, progress=lambda _: None),
            patches.discover(_mbox(tmp_path / "b.mbox", *bare)),
            tmp_path / "t",
        )


def test_a_base_commit_the_tree_lacks_is_a_clear_error(tree: Path, tmp_path: Path):
    other = tiny_kernel(tmp_path / "elsewhere", {"extra": "1\n"})  # a history the tree does not have
    elsewhere = git(other, "rev-parse", "HEAD").strip()
    _commit(other, "Makefile", "VERSION = 8\n", "bump the version")
    (message,) = _format_patch(other, elsewhere, f"--base={elsewhere}")
    series = patches.discover(_mbox(tmp_path / "s.mbox", message))
    with pytest.raises(ConfigError) as err:
        patches.apply_series(user_tree(tree, progress=lambda _: None), series, tmp_path / "trees")
    text = str(err.value)
    assert elsewhere in text and str(tree) in text and "fetch" in text and "delete the base-commit: line" in text
    # a tree without git history cannot have it either
    plain = SourceTree(tmp_path / "plain", "tree:x", "tree")
    plain.path.mkdir()
    (plain.path / "Makefile").write_text("VERSION = 7\n")
    with pytest.raises(ConfigError, match="without git history. Build with --ksrc"):
        patches.apply_series(plain, series, tmp_path / "trees")


def test_an_abbreviated_base_commit_is_resolved(tree: Path, tmp_path: Path):
    base, (one, two) = _series_on(tree, cover=False)
    short = [m.replace(f"base-commit: {base}", f"base-commit: {base[:12]}") for m in (one, two)]
    series = patches.discover(_mbox(tmp_path / "s.mbox", *short))
    wt = patches.apply_series(user_tree(tree, progress=lambda _: None), series, tmp_path / "trees")
    assert git(wt, "rev-parse", "HEAD~2").strip() == base


def test_a_directory_from_format_patch_honours_its_cover_letters_base(tree: Path, tmp_path: Path):
    base, messages = _series_on(tree)
    series_dir = tmp_path / "dir"
    series_dir.mkdir()
    for name, text in zip(("0000-cover-letter.patch", "0001-bump.patch", "0002-level.patch"), messages, strict=True):
        (series_dir / name).write_text(text)
    series = patches.discover(series_dir)
    assert [p.name for p in series] == ["0001-bump.patch", "0002-level.patch"]
    assert {p.base_commit for p in series} == {base}


def test_incomplete_or_doubled_series_are_refused(tree: Path, tmp_path: Path):
    _, (cover, one, two) = _series_on(tree)
    with pytest.raises(ConfigError, match=r"incomplete: 1/2 missing \(it has 2/2\)"):
        patches.discover(_mbox(tmp_path / "a.mbox", cover, two))
    again = one.replace(_msgid(one), "<another@example.org>").replace("bump the version", "bump it")
    with pytest.raises(ConfigError, match="two messages are patch 1 of v1"):
        patches.discover(_mbox(tmp_path / "b.mbox", one, again, two))
    # the same message twice (a thread saved from two lists) is one message
    assert len(patches.discover(_mbox(tmp_path / "c.mbox", one, two, one))) == 2


def test_unnumbered_patches_keep_the_file_order_and_a_gzip_mbox_reads(tree: Path, tmp_path: Path):
    base = git(tree, "rev-parse", "HEAD").strip()
    _commit(tree, "Makefile", "VERSION = 8\n", "bump")
    _commit(tree, "Kconfig", 'mainmenu "y"\n', "rename")
    messages = _format_patch(tree, base, "--no-numbered")
    data = "".join(messages).encode()
    (tmp_path / "t.mbox.gz").write_bytes(gzip.compress(data))
    series = patches.discover(tmp_path / "t.mbox.gz")
    assert [p.name for p in series] == ["0001 [PATCH] bump", "0002 [PATCH] rename"]
    assert series[0].base_commit == ""


def test_series_hash_counts_the_base_commit_only_when_there_is_one():
    a = patches.Patch("a", b"1", True)
    assert patches.series_hash((a,)) == patches.series_hash((patches.Patch("a", b"1", True, ""),))
    assert patches.series_hash((a,)) != patches.series_hash((patches.Patch("a", b"1", True, "abc1234"),))


@pytest.mark.parametrize(
    ("subject", "reply", "revision", "counter", "expected", "numbered"),
    [
        ("[PATCH v3 02/10] PCI/P2PDMA: x", False, 3, 2, 10, True),
        ("[PATCHv2 1/2] x", False, 2, 1, 2, True),
        ("[RFC PATCH 0/3] x", False, 1, 0, 3, True),
        ("Re: [PATCH v2 1/2] x", True, 2, 1, 2, True),
        ("AW: [PATCH 1/2] x", True, 1, 1, 2, True),
        ("[PATCH] x", False, 1, 1, 1, False),
        ("[PATCH 6/5] x", False, 1, 6, 6, True),
        ("[PATCH net-next v4 1/3] x", False, 4, 1, 3, True),
        ("Re: x", True, 1, 1, 1, False),
    ],
)
def test_subjects_read_as_b4_reads_them(subject, reply, revision, counter, expected, numbered):
    s = mbox.parse_subject(subject)
    assert (s.reply, s.revision, s.counter, s.expected, s.numbered) == (reply, revision, counter, expected, numbered)


def test_a_patch_without_vn_takes_its_cover_letters_revision(tree: Path, tmp_path: Path):
    base, (cover, one, two) = _series_on(tree)
    v2_cover = cover.replace("[PATCH 0/2]", "[PATCH v2 0/2]")
    v1 = [
        m.replace(_msgid(m), f"<v1-{i}@example.org>").replace("In-Reply-To", "X-Old") for i, m in enumerate((one, two))
    ]
    older = [m.replace("bump the version", "bump v1") for m in v1]
    # v2's patches forgot their "v2" but reply to the v2 cover letter
    chosen = mbox.read(_mbox(tmp_path / "m.mbox", *older, v2_cover, one, two).read_bytes(), "m")
    assert chosen.revision == 2 and [m.subject.text for m in chosen.patches] == [
        "[PATCH 1/2] bump the version",
        "[PATCH 2/2] add a patchlevel",
    ]
    assert chosen.base_commit == base and any("superseded by v2" in d for d in chosen.dropped)


def test_mboxrd_escapes_are_undone():
    raw = (
        b"From mboxrd@z Thu Jan  1 00:00:00 1970\nFrom: Dev <d@e.org>\nSubject: [PATCH] x\n\n"
        b">From the start, a quoted line.\n---\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n-a\n+b\n"
    )
    (message,) = mbox.split(raw)
    assert b"\nFrom the start, a quoted line." in message
