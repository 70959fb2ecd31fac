"""A detached worktree of the user's tree at a given commit, in the cache: `testbed ab --base`
and `testbed bisect` build other commits without touching the user's checkout."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..errors import ConfigError
from ..kernel.build import kernel_root
from ..kernel.patches import worktree_path
from ..kernel.source import git, is_git_toplevel

log = logging.getLogger(__name__)


def require_git_tree(tree: Path, what: str) -> Path:
    tree = tree.expanduser().resolve()
    if not is_git_toplevel(tree):
        raise ConfigError(f"{what} {tree}: not the top of a git repository")
    return tree


def resolve(tree: Path, ref: str) -> str:
    proc = git(tree, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if proc.returncode != 0:
        raise ConfigError(f"{ref!r} is not a commit in {tree}")
    return proc.stdout.decode().strip()


def worktree(tree: Path, purpose: str) -> Path:
    """The worktree of `tree` for `purpose` (one per tree and purpose, so that its kernel
    build directory, keyed by path, rebuilds incrementally from one use to the next)."""
    path = worktree_path(tree, kernel_root() / "trees", purpose)
    if not (path / ".git").exists():
        shutil.rmtree(path, ignore_errors=True)
        git(tree, "worktree", "prune", check=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        git(tree, "worktree", "add", "--detach", "-f", str(path), "HEAD")
        log.debug("added worktree %s of %s", path, tree)
    return path


def checkout(tree: Path, ref: str, purpose: str) -> Path:
    """`worktree(tree, purpose)` at `ref`, clean."""
    commit = resolve(tree, ref)
    path = worktree(tree, purpose)
    git(path, "bisect", "reset", check=False)
    git(path, "checkout", "-q", "-f", "--detach", commit)
    git(path, "clean", "-q", "-f", "-d")
    return path
