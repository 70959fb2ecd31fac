"""Patch series: find them (an mbox read by b4's rules, see mbox.py, or a directory of .patch
files) and apply them in the testbed's own repository of the source (ownrepo.py: it borrows the
source's objects; the user's .git is only read), never in the user's tree.

That repository lives as long as the source location does: re-applying a changed series only
rewrites the files that differ, so kbuild rebuilds only what the series touches. A series with
a `base-commit:` line is applied on that commit, which the source repository must have.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InfraError
from ..hashing import hash_bytes, short
from . import mbox, ownrepo
from .source import SourceTree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Patch:
    name: str  # file name, or "NNNN subject" for a message of an mbox
    content: bytes
    is_mail: bool  # has mail headers: `git am`; a bare diff goes through `git apply`
    base_commit: str = ""  # the series' `base-commit:` (the same on each of its patches); "" for none


def split_mbox(data: bytes, name: str, option: str = "--patches") -> tuple[Patch, ...]:
    """The series of an mbox, by b4's rules (mbox.py): the newest revision, in [n/N] order,
    without cover letter and replies. `option`: what errors name (--qemu-patches too)."""
    chosen = mbox.read(data, f"{option} {name}")
    if chosen.dropped:
        log.info(
            "%s %s: v%d, %d patch(es); left out: %s",
            option,
            name,
            chosen.revision,
            len(chosen.patches),
            "; ".join(chosen.dropped),
        )
    title = Path(name).name
    return tuple(
        Patch(f"{i:04d} {m.subject.text or title}", m.raw, m.is_mail, chosen.base_commit)
        for i, m in enumerate(chosen.patches, 1)
    )


def _from_directory(path: Path, option: str) -> tuple[Patch, ...]:
    """*.patch files in name order; cover letters, replies and files without a diff left out."""
    files = sorted(p for p in path.iterdir() if p.suffix == ".patch" and p.is_file())
    if not files:
        raise ConfigError(f"{option} {path}: directory has no *.patch files")
    parsed = [(file, mbox.parse(file.read_bytes())) for file in files]
    kept = [(file, m) for file, m in parsed if not m.why_not_a_patch()]
    if not kept:
        raise ConfigError(f"{option} {path}: no *.patch file contains a diff")
    base = mbox.base_commit([*(m for _, m in parsed if m.is_cover), kept[0][1]])
    return tuple(Patch(file.name, m.raw, m.is_mail, base) for file, m in kept)


def discover(path: Path, option: str = "--patches") -> tuple[Patch, ...]:
    """The series at `path`: a directory of *.patch files (name order) or one mbox/patch file
    (gzip'ed too, as lore serves threads). `option` is what errors name: the QEMU build reads its
    series (qemu/patches, --qemu-patches) with the same rules."""
    path = path.expanduser()
    if path.is_dir():
        return _from_directory(path, option)
    if not path.is_file():
        raise ConfigError(f"{option} {path}: no such file or directory")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigError(f"{option} {path}: a damaged gzip file ({exc})") from exc
    return split_mbox(data, str(path), option)


def _hashed(patch: Patch) -> tuple[bytes, ...]:
    # the base commit counts only when there is one: series without it keep their keys
    base = (patch.base_commit.encode(),) if patch.base_commit else ()
    return (patch.name.encode(), patch.content, *base)


def series_hash(series: tuple[Patch, ...]) -> str:
    return hash_bytes(*(part for p in series for part in _hashed(p)))


def _base_repo(source: SourceTree, trees: Path) -> tuple[Path, str]:
    """A git repository holding the source as a commit: the user's repo (only read), or our own one."""
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
        ownrepo.checked(repo, "init", "-q", "--template=")
        ownrepo.checked(repo, "add", "-A", "-f", ".")  # -f: the tarball may hold .gitignore'd files
        ownrepo.checked(repo, "commit", "-q", "-m", f"testbed base: {source.identity}")
        head = ownrepo.checked(repo, "rev-parse", "HEAD").decode().strip()
        marker.write_text(head + "\n")
    return repo, marker.read_text().strip()


def _local_changes(source: SourceTree) -> tuple[bytes, list[str]]:
    """The user's uncommitted diff against HEAD and untracked files, read without writing:
    `git diff` would refresh (rewrite) their index when files are only touched, and it obeys
    diff settings (noprefix, external drivers) `git apply` cannot read back; diff-index does not."""
    diff = ownrepo.read(source.path, "diff-index", "-p", "--binary", "HEAD").stdout
    untracked = ownrepo.read(source.path, "ls-files", "-z", "--others", "--exclude-standard").stdout
    return diff, [n for n in untracked.decode(errors="surrogateescape").split("\0") if n]


def _carry_local_changes(source: SourceTree, tree: Path) -> None:
    """A user's uncommitted and untracked changes are part of what they asked to build."""
    diff, names = _local_changes(source)
    if not diff and not names:
        return
    if diff:
        proc = ownrepo.run(tree, "apply", "--index", "--binary", "-", stdin=diff)
        if proc.returncode != 0:
            raise InfraError(
                f"could not carry the uncommitted changes of {source.path} into "
                f"{tree}: {proc.stderr.decode(errors='replace')}"
            )
    for name in names:
        dest = tree / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.path / name, dest)
    if names:
        ownrepo.checked(tree, "add", "-f", "--", *names)
    ownrepo.checked(tree, "commit", "-q", "-m", "testbed: uncommitted changes of the source tree")


SERIES_WORKTREE = "wt"  # the purpose of the tree series are applied in


def worktree_path(repo: Path, trees: Path, purpose: str = SERIES_WORKTREE) -> Path:
    """The testbed's own repository of `repo` for `purpose` (ownrepo.py), one per repository:
    its kernel build directory (keyed by path) stays warm from one use to the next."""
    return trees / f"{purpose}-{short(hash_bytes(str(repo).encode()))}"


def _series_base(source: SourceTree, series: tuple[Patch, ...], tree: Path, head: str) -> str:
    """The commit to apply `series` on: its `base-commit:`, which the source must have, else `head`."""
    wanted = series[0].base_commit if series else ""
    if not wanted:
        return head
    found = ownrepo.commit_of(tree, wanted)
    if found:
        log.info("applying the series on %s, its base-commit", found[:12])
        return found
    if source.kind == "git":
        raise ConfigError(
            f"the series is based on commit {wanted} (its base-commit: line), which {source.path} does not "
            f"have. Fetch that commit into it (e.g. `git -C {source.path} fetch <the tree the series was "
            f"made against>`), or delete the base-commit: line from the series to apply it on HEAD ({head[:12]})"
        )
    raise ConfigError(
        f"the series is based on commit {wanted} (its base-commit: line), and the kernel source "
        f"{source.path} is a {source.kind} tree without git history. Build with --ksrc <a git tree "
        f"holding {wanted[:12]}>, or delete the base-commit: line from the series to apply it on this tree"
    )


def apply_series(source: SourceTree, series: tuple[Patch, ...], trees: Path) -> Path:
    """The testbed's repository of `source` with `series` applied (on its base-commit when it
    names one, else on the source with its uncommitted changes); returns its path."""
    repo, head = _base_repo(source, trees)
    tree = ownrepo.ensure(worktree_path(repo, trees), repo)
    base = _series_base(source, series, tree, head)
    ownrepo.run(tree, "am", "--abort")  # a failed run may have left one open
    ownrepo.checkout(tree, repo, base)  # rewrites only differing files
    if source.kind == "git" and base == head:
        _carry_local_changes(source, tree)
    elif source.kind == "git" and any(_local_changes(source)):
        log.warning(
            "the uncommitted changes of %s are not carried: they are made on HEAD, the series applies on %s",
            source.path,
            base[:12],
        )
    for patch in series:
        failure = apply_patch(tree, patch)
        if failure:
            tool, output = failure
            raise ConfigError(f"patch {patch.name!r} does not apply on {source.path} ({tool}):\n{output}")
    return tree


def apply_patch(worktree: Path, patch: Patch) -> tuple[str, str] | None:
    """Commit `patch` in `worktree` (`git am` for a mail, `git apply` + commit for a bare diff).
    None when it applied, else (tool, its output); a failed `git am` is aborted."""
    if patch.is_mail:
        proc = ownrepo.run(worktree, "am", "--no-3way", stdin=patch.content)
        tool = "git am"
    else:
        proc = ownrepo.run(worktree, "apply", "--index", "-", stdin=patch.content)
        tool = "git apply"
        if proc.returncode == 0:
            proc = ownrepo.run(worktree, "commit", "-q", "-m", patch.name)
    if proc.returncode == 0:
        return None
    ownrepo.run(worktree, "am", "--abort")
    return tool, (proc.stdout + proc.stderr).decode(errors="replace").strip()
