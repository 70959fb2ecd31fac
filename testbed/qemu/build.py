"""The testbed's own QEMU: Debian's pinned source + the testbed's patch series (qemu/patches) +
any --qemu-patches, built for x86_64 with only what the testbed uses, content-keyed in the cache.

One work tree per source version is a git repository of our own (never the user's): the tree for
a patch set is written with `git checkout` of a commit made from the pristine tree and the
patches, so only files whose content changes get a new mtime and ninja recompiles only those. A
build's binary then lands in builds/<key>/, where the key hashes the source identity, the patches'
bytes and the configure options: same inputs, same binary, on any machine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InfraError
from ..hashing import hash_bytes, short
from ..kernel.lock import locked
from ..kernel.patches import Patch, discover
from ..paths import cache_dir, data_root
from .source import QemuSource, fetch, pinned_source

log = logging.getLogger(__name__)

BINARY = "qemu-system-x86_64"
BUILD_FORMAT = "1"  # bump when the way a build is made changes what it produces
# Only what the testbed runs: one target, slirp for the guest's network, no GUI, no docs; the
# firmware comes from the host's seabios/ipxe/qemu-system-data packages, as Debian's build does.
CONFIGURE_ARGS = (
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--enable-slirp",
    "--enable-kvm",
    "--enable-tcg",
    "--enable-pixman",
    "--enable-fdt=system",
    "--disable-download",
    "--disable-install-blobs",
    "--disable-docs",
    "--disable-relocatable",
    "--prefix=/usr",
    "--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu",
)
GIT = ("git", "-c", "user.name=p2p-testbed", "-c", "user.email=p2p-testbed@localhost", "-c", "core.hooksPath=/dev/null")


@dataclass(frozen=True)
class QemuBuild:
    key: str
    binary: Path
    manifest: dict

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))


def testbed_series() -> tuple[Patch, ...]:
    """The patches the testbed carries (qemu/patches/*.patch, in name order), read as the kernel's
    --patches are (kernel/patches.py)."""
    return discover(data_root() / "qemu" / "patches", "qemu/patches")


def user_series(path: Path) -> tuple[Patch, ...]:
    """--qemu-patches: a patch, an mbox (b4's rules) or a directory of *.patch, as --patches."""
    return discover(path, "--qemu-patches")


def build_key(source: QemuSource, patches: Sequence[Patch]) -> str:
    manifest = json.dumps(
        {
            "format": BUILD_FORMAT,
            "source": source.identity,
            "configure": CONFIGURE_ARGS,
            "patches": [hash_bytes(p.content) for p in patches],
        },
        sort_keys=True,
    )
    return hash_bytes(manifest.encode())


def qemu_root() -> Path:
    return cache_dir("qemu")


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> str:
    proc = subprocess.run(
        [*GIT, "-C", str(repo), *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        raise InfraError(f"git {' '.join(args[:2])} in {repo} failed: {proc.stderr.decode(errors='replace')[-1500:]}")
    return proc.stdout.decode()


def _work_tree(source: QemuSource, progress: Callable[[str], None]) -> Path:
    """Our git repository of the pristine source (its first commit), made once per version."""
    work = qemu_root() / "work" / source.tree.name
    if (work / "src" / ".git").is_dir() and (work / ".testbed-base").exists():
        return work
    progress(f"qemu: preparing the work tree of {source.upstream}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(source.tree, work / "src", symlinks=True)
    src = work / "src"
    _git(src, "init", "-q")
    _git(src, "add", "-A", "-f")
    _git(src, "commit", "-q", "-m", f"Debian {source.version}")
    (work / ".testbed-base").write_text(_git(src, "rev-parse", "HEAD").strip() + "\n")
    return work


def _apply(work: Path, patches: Sequence[Patch]) -> str:
    """A commit of the base tree with the patches, made in a scratch index; the work tree is then
    moved to it by checkout, which rewrites only the files that differ."""
    src = work / "src"
    base = (work / ".testbed-base").read_text().strip()
    index = work / "index.tmp"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        _git(src, "read-tree", base, env=env)
        for patch in patches:
            try:
                _git(src, "apply", "--cached", "-", env=env, stdin=patch.content)  # mail headers skipped
            except InfraError as exc:
                raise ConfigError(f"QEMU patch {patch.name} does not apply to {src}: {exc}") from None
        tree = _git(src, "write-tree", env=env).strip()
    finally:
        index.unlink(missing_ok=True)
    commit = _git(src, "commit-tree", tree, "-p", base, "-m", "testbed patches").strip()
    _git(src, "checkout", "-q", "-f", "--detach", commit)
    return commit


def _configure(work: Path, progress: Callable[[str], None]) -> Path:
    build = work / "build"
    stamp = build / ".testbed-configure"
    wanted = "\n".join(CONFIGURE_ARGS)
    if stamp.is_file() and stamp.read_text() == wanted and (build / "build.ninja").is_file():
        return build
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    progress("qemu: configure (x86_64-softmmu, slirp, no GUI, no docs)")
    # meson and pycotap come from the testbed's venv: Debian's source ships no wheels
    _run([str(work / "src" / "configure"), *CONFIGURE_ARGS, f"--python={sys.executable}"], build, "configure")
    stamp.write_text(wanted)
    return build


def _run(argv: list[str], cwd: Path, what: str) -> None:
    log_path = cwd / f"{what}.log"
    with log_path.open("wb") as out:
        proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise InfraError(f"qemu {what} failed ({proc.returncode}), log {log_path}:\n{tail}")


def cached_build(key: str) -> QemuBuild | None:
    out = qemu_root() / "builds" / key
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    binary = out / BINARY
    return QemuBuild(key, binary, manifest) if binary.is_file() else None


def ensure_qemu(
    extra_patches: Sequence[Patch] = (), progress: Callable[[str], None] = print, offline_ok: bool = True
) -> QemuBuild:
    """The built QEMU for the testbed's series (+ extra_patches), built if the cache lacks it."""
    root = qemu_root()
    with locked(root / "build.lock", progress, "qemu"):
        source = pinned_source(root) if offline_ok else None
        source = source or fetch(root, progress)
        patches = (*testbed_series(), *extra_patches)
        key = build_key(source, patches)
        found = cached_build(key)
        if found:
            return found
        _check_build_deps()
        started = time.monotonic()
        work = _work_tree(source, progress)
        commit = _apply(work, patches)
        build = _configure(work, progress)
        progress(f"qemu: building {BINARY} {source.upstream} + {len(patches)} patches (ninja, {os.cpu_count()} jobs)")
        _run(["ninja", f"-j{os.cpu_count() or 1}", BINARY], build, "ninja")
        out = root / "builds" / key
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(build / BINARY, staging / BINARY)
        manifest = {
            "key": key,
            "version": source.upstream,
            "source": source.identity,
            "configure": list(CONFIGURE_ARGS),
            "patches": [{"name": p.name, "sha256": hash_bytes(p.content)} for p in patches],
            "work_commit": commit,
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
        progress(f"qemu: built {short(key)} in {manifest['build_seconds']} s")
        return QemuBuild(key, out / BINARY, manifest)


def _check_build_deps() -> None:
    """meson and pycotap in this Python (the `qemu` extra), and the Debian packages a QEMU build
    needs: installed as root (scripts/install-deps qemu), else named with the command to run."""
    import importlib.util

    missing = [m for m in ("mesonbuild", "pycotap") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"building QEMU needs {' and '.join(missing)} in {sys.executable}'s environment: "
            "pip install -e '.[qemu]' (make venv installs it)"
        )
    script = data_root() / "scripts" / "install-deps"
    if not script.is_file():  # an installed testbed: configure names what is missing
        return
    proc = subprocess.run([str(script), "qemu"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"building QEMU needs Debian packages: {(proc.stdout + proc.stderr).strip()}")
