"""Patch series: find them (an mbox as b4 writes it, or a directory of .patch files) and apply
them in a git worktree of the source, never in the user's tree.

The worktree lives as long as the source location does: re-applying a changed series only
rewrites the files that differ, so kbuild rebuilds only what the series touches.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InfraError
from ..hashing import hash_bytes, short
from .source import SourceTree, git

# an mbox postmark: "From <sha or git@z> <weekday> <month> <day> <hh:mm:ss> <year>"
_POSTMARK = re.compile(rb"^From \S+ +\w{3} \w{3} [ \d]?\d \d\d:\d\d:\d\d \d{4}\s*$", re.MULTILINE)
_SUBJECT = re.compile(rb"^Subject: *(.*(?:\n[ \t].*)*)", re.MULTILINE)
# git's own settings for our commands: no user hooks, no signing, a fixed committer
_GIT_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "user.name=testbed",
    "-c",
    "user.email=testbed@localhost",
)


@dataclass(frozen=True)
class Patch:
    name: str  # file name, or "NNNN subject" for a message of an mbox
    content: bytes
    is_mail: bool  # has mail headers: `git am`; a bare diff goes through `git apply`


def _has_diff(content: bytes) -> bool:
    return b"\ndiff --git " in content or b"\n--- " in content


def split_mbox(data: bytes, name: str) -> tuple[Patch, ...]:
    """Messages of an mbox that carry a diff (a cover letter has none and is skipped)."""
    starts = [m.start() for m in _POSTMARK.finditer(data)]
    if not starts or data[: starts[0]].strip():
        starts = [0, *starts]
    chunks = [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]
    out: list[Patch] = []
    for chunk in chunks:
        if not _has_diff(b"\n" + chunk):
            continue
        subject = _SUBJECT.search(chunk)
        title = b" ".join(subject.group(1).split()).decode(errors="replace") if subject else name
        is_mail = bool(_POSTMARK.match(chunk)) or bool(subject)
        out.append(Patch(f"{len(out) + 1:04d} {title}", chunk, is_mail))
    return tuple(out)


def discover(path: Path) -> tuple[Patch, ...]:
    """The series at `path`: a directory of *.patch files (name order) or one mbox/patch file."""
    path = path.expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".patch" and p.is_file())
        if not files:
            raise ConfigError(f"--patches {path}: directory has no *.patch files")
        series = []
        for file in files:
            data = file.read_bytes()
            if not _has_diff(b"\n" + data):
                continue  # e.g. 0000-cover-letter.patch
            series.append(
                Patch(file.name, data, bool(_POSTMARK.match(data)) or data.startswith((b"From:", b"Subject:")))
            )
        if not series:
            raise ConfigError(f"--patches {path}: no *.patch file contains a diff")
        return tuple(series)
    if path.is_file():
        from_mbox = split_mbox(path.read_bytes(), path.name)
        if not from_mbox:
            raise ConfigError(f"--patches {path}: no patch (no diff) found in this file")
        return from_mbox
    raise ConfigError(f"--patches {path}: no such file or directory")


def series_hash(series: tuple[Patch, ...]) -> str:
    return hash_bytes(*(part for p in series for part in (p.name.encode(), p.content)))


def _git_in(tree: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *_GIT_CONFIG, "-C", str(tree), *args], input=stdin, capture_output=True)


def _checked(tree: Path, *args: str) -> None:
    proc = _git_in(tree, *args)
    if proc.returncode != 0:
        raise InfraError(
            f"git {' '.join(args)} in {tree} failed: {(proc.stdout + proc.stderr).decode(errors='replace').strip()}"
        )


def _base_repo(source: SourceTree, trees: Path) -> tuple[Path, str]:
    """A git repository holding the source as a commit: the user's repo, or our own one."""
    if source.kind == "git" and source.git_head:
        return source.path, source.git_head
    # Debian's tree is ours to turn into a repository; a user's plain tree is copied first
    copy = trees / f"copy-{short(hash_bytes(source.identity.encode()))}"
    repo = source.path if source.kind == "debian" else copy
    marker = repo / ".git" / "testbed-base"
    if not marker.exists():
        if repo != source.path:
            shutil.rmtree(repo, ignore_errors=True)
            repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", "--reflink=auto", str(source.path), str(repo)], check=True)
        shutil.rmtree(repo / ".git", ignore_errors=True)
        _checked(repo, "init", "-q")
        _checked(repo, "add", "-A", "-f", ".")  # -f: the tarball may hold .gitignore'd files
        _checked(repo, "commit", "-q", "-m", f"testbed base: {source.identity}")
        head = _git_in(repo, "rev-parse", "HEAD").stdout.decode().strip()
        marker.write_text(head + "\n")
    return repo, marker.read_text().strip()


def _carry_local_changes(source: SourceTree, worktree: Path) -> None:
    """A user's uncommitted and untracked changes are part of what they asked to build."""
    diff = git(source.path, "diff", "HEAD", "--binary").stdout
    untracked = git(source.path, "ls-files", "-z", "--others", "--exclude-standard").stdout
    names = [n for n in untracked.decode(errors="surrogateescape").split("\0") if n]
    if not diff and not names:
        return
    if diff:
        proc = _git_in(worktree, "apply", "--index", "--binary", "-", stdin=diff)
        if proc.returncode != 0:
            raise InfraError(
                f"could not carry the uncommitted changes of {source.path} into "
                f"{worktree}: {proc.stderr.decode(errors='replace')}"
            )
    for name in names:
        dest = worktree / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.path / name, dest)
    if names:
        _checked(worktree, "add", "-f", "--", *names)
    _checked(worktree, "commit", "-q", "-m", "testbed: uncommitted changes of the source tree")


SERIES_WORKTREE = "wt"  # the purpose of the worktree series are applied in


def worktree_path(repo: Path, trees: Path, purpose: str = SERIES_WORKTREE) -> Path:
    """The testbed's worktree of `repo` for `purpose`, one per repository: its kernel build
    directory (keyed by path) stays warm from one use to the next."""
    return trees / f"{purpose}-{short(hash_bytes(str(repo).encode()))}"


def apply_series(source: SourceTree, series: tuple[Patch, ...], trees: Path) -> Path:
    """A worktree of `source` with `series` applied; returns its path."""
    repo, base = _base_repo(source, trees)
    worktree = worktree_path(repo, trees)
    if not (worktree / ".git").exists():
        shutil.rmtree(worktree, ignore_errors=True)
        _git_in(repo, "worktree", "prune")
        _checked(repo, "worktree", "add", "-q", "--detach", str(worktree), base)
    else:
        _git_in(worktree, "am", "--abort")  # a failed run may have left one open
        _checked(worktree, "reset", "-q", "--hard", base)  # rewrites only differing files
        _checked(worktree, "clean", "-q", "-f", "-d")
    if source.kind == "git":
        _carry_local_changes(source, worktree)
    for patch in series:
        failure = apply_patch(worktree, patch)
        if failure:
            tool, output = failure
            raise ConfigError(f"patch {patch.name!r} does not apply on {source.path} ({tool}):\n{output}")
    return worktree


def apply_patch(worktree: Path, patch: Patch) -> tuple[str, str] | None:
    """Commit `patch` in `worktree` (`git am` for a mail, `git apply` + commit for a bare diff).
    None when it applied, else (tool, its output); a failed `git am` is aborted."""
    if patch.is_mail:
        proc = _git_in(worktree, "am", "--no-3way", stdin=patch.content)
        tool = "git am"
    else:
        proc = _git_in(worktree, "apply", "--index", "-", stdin=patch.content)
        tool = "git apply"
        if proc.returncode == 0:
            proc = _git_in(worktree, "commit", "-q", "-m", patch.name)
    if proc.returncode == 0:
        return None
    _git_in(worktree, "am", "--abort")
    return tool, (proc.stdout + proc.stderr).decode(errors="replace").strip()
