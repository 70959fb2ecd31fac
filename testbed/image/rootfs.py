"""Edits of the bootstrapped tree from the host, resolving symlinks as the guest would.

The tree is a foreign root: `/sbin` is a relative link to `usr/sbin`, and an absolute link
(e.g. `/etc/mtab`) must resolve inside the tree, never on the host running the build.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import InfraError
from .recipe import recipe_files

_MAX_HOPS = 40  # as the kernel's ELOOP limit


def inside(root: Path, path: str, follow_last: bool = True) -> Path:
    """`path` (absolute or relative, guest view) as a host path under `root`, chroot-style."""
    queue = list(PurePosixPath(path).parts)
    done: list[str] = []
    hops = 0
    while queue:
        part = queue.pop(0)
        if part in ("/", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink() and (queue or follow_last):
            hops += 1
            if hops > _MAX_HOPS:
                raise InfraError(f"{root}: too many symlinks resolving {path}")
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                done = []
            queue = [p for p in target.parts if p != "/"] + queue
            continue
        done.append(part)
    return root.joinpath(*done)


def install_file(root: Path, path: str, data: bytes, mode: int) -> Path:
    """Write `data` at guest `path`, replacing whatever file or symlink was there."""
    parent = inside(root, str(PurePosixPath(path).parent))
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    dest = parent / PurePosixPath(path).name
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    dest.write_bytes(data)
    if os.geteuid() == 0:  # the guest's files belong to its root, not the builder
        os.chown(dest, 0, 0)
    dest.chmod(mode)
    return dest


def install_tree(source: Path, root: Path) -> list[str]:
    """Copy every file under `source` to the same guest path: 0755 if executable, else 0644.

    Directories that already exist keep their modes (/root is 0700, /tmp 1777). Python's
    bytecode caches are not recipe files (recipe_files): the build compiles the guest's own.
    """
    installed = []
    for src in recipe_files(source):
        rel = "/" + src.relative_to(source).as_posix()
        mode = 0o755 if src.stat().st_mode & 0o111 else 0o644
        install_file(root, rel, src.read_bytes(), mode)
        installed.append(rel)
    return installed


def make_dir(root: Path, path: str, mode: int) -> Path:
    dest = inside(root, path)
    dest.mkdir(mode=mode, parents=True, exist_ok=True)
    dest.chmod(mode)
    return dest


def remove_matching(root: Path, directory: str, pattern: str) -> list[Path]:
    """Remove files matching a glob in one guest directory (not recursive)."""
    base = inside(root, directory)
    removed = [p for p in base.glob(pattern) if p.is_file() or p.is_symlink()]
    for path in removed:
        path.unlink()
    return removed


def mounts_under(path: Path, mountinfo: str) -> list[str]:
    """Mount points at or below `path`, from /proc/self/mountinfo text (field 5)."""
    prefix = str(path.resolve()).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        # mountinfo escapes space, tab, newline and backslash as octal.
        point = fields[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def install_symlink(root: Path, path: str, target: str) -> Path:
    """Create a symlink at guest `path` unless something is already there."""
    dest = inside(root, path, follow_last=False)
    if not (dest.exists() or dest.is_symlink()):
        dest.symlink_to(target)
    return dest


def installed_packages(status: str) -> list[str]:
    """`name version` of every installed package, from a dpkg status file's text."""
    packages = []
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append(f"{fields['Package']} {fields.get('Version', '?')}")
    return sorted(packages)
