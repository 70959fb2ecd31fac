"""Command lines of the image build and overlay steps, as pure functions (printed by --dry-run)."""

from __future__ import annotations

from pathlib import Path

from .recipe import Recipe

# Documentation, manuals and translations are dead weight in a test guest (copyright stays).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)

FS_LABEL = "testbed-root"


def mmdebstrap_argv(recipe: Recipe, mirror: str, rootdir: Path) -> list[str]:
    """Bootstrap the recipe's suite into an empty directory (root mode: real ownership)."""
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--format=directory",
        f"--variant={recipe.variant}",
        f"--architectures={recipe.architecture}",
        f"--components={','.join(recipe.components)}",
        '--aptopt=Acquire::Retries "3"',
    ]
    argv += [f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES]
    if recipe.packages:
        argv.append(f"--include={','.join(recipe.packages)}")
    argv += [recipe.suite, str(rootdir), mirror]
    return argv


def compile_argv(rootdir: Path, directory: str) -> list[str]:
    """Byte-compile the .py files of a guest directory with the guest's own Python (its
    version, its magic number), as checked-hash .pyc: a source that differs from the one
    compiled is compiled again, never trusted by its timestamp."""
    return [
        "chroot", str(rootdir),
        "/usr/bin/python3", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", directory,
    ]  # fmt: skip


def ssh_keygen_argv(key_path: Path, comment: str) -> list[str]:
    """A passphrase-less ed25519 key pair at key_path (+ .pub)."""
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key_path)]


def mke2fs_argv(rootdir: Path, image: Path, size: str) -> list[str]:
    """An ext4 filesystem populated from rootdir (`-d`): no loop mount, no root needed for it."""
    return [
        "mke2fs",
        "-q",
        "-F",  # the target is a regular file
        "-t", "ext4",
        "-L", FS_LABEL,
        "-m", "0",  # no blocks reserved for root: everything runs as root
        "-E", "root_owner=0:0",
        "-d", str(rootdir),
        str(image),
        size,
    ]  # fmt: skip


def convert_argv(raw: Path, dest: Path) -> list[str]:
    return ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(dest)]


def overlay_argv(base: Path, base_format: str, overlay: Path) -> list[str]:
    """A qcow2 overlay whose backing file is the (absolute) base image."""
    return [
        "qemu-img", "create", "-q",
        "-f", "qcow2",
        "-F", base_format,
        "-b", str(base.resolve()),
        str(overlay),
    ]  # fmt: skip
