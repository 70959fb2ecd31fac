"""The testbed's own repository of the user's tree at a given commit, in the cache: `testbed ab
--base` and `testbed bisect` build other commits without touching the user's checkout or its
`.git` (the repository borrows its objects read-only, see kernel/ownrepo.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError
from ..kernel import ownrepo
from ..kernel.build import kernel_root
from ..kernel.patches import worktree_path
from ..kernel.source import is_git_toplevel

log = logging.getLogger(__name__)


def require_git_tree(tree: Path, what: str) -> Path:
    tree = tree.expanduser().resolve()
    if not is_git_toplevel(tree):
        raise ConfigError(f"{what} {tree}: not the top of a git repository")
    return tree


def resolve(tree: Path, ref: str) -> str:
    found = commit_in(tree, ref)
    if found is None:
        raise ConfigError(f"{ref!r} is not a commit in {tree}")
    return found


def commit_in(tree: Path, ref: str) -> str | None:
    """The full id of commit `ref` in the user's `tree` (read only), or None."""
    proc = ownrepo.read(tree, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def checkout(tree: Path, ref: str, purpose: str) -> Path:
    """The testbed's repository of `tree` for `purpose` at `ref`, clean (one per tree and
    purpose, so that its kernel build directory, keyed by path, rebuilds incrementally from one
    use to the next)."""
    commit = resolve(tree, ref)
    path = ownrepo.ensure(worktree_path(tree, kernel_root() / "trees", purpose), tree)
    # a bisect an interrupted run left open; HEAD: end it where it stands, no extra checkout
    ownrepo.run(path, "bisect", "reset", "HEAD")
    ownrepo.checkout(path, tree, commit)
    log.debug("%s of %s at %s", path, tree, commit)
    return path
