"""A built kernel in the cache: cache_dir("kernel")/<key>/ holds bzImage, .config, build.log
and manifest.json (written last, so its presence means the rest is complete)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class KernelManifest:
    """What a built kernel's manifest.json says (kernel/build.py writes it last, so a readable
    one means the build is complete)."""

    key: str
    release: str
    build_dir: Path | None  # the kbuild O= directory it was built in
    built_in: Path | None  # the source tree it was built from
    patches: tuple[str, ...]  # a patch file's name, or "NNNN subject" for a mail
    base_fixes: dict[str, Any]  # basefixes.manifest_record()
    config_set: str = ""
    source_tree: str = ""  # what the source was: Debian's package and version, or a tree's path
    source: dict[str, Any] = field(default_factory=dict)  # source.provenance(): kind, git commit, remote
    coverage: dict[str, Any] | None = None  # a coverage build's record (scope, notes)

    @property
    def applied_fixes(self) -> list[dict[str, Any]]:
        """The base fixes the build applied: {"name", "why", ...} each."""
        applied = self.base_fixes.get("applied", [])
        return [a for a in applied if isinstance(a, dict)] if isinstance(applied, list) else []


def read_manifest(directory: Path) -> KernelManifest | None:
    """The manifest of the kernel in `directory`; None when there is none (a kernel the testbed
    did not build, or a build that did not finish)."""
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None

    def path(name: str) -> Path | None:
        return Path(data[name]) if data.get(name) else None

    fixes, coverage, source = data.get("base_fixes"), data.get("coverage"), data.get("source")
    return KernelManifest(
        str(data.get("key", "")),
        str(data.get("release", "")),
        path("build_dir"),
        path("built_in"),
        tuple(str(name) for name in data.get("patches") or []),
        fixes if isinstance(fixes, dict) else {},
        str(data.get("config_set") or ""),
        str(data.get("source_tree") or ""),
        source if isinstance(source, dict) else {},
        coverage if isinstance(coverage, dict) else None,
    )


def artifact_in(directory: Path, key: str, release: str) -> KernelArtifact:
    return KernelArtifact(directory / "bzImage", directory / ".config", directory / "build.log", key, release)


def load_cached(root: Path, key: str) -> KernelArtifact | None:
    """The artifact for `key` if a complete one is in the cache (the manifest is written last)."""
    directory = root / key
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    art = artifact_in(directory, key, manifest.release)
    return art if art.bzimage.is_file() and art.config.is_file() else None


def built_patches(bzimage: Path) -> list[str] | None:
    """The patches a kernel the testbed built carries (the manifest's names: a patch file's
    name, or "NNNN subject" for a mail); None for a kernel it did not build (no manifest)."""
    manifest = read_manifest(bzimage.parent)
    return list(manifest.patches) if manifest is not None else None


def built_config(bzimage: Path) -> dict[str, str] | None:
    """The final .config of a kernel the testbed built; None for a bzImage from elsewhere."""
    path = bzimage.parent / ".config"
    if read_manifest(bzimage.parent) is None or not path.is_file():
        return None
    from .kconfig import parse_dotconfig

    return parse_dotconfig(path.read_text(errors="replace"))


def write_manifest(directory: Path, data: dict[str, Any]) -> None:
    tmp = directory / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(directory / MANIFEST)
