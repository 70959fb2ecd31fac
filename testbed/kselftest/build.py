"""Build the tree's selftest programs against that tree's own uAPI headers, static, cached.

The tree is the one the guest kernel was built from (the Debian source, or the user's tree with
the series applied in the testbed's worktree), found like the probe module finds it. `make
headers` runs in a directory of the cache (never in the tree), each suite is built with
OUTPUT= into the cache, and programs are linked statically so the guest image needs nothing.
After the build each program's `-l` listing is taken on the host: the case names pytest
collects one item for. The cache key covers the kernel's identity, the suites' sources and the
testbed's build fixes.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..hashing import hash_bytes, hash_files, short
from ..kernel.lock import locked
from ..kernel.make import run_make
from ..paths import cache_dir
from ..probe.build import KernelTree, kernel_tree_of
from ..timeouts import Timeouts
from .catalog import Program
from .fixes import BuildFix, fixes_for
from .listing import case_names

log = logging.getLogger(__name__)

RECIPE = "1"  # bump when the build steps change
SELFTESTS = Path("tools/testing/selftests")
SHARED_FILES = ("kselftest.h", "kselftest_harness.h", "lib.mk")
KSFT_SKIP = 4
LISTING_BDF = "0000:00:00.0"  # the vfio programs want a BDF even to list their cases
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SelftestBuild:
    root: Path
    key: str
    tree: KernelTree
    fixes: tuple[BuildFix, ...]
    listings: dict[str, tuple[str, ...] | None]  # program id -> cases; None: it cannot list on the host

    def binary(self, program: Program) -> Path:
        return self.root / program.suite / program.name

    def cases(self, program: Program) -> tuple[str, ...] | None:
        return self.listings.get(program.id)


def _suite_files(srctree: Path, suite: str) -> list[Path]:
    base = srctree / SELFTESTS
    files = [p for p in (base / suite).rglob("*") if p.is_file()]
    return files + [base / name for name in SHARED_FILES if (base / name).is_file()]


def _fixes(tree: KernelTree, programs: tuple[Program, ...]) -> tuple[BuildFix, ...]:
    """The build fixes these programs' suites need in this tree (each reads the suite's sources)."""
    suites = sorted({p.suite for p in programs})
    return tuple(f for s in suites for f in fixes_for(s, tree.srctree / SELFTESTS / s))


def selftest_key(tree: KernelTree, programs: tuple[Program, ...], fixes: tuple[BuildFix, ...]) -> str:
    parts = [RECIPE.encode(), tree.identity.encode(), " ".join(p.id for p in programs).encode()]
    for suite in sorted({p.suite for p in programs}):
        parts.append(hash_files(_suite_files(tree.srctree, suite), tree.srctree).encode())
    parts += [f"{f.suite}/{f.name}\n{f.header}".encode() for f in fixes]
    return short(hash_bytes(*parts))


def _headers(tree: KernelTree, work: Path, progress: Progress) -> Path:
    """The tree's exported uAPI headers (`make headers`), made outside the tree."""
    if (tree.srctree / ".config").is_file():
        ready = tree.srctree / "usr" / "include"
        if (ready / "linux" / "vfio.h").is_file():
            return ready  # an in-tree build that already ran `make headers`
        raise ConfigError(
            f"{tree.srctree} was built in place, so kbuild refuses to export its headers "
            "elsewhere: run `make headers` there (or build with O=) and try again"
        )
    out = work / "headers"
    run_make(
        ["make", "-C", str(tree.srctree), f"O={out}", "headers"],
        work / "build.log",
        "export the tree's uAPI headers (make headers)",
        progress,
    )
    return out / "usr" / "include"


def _listing(binary: Path, program: Program) -> tuple[str, ...] | None:
    argv = [str(binary), "-l"] + ([LISTING_BDF] if program.device else [])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=Timeouts().host_tool, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("%s -l: %s", binary, exc)
        return None
    cases = case_names(done.stderr.splitlines())
    # the harness exits KSFT_SKIP (4) after listing; a program that opens its device before the
    # harness starts cannot list here at all
    return cases if done.returncode in (0, KSFT_SKIP) and cases else None


def ensure_selftests(bzimage: Path, programs: tuple[Program, ...], progress: Progress = print) -> SelftestBuild:
    """The programs built for the tree behind `bzimage` (seconds; cached)."""
    tree = kernel_tree_of(bzimage, for_modules=False)  # the selftests' sources, not the module kit
    fixes = _fixes(tree, programs)
    key = selftest_key(tree, programs, fixes)
    root = cache_dir("kselftest")
    final = root / key
    if not (final / "listing.json").is_file():
        with locked(root / ".lock", progress):
            if not (final / "listing.json").is_file():
                _build(tree, programs, fixes, root, key, progress)
    listings = {
        k: (tuple(v) if v is not None else None) for k, v in json.loads((final / "listing.json").read_text()).items()
    }
    return SelftestBuild(final, key, tree, fixes, listings)


def _build(
    tree: KernelTree,
    programs: tuple[Program, ...],
    fixes: tuple[BuildFix, ...],
    root: Path,
    key: str,
    progress: Progress,
) -> None:
    work = root / f".{key}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    progress(f"kselftest: building {', '.join(p.id for p in programs)} from {tree.srctree}")
    include = _headers(tree, work, progress)
    for suite in sorted({p.suite for p in programs}):
        suite_dir = tree.srctree / SELFTESTS / suite
        out = work / suite
        out.mkdir()
        extra = []
        for fix in (f for f in fixes if f.suite == suite):
            header = work / f"fix-{fix.name}.h"
            header.write_text(f"/* p2p-testbed build fix: {fix.why} */\n{fix.header}")
            extra.append(f"-include {header}")
            progress(f"kselftest: applying build fix {fix.name}: {fix.why}")
        names = [p.name for p in programs if p.suite == suite]
        argv = [
            "make",
            "-C",
            str(suite_dir),
            f"OUTPUT={out}",
            f"KHDR_INCLUDES=-isystem {include}",
            "LDFLAGS=-static -pthread",
            f"EXTRA_CFLAGS={' '.join(extra)}",
            *[str(out / n) for n in names],
        ]
        run_make(argv, work / "build.log", f"build the {suite} selftests", progress)
    listings = {p.id: _listing(work / p.suite / p.name, p) for p in programs}
    (work / "listing.json").write_text(json.dumps(listings, indent=1) + "\n")
    shutil.rmtree(work / "headers", ignore_errors=True)  # 40 MB the programs no longer need
    shutil.rmtree(root / key, ignore_errors=True)
    work.replace(root / key)
