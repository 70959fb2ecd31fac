"""A built kernel in the cache: cache_dir("kernel")/<key>/ holds bzImage, .config, build.log
and manifest.json (written last, so its presence means the rest is complete)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class KernelArtifact:
    bzimage: Path
    config: Path  # the final .config
    build_log: Path
    key: str  # cache key
    release: str  # e.g. "7.2.13-testbed" (from include/config/kernel.release)


MANIFEST = "manifest.json"


def artifact_in(directory: Path, key: str, release: str) -> KernelArtifact:
    return KernelArtifact(directory / "bzImage", directory / ".config", directory / "build.log", key, release)


def load_cached(root: Path, key: str) -> KernelArtifact | None:
    """The artifact for `key` if a complete one is in the cache (the manifest is written last)."""
    directory = root / key
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    art = artifact_in(directory, key, str(manifest.get("release", "")))
    return art if art.bzimage.is_file() and art.config.is_file() else None


def built_patches(bzimage: Path) -> list[str] | None:
    """The patches a kernel the testbed built carries (the manifest's names: a patch file's
    name, or "NNNN subject" for a mail); None for a kernel it did not build (no manifest)."""
    try:
        manifest = json.loads((bzimage.parent / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return [str(name) for name in manifest.get("patches", [])]


def write_manifest(directory: Path, data: dict[str, Any]) -> None:
    tmp = directory / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(directory / MANIFEST)
