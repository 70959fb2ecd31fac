"""Build the probe module against the very build directory the guest's bzImage came from.

A testbed-built kernel keeps what an external module build needs in its cache entry (extmod/,
kernel/extmod.py), so the probe builds against any cached kernel; a kernel cached before that
records its source tree and kbuild O= directory in its manifest, used while they last; a
user's own build (`--kernel ~/linux/arch/x86/boot/bzImage`) is found from the bzImage's place
in the tree. The module is cached under cache_dir("probe")/<kernel key + module sources>, so a
series that changes an API the probe uses fails here, with the compiler's message. Map type names
are generated from that tree's own enum (map_types.py).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..hashing import hash_bytes, hash_files, short
from ..kernel.artifact import read_manifest
from ..kernel.extmod import module_build_dir
from ..kernel.lock import locked
from ..kernel.make import make_argv, run_make
from ..paths import cache_dir
from .map_types import generate as generate_map_types

log = logging.getLogger(__name__)

KMOD_DIR = Path(__file__).resolve().parent / "kmod"
MODULE_NAME = "p2pdma_probe"
SOURCES = ("Kbuild", "p2pdma_probe.c", "p2pdma_probe.h")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class KernelTree:
    """Where a bzImage was built: the source tree and the kbuild output directory."""

    srctree: Path
    builddir: Path
    identity: str  # the kernel cache key, or the bzImage's hash for a user's own build


@dataclass(frozen=True)
class ProbeModule:
    ko: Path
    build_log: Path
    key: str


def _sources() -> list[Path]:
    return [KMOD_DIR / name for name in SOURCES]


def kernel_tree_of(bzimage: Path, for_modules: bool = True) -> KernelTree:
    """The tree behind a bzImage, or a ConfigError that says what to pass instead.
    `for_modules`: the kernel's own copy of what an external module build needs will do (it
    has no selftests and no uAPI headers to export: the tree's own tests need the source)."""
    bzimage = bzimage.resolve()
    manifest = read_manifest(bzimage.parent)
    kept = module_build_dir(bzimage.parent) if manifest is not None and for_modules else None
    if manifest is not None and kept is not None:  # the kernel's own copy of what a module build needs
        return KernelTree(kept, kept, manifest.key)
    if manifest is not None and manifest.build_dir is not None and manifest.built_in is not None:
        builddir = manifest.build_dir
        built = builddir / "arch" / "x86" / "boot" / "bzImage"
        if not built.is_file() or built.read_bytes() != bzimage.read_bytes():
            raise ConfigError(
                f"the probe module must be built against the build directory of {bzimage}, but "
                f"{builddir} has since built another kernel; rebuild this one "
                f"(testbed kernel build) or remove {bzimage.parent} from the cache"
            )
        return KernelTree(manifest.built_in, builddir, manifest.key)
    # a user's build: <O= or tree>/arch/x86/boot/bzImage
    if bzimage.parts[-4:-1] == ("arch", "x86", "boot"):
        builddir = bzimage.parents[3]
        if (builddir / "Module.symvers").is_file():
            source_link = builddir / "source"  # kbuild leaves it in an O= directory
            srctree = source_link.resolve() if source_link.exists() else builddir
            return KernelTree(srctree, builddir, short(hash_bytes(bzimage.read_bytes())))
    raise ConfigError(
        f"cannot build the probe module for {bzimage}: it needs the kernel's build directory "
        "with Module.symvers (CONFIG_MODULES=y, `make modules` run). Pass the source tree "
        "instead (--kernel ~/linux), or the bzImage inside its build tree"
    )


def probe_key(tree: KernelTree) -> str:
    # the generator is a source of the module too
    sources = [*_sources(), Path(__file__).with_name("map_types.py")]
    return short(hash_bytes(tree.identity.encode(), hash_files(sources).encode()))


def ensure_probe(bzimage: Path, progress: Progress = print) -> ProbeModule:
    """The probe .ko for this kernel, built if the cache lacks it (a few seconds)."""
    tree = kernel_tree_of(bzimage)
    key = probe_key(tree)
    root = cache_dir("probe")
    final = root / key
    module = ProbeModule(final / f"{MODULE_NAME}.ko", final / "build.log", key)
    if module.ko.is_file():
        return module
    with locked(root / ".lock", progress):
        if module.ko.is_file():
            return module
        work = root / f".{key}.partial"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for src in _sources():
            shutil.copy2(src, work / src.name)
        generate_map_types(tree.srctree, work)
        progress(f"probe: building {MODULE_NAME}.ko against {tree.builddir}")
        log.debug("probe build: srctree %s builddir %s into %s", tree.srctree, tree.builddir, work)
        run_make(
            make_argv(tree.srctree, tree.builddir, "modules", extra=(f"M={work}",)),
            work / "build.log",
            f"build the probe module ({MODULE_NAME}.ko)",
            progress,
        )
        shutil.rmtree(final, ignore_errors=True)
        work.replace(final)
    return module
