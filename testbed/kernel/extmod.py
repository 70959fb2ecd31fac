"""What building an external module against a cached kernel needs, kept with that kernel.

A build directory serves one (tree, config set) and moves on to the next series built there, so
the probe module of an earlier series could no longer be built against it ("has since built
another kernel"). kbuild's own `scripts/package/install-extmod-build` (what distributions'
linux-headers packages use) copies the headers, scripts, .config and Module.symvers of this build
into the kernel's cache entry, so the probe can be built against any cached kernel at any time.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

EXTMOD_DIR = "extmod"  # in a kernel's cache entry
SCRIPT = Path("scripts") / "package" / "install-extmod-build"


def keep_module_build(srctree: Path, builddir: Path, dest: Path, build_log: Path) -> bool:
    """Fill `dest` with what `make -C dest M=... modules` needs; False for a tree without the
    script (older kernels: the probe is then built in the build directory, while it lasts)."""
    script = srctree / SCRIPT
    if not script.is_file():
        log.info("%s has no %s: external modules build in the build directory only", srctree, SCRIPT)
        return False
    env = {**os.environ, "srctree": str(srctree), "SRCARCH": "x86", "CC": "gcc", "HOSTCC": "gcc", "MAKE": "make"}
    with build_log.open("a") as out:
        out.write(f"$ (cd {builddir}; sh {script} {dest})\n")
        out.flush()
        proc = subprocess.run(["sh", str(script), str(dest)], cwd=builddir, env=env, stdout=out, stderr=out)
    if proc.returncode != 0:  # a kernel without it still boots: the probe falls back, and says so
        log.warning("install-extmod-build failed (rc %d, see %s)", proc.returncode, build_log)
        shutil.rmtree(dest, ignore_errors=True)
        return False
    shutil.copy2(builddir / ".config", dest / ".config")
    return True


def module_build_dir(kernel_entry: Path) -> Path | None:
    """The kept external-module tree of a cached kernel, if it has one."""
    tree = kernel_entry / EXTMOD_DIR
    return tree if (tree / "Module.symvers").is_file() and (tree / "Makefile").is_file() else None
