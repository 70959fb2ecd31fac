"""ensure_kernel: source (+patches) + config set → a cached bzImage, built only when missing.

Cache layout under cache_dir("kernel"):
  <key>/                 artifacts: bzImage, .config, build.log, manifest.json
  builds/<name>/         kbuild O= directories, one per (source tree, config set): incremental
  trees/                 git worktrees (and copies) where patch series (then base fixes) are applied
  trees/base-fixes/      the worktree of a build with base fixes but no series
  trees/coverage/        the worktree of coverage builds (the scope's files profiled)
  debian/                the private apt configuration and the extracted linux-source
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..coverage.scope import DEFAULT_SCOPE, Scope, load_scope
from ..errors import ConfigError
from ..hashing import hash_bytes, short
from ..inventory import mark_used
from ..paths import cache_dir
from . import basefixes, extmod, kconfig, kconfig_deps, ownrepo, profile
from . import patches as patchmod
from . import seed as seedmod
from . import source as sourcemod
from .artifact import KernelArtifact, artifact_in, load_cached, write_manifest
from .cachekey import KeyInputs, compiler_version
from .configsets import COVERAGE_SETS, KERNEL_CONFIGS, build_set, load_config_set
from .kconfig import MergedConfig
from .lock import locked
from .make import jobs, make_argv, run_make
from .request import KernelRequest

Progress = Callable[[str], None]
# LOCALVERSION set (empty) stops kbuild adding "+" for a git tree, keeping release names
# predictable; a fixed build user/host keeps `uname -v` free of this machine's name
_MAKE_VARS = ("LOCALVERSION=", "KBUILD_BUILD_USER=testbed", "KBUILD_BUILD_HOST=testbed")


@dataclass(frozen=True)
class Plan:
    """What would be built: resolved inputs and their key, before anything is built."""

    config_set: str
    merged: MergedConfig
    source: sourcemod.SourceTree
    series: tuple[patchmod.Patch, ...]
    inputs: KeyInputs
    base_fixes: tuple[basefixes.BaseFix, ...] = ()  # listed for this config set
    base_fixes_on: bool = True  # False: switched off, none applied
    coverage: Scope | None = None  # a coverage set: the scope whose files are profiled

    @property
    def key(self) -> str:
        return self.inputs.key()


def kernel_root() -> Path:
    return cache_dir("kernel")


def plan(
    config_set: str = "default",
    ksrc: Path | None = None,
    patches: Path | None = None,
    progress: Progress = print,
    fetch: bool = True,
    base_fixes: bool | None = None,
    coverage_scope: Path | None = None,
) -> Plan | None:
    """Resolve the inputs. Without `fetch`, a Debian source not fetched yet gives None.
    `base_fixes`: apply the base fixes listed for the config set; None: TESTBED_BASE_FIXES.
    `coverage_scope`: the scope a coverage set profiles (default: coverage-scope.yaml)."""
    merged = load_config_set(config_set)  # bad fragments fail before any download
    scope = load_scope(coverage_scope or DEFAULT_SCOPE) if config_set in COVERAGE_SETS else None
    fixes = basefixes.fixes_for(config_set, basefixes.load_fixes())
    fixes_on = basefixes.enabled() if base_fixes is None else base_fixes
    series = patchmod.discover(patches) if patches is not None else ()
    root = kernel_root()
    if ksrc is not None:
        src = sourcemod.user_tree(ksrc, progress)
    elif fetch:
        src = sourcemod.debian_tree(root / "debian", progress=progress)
    else:
        pinned = sourcemod.pinned_debian_tree(root / "debian")
        if pinned is None:
            return None
        src = pinned
    inputs = KeyInputs(
        source=src.identity,
        patches=patchmod.series_hash(series) if series else "",
        fragment=merged.render(),
        compiler=compiler_version(),
        config_set=config_set,
        base_fixes=basefixes.fixes_hash(fixes) if fixes_on else "",
        coverage=scope.digest() if scope is not None else "",
    )
    return Plan(config_set, merged, src, series, inputs, fixes, fixes_on, scope)


def find_cached(
    config_set: str = "default",
    ksrc: Path | None = None,
    patches: Path | None = None,
    base_fixes: bool | None = None,
    coverage_scope: Path | None = None,
) -> KernelArtifact | None:
    """The cached kernel for these inputs, without building or touching the network."""
    quiet: Progress = lambda _: None  # noqa: E731
    p = plan(
        build_set(config_set), ksrc, patches, quiet, fetch=False, base_fixes=base_fixes, coverage_scope=coverage_scope
    )
    return load_cached(kernel_root(), p.key) if p else None


def refresh_debian_source(progress: Progress = print) -> None:
    """Look for a newer linux-source package (network); the next build uses it."""
    sourcemod.debian_tree(kernel_root() / "debian", refresh=True, progress=progress)


# "0": a series' first build compiles from nothing (bench/rebuild --check-clean compares the two)
SEED_ENV = "TESTBED_SEED"


def build_dir_of(srctree: Path, config_set: str) -> Path:
    """Where `srctree` is built for `config_set` (incremental from one build to the next)."""
    return _build_dir(kernel_root(), srctree, config_set)


def _build_dir(root: Path, srctree: Path, config_set: str) -> Path:
    # keyed by where the source lives, not its contents: edits rebuild incrementally
    tag = short(hash_bytes(str(srctree).encode(), config_set.encode()))[:8]
    return root / "builds" / f"{srctree.name}-{config_set}-{tag}"


def configure(srctree: Path, builddir: Path, merged: MergedConfig, log: Path, progress: Progress) -> Path:
    """allnoconfig + fragment, olddefconfig, then check every requested option survived.
    The result replaces .config only when it differs, so an unchanged config rebuilds nothing."""
    fragment = builddir / "testbed-fragment.config"
    fragment.write_text(merged.render())
    candidate = builddir / "testbed-candidate.config"
    env = {"KCONFIG_CONFIG": str(candidate)}
    progress("kernel: configuring (allnoconfig + fragments, olddefconfig)")
    run_make(
        make_argv(srctree, builddir, "allnoconfig", extra=(f"KCONFIG_ALLCONFIG={fragment}",)),
        log,
        "make allnoconfig",
        progress,
        env,
    )
    run_make(make_argv(srctree, builddir, "olddefconfig"), log, "make olddefconfig", progress, env)
    final = kconfig.parse_dotconfig(candidate.read_text())
    dropped = kconfig.verify(merged, final)
    if dropped:
        lines = [f"  {m.describe()}\n    why: {kconfig_deps.hint(srctree, m.wanted.symbol, final)}" for m in dropped]
        raise ConfigError(
            f"{len(dropped)} requested kernel option(s) did not survive olddefconfig "
            f"(generated config: {candidate}):\n" + "\n".join(lines)
        )
    dotconfig = builddir / ".config"
    if dotconfig.is_file() and dotconfig.read_bytes() == candidate.read_bytes():
        candidate.unlink()
    else:
        candidate.replace(dotconfig)
    return dotconfig


def _source_tree(p: Plan, root: Path, progress: Progress) -> tuple[Path, tuple[basefixes.Decision, ...]]:
    """The tree to build: the source itself, or a worktree with the series and then the base
    fixes the tree still needs. Without a series, a tree that needs no fix is built in place
    (its build directory stays incremental)."""
    fixes = p.base_fixes if p.base_fixes_on else ()
    decisions = () if p.base_fixes_on else basefixes.switched_off(p.base_fixes)
    if p.coverage is not None:
        worktree, applied = _coverage_tree(p, root, fixes, progress)
        return worktree, decisions + applied
    if not p.series:
        checked = basefixes.decide_all(p.source.path, fixes)
        if not any(d.applied for d in checked):
            _report(checked, progress)
            return p.source.path, decisions + checked
    what = [f"{len(p.series)} patch(es)"] if p.series else []
    what += ["the base fixes it still needs"] if fixes else []
    progress(f"kernel: applying {' then '.join(what)} in a worktree of {p.source.path}")
    # a worktree of its own without a series: series builds never reset the tree (and build
    # directory) of the base kernel, as when it was built in place
    trees = root / "trees" if p.series else root / "trees" / "base-fixes"
    worktree = patchmod.apply_series(p.source, p.series, trees)
    applied = basefixes.apply_fixes(worktree, fixes)
    _report(applied, progress)
    return worktree, decisions + applied


def _coverage_tree(
    p: Plan, root: Path, fixes: tuple[basefixes.BaseFix, ...], progress: Progress
) -> tuple[Path, tuple[basefixes.Decision, ...]]:
    """A worktree of its own (its build directory stays warm between coverage builds): the
    series, the base fixes, then GCOV_PROFILE for the scope's files."""
    assert p.coverage is not None
    progress(f"kernel: coverage build: profiling the files of {p.coverage.file} in a worktree of {p.source.path}")
    worktree = patchmod.apply_series(p.source, p.series, root / "trees" / "coverage")
    applied = basefixes.apply_fixes(worktree, fixes)
    _report(applied, progress)
    missing = profile.missing_sources(worktree, p.coverage)
    if missing:
        raise ConfigError(f"coverage scope {p.coverage.file} names files this tree lacks: {', '.join(missing)}")
    profile.add_profiling(worktree, p.coverage)
    return worktree, applied


def _report(decisions: tuple[basefixes.Decision, ...], progress: Progress) -> None:
    for d in decisions:
        progress(f"kernel: base fix {d.fix.name}: {'applied' if d.applied else 'skipped'} ({d.reason})")


def _build(p: Plan, root: Path, progress: Progress) -> KernelArtifact:
    started = time.monotonic()
    srctree, fix_decisions = _source_tree(p, root, progress)
    builddir = _build_dir(root, srctree, p.config_set)
    seeding = os.environ.get(SEED_ENV, "1") != "0"
    if seeding and p.series and p.coverage is None:
        _seed_from_base(p, root, srctree, builddir, progress)
    builddir.mkdir(parents=True, exist_ok=True)
    log = builddir / "build.log"
    log.write_text(f"# testbed kernel build {p.key}: {p.source.identity}\n")
    progress(f"kernel: building {p.config_set} in {builddir} (log: {log})")
    dotconfig = configure(srctree, builddir, p.merged, log, progress)
    n = jobs()
    # `modules` writes Module.symvers, which the probe module's build checks its symbols against
    progress(f"kernel: make -j{n} bzImage modules")
    run_make(
        make_argv(srctree, builddir, "bzImage", "modules", extra=(f"-j{n}", *_MAKE_VARS)),
        log,
        "make bzImage modules",
        progress,
    )
    release = (builddir / "include" / "config" / "kernel.release").read_text().strip()

    staging = root / f".{p.key}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    art = artifact_in(staging, p.key, release)
    shutil.copy2(builddir / "arch" / "x86" / "boot" / "bzImage", art.bzimage)
    shutil.copy2(dotconfig, art.config)
    shutil.copy2(log, art.build_log)
    coverage = _keep_coverage(p, srctree, builddir, staging, progress)
    extmod.keep_module_build(srctree, builddir, staging / extmod.EXTMOD_DIR, art.build_log)
    seconds = round(time.monotonic() - started, 1)
    write_manifest(
        staging,
        {
            "key": p.key,
            "release": release,
            "config_set": p.config_set,
            "inputs": asdict(p.inputs) | {"fragment": short(hash_bytes(p.inputs.fragment.encode()))},
            "source_tree": str(p.source.path),
            "source": _provenance(p, srctree),
            "built_in": str(srctree),
            "build_dir": str(builddir),
            "patches": [patch.name for patch in p.series],
            "base_fixes": basefixes.manifest_record(fix_decisions, p.base_fixes_on),
            "build_seconds": seconds,
            **({"coverage": coverage} if coverage else {}),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    final = root / p.key
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    progress(f"kernel: built {release} in {seconds:.0f}s")
    return artifact_in(final, p.key, release)


def _provenance(p: Plan, srctree: Path) -> dict[str, object]:
    """The source's provenance and the series' own: each patch's SHA-256 (KCIDB's patchset
    hash is computed from them) and the commit its `base-commit:` names, in full as the series
    tree resolved it (the series was applied there, not on the source's HEAD)."""
    out = sourcemod.provenance(p.source)
    if p.series:
        out["patch_sha256"] = [hashlib.sha256(patch.content).hexdigest() for patch in p.series]
        base = next((patch.base_commit for patch in p.series if patch.base_commit), "")
        resolved = ownrepo.commit_of(srctree, base) if base else None
        if resolved:
            out["series_base_commit"] = resolved
    return out


def _seed_from_base(p: Plan, root: Path, srctree: Path, builddir: Path, progress: Progress) -> None:
    """A series' first build in this tree starts from the base build's objects (seed.py); when
    that cannot be done, from nothing, as before. So does a later one when the base build it was
    seeded from is not the newest any more (a config fragment or a base fix changed since): the
    new base has caught up with the change, the series' directory would rebuild all the change
    reaches (seen: 1543 objects in 348 s for one mutant, after one option was added).

    Only from Debian's source: that tree never changes, so its build directories hold objects
    of exactly its content. A user's tree built in place may have been built at other commits
    since (or half-built, a failure writes no manifest): no manifest can say which content its
    build directory holds, so its series build from nothing."""
    if p.source.kind != "debian":
        return
    base = seedmod.find_base_build(root, p.source.path, p.config_set)
    if base is None or base.srctree == srctree:
        return
    if (builddir / "vmlinux").exists():
        was = seedmod.seeded_from(builddir)
        if was is None or was == base.key:
            return  # kbuild rebuilds what the series changed since
        progress(f"kernel: {builddir.name} started from kernel {was}; the base is {base.key} now: starting again")
    # seeding moves the series tree's timestamps back: the tree's build directories of the other
    # config sets were built from other content and would miss rebuilds; they are dropped (their
    # next build is seeded in turn)
    for other in KERNEL_CONFIGS:
        stale = _build_dir(root, srctree, build_set(other))
        if stale != builddir and stale.exists():
            progress(f"kernel: dropping {stale.name}: the series tree's timestamps change")
            shutil.rmtree(stale)
    try:
        seedmod.seed(base, srctree, builddir, progress)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        progress(f"kernel: could not start from kernel {base.key}'s objects ({exc}); building from nothing")
        shutil.rmtree(builddir, ignore_errors=True)


def _keep_coverage(p: Plan, srctree: Path, builddir: Path, staging: Path, progress: Progress) -> dict | None:
    """A coverage build keeps the scope's notes and sources with the kernel; the manifest says
    which scope it profiled and what the build directory was (the guest's gcov paths start with it)."""
    if p.coverage is None:
        return None
    not_built = profile.keep_for_reports(p.coverage, srctree, builddir, staging / profile.COVERAGE_DIR)
    for path in not_built:
        progress(f"kernel: coverage: {path} is in the scope but not built in the {p.config_set} set")
    return {
        "scope": str(p.coverage.file),
        "digest": p.coverage.digest(),
        "files": list(p.coverage.paths()),
        "not_built": list(not_built),
        "gcov_root": str(builddir),
    }


def ensure_kernel(request: KernelRequest, progress: Callable[[str], None] = print) -> KernelArtifact:
    """The kernel `request` names, from the cache or built (incrementally) and cached (not for a
    request of a given bzImage: KernelRequest.bzimage_path() decides between the two).
    base_fixes False builds without the base fixes; None leaves it to TESTBED_BASE_FIXES. A boot
    profile's name (debug-full) builds the config set it boots (debug). A coverage set profiles
    the files of its coverage scope (default: coverage-scope.yaml)."""
    if request.bzimage is not None:
        raise ValueError(f"{request.bzimage} is a built kernel: nothing to build")
    config_set = build_set(request.config_set)
    p = plan(
        config_set,
        request.ksrc,
        request.patches,
        progress,
        base_fixes=request.base_fixes,
        coverage_scope=request.coverage_scope,
    )
    assert p is not None  # fetch=True always resolves a source
    root = kernel_root()
    progress(
        f"kernel: {config_set} set, {p.source.kind} source {p.source.path}"
        + (f", {len(p.series)} patch(es)" if p.series else "")
        + (
            f", base fixes {'on' if p.base_fixes_on else 'off'}: {', '.join(f.name for f in p.base_fixes)}"
            if p.base_fixes
            else ""
        )
        + f"; key {p.key}"
    )
    cached = load_cached(root, p.key)
    if cached:
        progress(f"kernel: cached {cached.release} ({p.key})")
        mark_used(root / p.key)
        return cached
    with locked(root / ".lock", progress):
        cached = load_cached(root, p.key)  # another process may have built it meanwhile
        if cached:
            return cached
        return _build(p, root, progress)
