"""What the cache holds and what a prune may delete.

Kernels and images are cache entries; build directories, patch worktrees and extracted
source trees are what kernels were built from and are kept while a kept kernel names them
(its manifest's build_dir / built_in / source_tree), so an incremental rebuild stays
incremental. Current entries (the default and debug kernels and the image of this checkout)
are never pruned; others go once unused for longer than the age limit. A cache hit touches
the entry's manifest, which is what "last used" reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
ARTIFACT_KINDS = ("kernel", "image")


@dataclass(frozen=True)
class Entry:
    kind: str  # kernel | image | kernel-build | kernel-tree | kernel-source
    path: Path
    size: int  # bytes on disk
    last_used: float  # epoch seconds
    current: bool  # what this checkout builds by default: never pruned
    label: str
    refs: tuple[Path, ...] = ()  # directories a kernel was built from/in


def mark_used(entry_dir: Path) -> None:
    """A cache hit: bump the manifest's mtime, which `testbed cache` reads as last use."""
    try:
        os.utime(entry_dir / MANIFEST)
    except OSError:
        pass  # a read-only or shared cache still works, it just ages


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _manifest(directory: Path) -> tuple[dict, float] | None:
    try:
        path = directory / MANIFEST
        return json.loads(path.read_text()), path.stat().st_mtime
    except (OSError, ValueError):
        return None


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []


def kernel_entries(kernel_root: Path, current: set[str]) -> list[Entry]:
    out = []
    for d in _subdirs(kernel_root):
        found = _manifest(d)
        if found is None:
            continue  # builds/, trees/, debian/ or an unfinished build
        data, used = found
        refs = tuple(Path(data[k]) for k in ("build_dir", "built_in", "source_tree") if data.get(k))
        label = f"{data.get('release', '?')} {data.get('config_set', '?')}"
        if data.get("patches"):
            label += f" + {len(data['patches'])} patch(es)"
        label += f" from {data.get('source_tree', '?')}"
        out.append(Entry("kernel", d, tree_size(d), used, d.name in current, label, refs))
    for kind, sub in (("kernel-build", "builds"), ("kernel-tree", "trees")):
        for d in _subdirs(kernel_root / sub):
            out.append(Entry(kind, d, tree_size(d), d.stat().st_mtime, False, d.name))
    for d in _subdirs(kernel_root / "debian" / "src"):
        out.append(Entry("kernel-source", d, tree_size(d), d.stat().st_mtime, False, d.name))
    return out


def image_entries(image_root: Path, current: set[str]) -> list[Entry]:
    out = []
    for d in _subdirs(image_root):
        found = _manifest(d)
        used = found[1] if found else d.stat().st_mtime
        out.append(Entry("image", d, tree_size(d), used, d.name in current, f"guest image {d.name}"))
    return out


def _under(path: Path, roots: set[Path]) -> bool:
    return any(path == r or r in path.parents or path in r.parents for r in roots)


def prune_plan(entries: list[Entry], now: float, max_age_s: float, keep_paths: tuple[Path, ...] = ()) -> list[Entry]:
    """The entries a prune deletes: artifacts neither current nor used within max_age_s, then
    every build dir, worktree and source tree that no kept kernel (nor keep_paths) names."""
    kept = [e for e in entries if e.kind in ARTIFACT_KINDS and (e.current or now - e.last_used < max_age_s)]
    doomed = [e for e in entries if e.kind in ARTIFACT_KINDS and e not in kept]
    needed = {Path(p) for p in keep_paths} | {r for e in kept for r in e.refs}
    any_worktree_kept = any(e.kind == "kernel-tree" and _under(e.path, needed) for e in entries)
    for e in entries:
        if e.kind in ARTIFACT_KINDS or _under(e.path, needed):
            continue
        if e.kind == "kernel-tree" and e.path.name.startswith("copy-") and any_worktree_kept:
            continue  # the git copy a kept worktree hangs off
        doomed.append(e)
    return doomed
