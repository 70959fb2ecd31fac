"""The testbed's own git repositories in the kernel cache (`trees/`), where series are applied
and other commits checked out: never in the user's repository.

Each one is a `git init` of its own whose `objects/info/alternates` names the object directory
of the repository it builds from (the user's, or a repository of ours): every commit there is
readable at once, with nothing copied or fetched, and every object the testbed writes (`git am`,
the commit of carried changes) goes to its own store. So the user's `.git` is only ever read:
no `git worktree add` (which registers the tree there), no `git worktree prune` (which drops the
user's own worktrees whose directory is missing at that moment), no refs, objects or index.

Borrowing has `git clone --shared`'s caveat: a commit of the user's that the repository of ours
still points at may be pruned by the user's gc once nothing of theirs reaches it. Checking out
another commit still works then (git does not need the old one); a repository git can no longer
check out in is removed and set up again.

One thing git does that we cannot switch off: writing an object the lender already has "freshens"
the lender's copy (utime of the loose object or pack, to keep it from being pruned). The bytes
stay the same; it happens when a series recreates a blob or commit the user's store already holds.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import InfraError

log = logging.getLogger(__name__)

# git's own settings for our commands: no user hooks, no signing, a fixed committer
GIT_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "user.name=testbed",
    "-c",
    "user.email=testbed@localhost",
)
# the same kept in each repository of ours, for the git commands run there without them
# (`git bisect run` and its checkouts), plus what borrowing needs
_LOCAL_CONFIG = (
    ("core.hooksPath", "/dev/null"),
    ("commit.gpgSign", "false"),
    ("user.name", "testbed"),
    ("user.email", "testbed@localhost"),
    ("advice.detachedHead", "false"),
    # no reflogs: they would keep naming borrowed commits the user's gc may prune
    ("core.logAllRefUpdates", "false"),
    # an automatic gc (of our own objects only) finishes before the build reads the tree
    ("gc.autoDetach", "false"),
)
_ALTERNATES = Path(".git") / "objects" / "info" / "alternates"
_SHALLOW = Path(".git") / "shallow"


@dataclass(frozen=True)
class Lender:
    """A repository whose objects one of ours reads, and never writes."""

    top: Path
    objects: Path  # its object directory, absolute
    object_format: str  # sha1 or sha256: ours must match to read its objects
    shallow: Path  # its list of shallow commits (a shallow clone), when that file exists


def read(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """A git command in a repository that is not ours, for reading only. GIT_OPTIONAL_LOCKS=0:
    no opportunistic index refresh where git offers to skip it."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, env=env)


def run(repo: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """A git command in a repository of ours, with our settings."""
    return subprocess.run(["git", *GIT_CONFIG, "-C", str(repo), *args], input=stdin, capture_output=True)


def checked(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """`run`, an InfraError when git fails; its stdout."""
    proc = run(repo, *args, stdin=stdin)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        raise InfraError(f"git {' '.join(args)} in {repo} failed: {output}")
    return proc.stdout


def lender(repo: Path) -> Lender:
    proc = read(
        repo, "rev-parse", "--path-format=absolute", "--git-path", "objects", "--git-common-dir", "--show-object-format"
    )
    lines = proc.stdout.decode().splitlines()
    if proc.returncode != 0 or len(lines) != 3:
        raise InfraError(f"git rev-parse in {repo} failed: {proc.stderr.decode(errors='replace').strip()}")
    objects, common, object_format = lines
    return Lender(repo, Path(objects), object_format, Path(common) / "shallow")


def borrows(path: Path, source: Lender) -> bool:
    """Whether `path` is a repository of ours reading `source`'s objects (not, say, a linked
    worktree of the user's repository that an older testbed made there)."""
    alternates = path / _ALTERNATES
    return (path / ".git").is_dir() and alternates.is_file() and alternates.read_text() == f"{source.objects}\n"


def ensure(path: Path, source_repo: Path) -> Path:
    """`path` as a repository of ours borrowing `source_repo`'s objects; one already there is kept
    (its files, and so the kernel build directory keyed by its path, stay warm)."""
    source = lender(source_repo)
    if not borrows(path, source):
        _create(path, source)
    _sync_shallow(path, source)
    return path


def _create(path: Path, source: Lender) -> None:
    if (path / ".git").is_file():
        _forget_linked_worktree(path, source)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    # no templates: nothing of the user's init.templateDir (hooks) comes along
    checked(path, "init", "-q", "--template=", f"--object-format={source.object_format}")
    for key, value in _LOCAL_CONFIG:
        checked(path, "config", key, value)
    alternates = path / _ALTERNATES
    alternates.parent.mkdir(parents=True, exist_ok=True)
    alternates.write_text(f"{source.objects}\n")
    log.debug("made %s, borrowing the objects of %s", path, source.top)


def _forget_linked_worktree(path: Path, source: Lender) -> None:
    """An older testbed made `path` a linked worktree of the user's repository. Its registration
    there is the user's to drop (we write nothing in their .git); once our repository takes the
    path, git sees the registration's directory again and `git worktree prune` keeps it."""
    gitdir = (path / ".git").read_text().removeprefix("gitdir:").strip()
    log.warning(
        "%s was a linked worktree of %s (an older testbed's); it becomes a repository of the testbed's own. "
        "Its registration %s is left as it is: delete that directory to drop it",
        path,
        source.top,
        gitdir,
    )


def _sync_shallow(path: Path, source: Lender) -> None:
    """A shallow lender's cut-off commits: without them walking history (bisect) fails at their
    missing parents."""
    ours = path / _SHALLOW
    if source.shallow.is_file():
        data = source.shallow.read_bytes()
        if not ours.is_file() or ours.read_bytes() != data:
            ours.write_bytes(data)
    elif ours.exists():
        ours.unlink()


def commit_of(path: Path, rev: str) -> str | None:
    """The full id of commit `rev` (a full or abbreviated id) as our repository sees it, or None."""
    proc = run(path, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def checkout(path: Path, source_repo: Path, commit: str) -> Path:
    """Our repository for `source_repo` at `path` with `commit` checked out (detached) and clean.
    Only the files that differ are rewritten, so kbuild rebuilds only what changed. A repository
    where that fails (damaged, or missing what the user's gc pruned) is made anew once."""
    ensure(path, source_repo)
    try:
        _detach(path, commit)
    except InfraError as exc:
        log.info("making %s anew: %s", path, exc)
        shutil.rmtree(path)
        ensure(path, source_repo)
        _detach(path, commit)
    return path


def _detach(path: Path, commit: str) -> None:
    checked(path, "checkout", "-q", "-f", "--detach", commit)
    checked(path, "clean", "-q", "-f", "-d")
