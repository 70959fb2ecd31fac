"""A series' first build starts from the base build's objects instead of from nothing.

A series is built in the testbed's own repository of the source (patches.py), in a build
directory of its own. The first time, that directory is empty and the whole kernel compiles
again although the series changed a handful of files. When a finished build of the same source
and config set without a series exists, its build directory is copied in and made to look as if
it had been built from the series' tree, so that the kernel's own rules (each object's saved
command line in its .cmd file, the dependencies fixdep wrote there, make's timestamps) decide
what rebuilds:

- the source and build directory paths in every .cmd and .d file are rewritten to the series'
  tree and this directory (kbuild compares saved command lines, which name the source in every
  -I; objtool's own build names the build directory), the `source` link points there;
- an object of the kernel that has the base tree's path in its bytes (the real-mode setup
  code's assertions) is deleted, so it is compiled again and holds the series' path, as a clean
  build's would. Host programs (objtool, fixdep: scripts/, tools/) keep theirs: rebuilding
  objtool would make every object older than it and so rebuild them all, and a host program's
  source path changes none of the bytes it writes into the kernel;
- in the series' tree every file whose content equals the base tree's gets an old timestamp,
  older than every object; the files that differ (the series, the base fixes, anything else)
  keep a current one, so they and what includes them rebuild. The tree's index is refreshed
  with the new timestamps, so the next series' checkout rewrites only what it changes.

Nothing of the base build or the base tree is modified.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .artifact import MANIFEST

log = logging.getLogger(__name__)

OLD = 946684800.0  # 2000-01-01: older than any object a build writes
_TEXT_SUFFIXES = (".cmd", ".d")
HOST_PROGRAM_DIRS = ("scripts", "tools")  # under the build directory: built for and run on the host


@dataclass(frozen=True)
class BaseBuild:
    srctree: Path  # the tree it was built from
    builddir: Path
    key: str


def find_base_build(kernel_root: Path, source_tree: Path, config_set: str) -> BaseBuild | None:
    """The newest finished build of `source_tree` for `config_set` without a series whose build
    directory is still there, from the kernels' manifests."""
    found: list[tuple[str, BaseBuild]] = []
    for manifest in kernel_root.glob(f"*/{MANIFEST}"):
        try:
            doc = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("patches") or doc.get("coverage") or doc.get("config_set") != config_set:
            continue
        if doc.get("source_tree") != str(source_tree) or not doc.get("build_dir") or not doc.get("built_in"):
            continue
        builddir, srctree = Path(doc["build_dir"]), Path(doc["built_in"])
        if (builddir / "vmlinux").is_file() and srctree.is_dir():
            found.append((str(doc.get("built_at", "")), BaseBuild(srctree, builddir, str(doc.get("key", "")))))
    return max(found, key=lambda f: f[0])[1] if found else None


SEEDED_FROM = ".testbed-seeded-from"  # in a seeded build directory: the base kernel's key


def seeded_from(builddir: Path) -> str | None:
    """The key of the base kernel a build directory was seeded from (None: not seeded)."""
    try:
        return (builddir / SEEDED_FROM).read_text().strip() or None
    except OSError:
        return None


def _git(tree: Path, *args: str) -> bytes:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: no index refresh written
    proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {tree}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _split(out: bytes) -> list[str]:
    return [n for n in out.decode(errors="surrogateescape").split("\0") if n]


def tree_state(tree: Path) -> tuple[dict[str, str], set[str]]:
    """(path -> blob id of the index, paths whose file may differ from it: modified or untracked)."""
    blobs = {}
    for line in _split(_git(tree, "ls-files", "-s", "-z")):
        meta, _, path = line.partition("\t")
        blobs[path] = meta.split()[1]
    unsure = set(_split(_git(tree, "diff-files", "--name-only", "-z")))
    unsure |= set(_split(_git(tree, "ls-files", "-z", "--others", "--exclude-standard")))
    return blobs, unsure


def changed_files(base: Path, tree: Path) -> set[str]:
    """The files of `tree` whose content may differ from `base`'s (never too few)."""
    base_blobs, base_unsure = tree_state(base)
    blobs, unsure = tree_state(tree)
    differ = {p for p in blobs.keys() | base_blobs.keys() if blobs.get(p) != base_blobs.get(p)}
    return differ | unsure | base_unsure


def _with_paths(builddir: Path, paths: Iterable[str]) -> list[Path]:
    patterns = [arg for path in paths for arg in ("-e", path)]
    proc = subprocess.run(["grep", "-rlFZ", *patterns, "--", str(builddir)], capture_output=True)
    if proc.returncode > 1:  # 1: nothing found; more: a file it could not read would stay stale
        raise RuntimeError(f"grep in {builddir}: {proc.stderr.decode(errors='replace').strip()[:300]}")
    return [Path(p) for p in _split(proc.stdout)]


def _rewrite(builddir: Path, files: Iterable[Path], moves: dict[str, str]) -> tuple[int, int]:
    """Text files: the path replaced, timestamps kept; the kernel's other files: deleted (rebuilt);
    host programs' kept."""
    rewritten = deleted = 0
    for f in files:
        if f.relative_to(builddir).parts[0] in HOST_PROGRAM_DIRS and not f.name.endswith(_TEXT_SUFFIXES):
            continue
        if f.name.endswith(_TEXT_SUFFIXES):
            st = f.stat()
            text = f.read_bytes()
            for old, new in moves.items():
                text = text.replace(old.encode(), new.encode())
            f.write_bytes(text)
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
            rewritten += 1
        else:
            f.unlink()
            deleted += 1
    return rewritten, deleted


def _age(tree: Path, changed: set[str]) -> int:
    """Every tracked file of `tree` not in `changed` made old; the changed ones made current."""
    aged = 0
    for path in _split(_git(tree, "ls-files", "-z")):
        f = tree / path
        if f.is_symlink() or not f.exists():
            continue
        if path in changed:
            os.utime(f)
        else:
            os.utime(f, (OLD, OLD))
            aged += 1
    return aged


def seed(base: BaseBuild, srctree: Path, builddir: Path, progress: Callable[[str], None]) -> None:
    """Make `builddir` (empty or absent) the base build, as if built from `srctree`."""
    changed = changed_files(base.srctree, srctree)
    if builddir.exists():
        shutil.rmtree(builddir)
    # made under another name and renamed last: an interrupted seeding leaves no build
    # directory that looks finished (its copied vmlinux) before the tree's timestamps are set
    work = builddir.with_name(builddir.name + ".seeding")
    shutil.rmtree(work, ignore_errors=True)
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", str(base.builddir), str(work)], check=True)
        moves = {str(base.srctree): str(srctree), str(base.builddir): str(builddir)}
        rewritten, deleted = _rewrite(work, _with_paths(work, moves), moves)
        link = work / "source"
        if link.is_symlink():
            link.unlink()
            link.symlink_to(srctree)
        aged = _age(srctree, changed)
        # the series tree is ours: its index learns the new timestamps, or the next series'
        # `git checkout -f` would take every aged file for modified and write it again
        subprocess.run(["git", "-C", str(srctree), "update-index", "-q", "--refresh"], capture_output=True)
        (work / SEEDED_FROM).write_text(base.key + "\n")  # a newer base later: seeded again
        work.rename(builddir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(
        f"kernel: first build of this tree: starting from the objects of kernel {base.key} "
        f"({len(changed)} file(s) differ from its tree; {aged} kept old, {rewritten} command files "
        f"rewritten, {deleted} objects that name the old tree dropped)"
    )
    log.debug("seeded %s from %s; changed: %s", builddir, base.builddir, sorted(changed)[:50])
