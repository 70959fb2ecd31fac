"""Which kernel tree to build and what identifies its contents (for the cache key)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InfraError
from ..hashing import hash_bytes, hash_files, hash_tree
from . import debian
from .lock import locked


@dataclass(frozen=True)
class SourceTree:
    """A kernel tree we only read: builds go to O=, patches to a worktree or a copy."""

    path: Path
    identity: str  # changes whenever the tree's contents do
    kind: str  # "debian", "git" or "tree"
    git_head: str | None = None  # the commit, for a git tree


def git(
    tree: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, env=env)
    if check and proc.returncode != 0:
        raise InfraError(f"git {' '.join(args)} in {tree} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc


def is_git_toplevel(tree: Path) -> bool:
    proc = git(tree, "rev-parse", "--show-toplevel", check=False)
    return proc.returncode == 0 and Path(proc.stdout.decode().strip()).resolve() == tree.resolve()


def _diff_head(tree: Path) -> bytes:
    """`git diff HEAD --binary` of the user's tree without writing its index: git refreshes the
    stat data of touched files in the index it reads, so it reads a private copy."""
    index = Path(git(tree, "rev-parse", "--git-path", "index").stdout.decode().strip())
    index = index if index.is_absolute() else tree / index
    with tempfile.TemporaryDirectory(prefix="testbed-index-") as tmp:
        private = Path(tmp) / "index"
        if index.is_file():
            # with the index's mtime: git trusts an entry's stat data only when the file's mtime
            # is older than the index's, and otherwise compares contents ("racy git"). A copy
            # dated now made a file rewritten within the same clock tick as `git add`, at the
            # same size, look unchanged (seen under load: two trees, one identity)
            shutil.copy2(index, private)
        env = {**os.environ, "GIT_INDEX_FILE": str(private), "GIT_OPTIONAL_LOCKS": "0"}
        return git(tree, "diff", "HEAD", "--binary", env=env).stdout


def git_identity(tree: Path) -> tuple[str, str]:
    """(HEAD, identity): HEAD plus a hash of uncommitted changes and untracked files."""
    head = git(tree, "rev-parse", "HEAD").stdout.decode().strip()
    diff = _diff_head(tree)
    untracked = git(tree, "ls-files", "-z", "--others", "--exclude-standard").stdout
    names = [tree / n for n in untracked.decode(errors="surrogateescape").split("\0") if n]
    extra = hash_files((p for p in names if p.is_file()), tree)
    return head, f"git:{head}:diff={hash_bytes(diff)}:untracked={extra}"


def provenance(source: SourceTree) -> dict[str, object]:
    """Where the source came from, for reports (KCIDB's checkout): the kind, and for a git tree
    its commit, `git describe`, branch and the remote it tracks (read-only git queries)."""
    out: dict[str, object] = {"kind": source.kind, "identity": source.identity}
    if source.kind != "git" or source.git_head is None:
        return out
    out["commit"] = source.git_head
    clean = f"git:{source.git_head}:diff={hash_bytes(b'')}:untracked={hash_files((), source.path)}"
    out["dirty"] = source.identity != clean  # built with uncommitted changes or untracked files
    queries = {
        "describe": ("describe", "--always", "--tags"),
        "branch": ("symbolic-ref", "--quiet", "--short", "HEAD"),
        "remote_url": ("config", "--get", "remote.origin.url"),
    }
    for name, args in queries.items():
        proc = git(source.path, *args, check=False, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        value = proc.stdout.decode(errors="replace").strip()
        if proc.returncode == 0 and value:
            # a remote's URL may carry a token (https://user:token@host/...): never recorded
            out[name] = re.sub(r"^([a-z+]+://)[^/@]*@", r"\1", value) if name == "remote_url" else value
    return out


def user_tree(ksrc: Path, progress: Callable[[str], None] = print) -> SourceTree:
    tree = ksrc.expanduser().resolve()
    if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
        raise ConfigError(f"--ksrc {ksrc}: not a kernel source tree (no Makefile and Kconfig)")
    if (tree / ".config").exists() or (tree / "include" / "config").exists():
        # kbuild refuses O= builds from a tree that was configured in place
        raise ConfigError(
            f"--ksrc {ksrc} has been configured in-tree; out-of-tree builds need "
            f"a clean tree: run 'make mrproper' in it first"
        )
    if is_git_toplevel(tree):
        head, identity = git_identity(tree)
        return SourceTree(tree, identity, "git", head)
    progress(f"kernel: {tree} is not a git tree; hashing its files")
    return SourceTree(tree, f"tree:{hash_tree(tree)}", "tree")


def debian_tree(root: Path, refresh: bool = False, progress: Callable[[str], None] = print) -> SourceTree:
    """The pinned Debian source (no network), fetching it when absent or asked to."""
    with locked(root / ".lock", progress):
        src = None if refresh else debian.pinned_source(root)
        if src is None:
            src = debian.fetch(root, progress)
    return SourceTree(src.tree, src.identity, "debian")


def pinned_debian_tree(root: Path) -> SourceTree | None:
    src = debian.pinned_source(root)
    return SourceTree(src.tree, src.identity, "debian") if src else None
