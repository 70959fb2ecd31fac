"""Content hashes that key the caches: same inputs, same key, on any machine."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def hash_bytes(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def hash_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """Hash file names (relative to root) and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        name = str(path.relative_to(root)) if root else path.name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def hash_tree(root: Path) -> str:
    return hash_files((p for p in root.rglob("*") if p.is_file()), root)


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read in 1 MiB blocks (a .deb of the kernel source is ~160 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def short(key: str) -> str:
    return key[:16]
