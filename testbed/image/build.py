"""Build the guest image from its recipe, once per cache key, atomically.

bootstrap (mmdebstrap) → customize (recipe rootfs/, SSH keys) → ext4 (mke2fs -d, no loop
mount) → base image (qcow2 or raw, read-only) → rename into the cache. Everything happens in a
temporary directory beside the cache entry, so an interrupted build leaves no half image.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ..debian_mirror import debian_mirror
from ..errors import ConfigError, InfraError
from ..hashing import short
from ..inventory import mark_used
from ..paths import GUEST_IMAGES_DIR, cache_dir
from ..timeouts import Timeouts
from . import rootfs
from .model import GuestImage
from .recipe import Recipe, load_recipe, recipe_key
from .steps import compile_argv, convert_argv, mke2fs_argv, mmdebstrap_argv, ssh_keygen_argv

Progress = Callable[[str], None]

SSH_KEY = "id_ed25519"
HOST_KEY = "ssh_host_ed25519_key"
MANIFEST = "manifest.json"
PACKAGES = "packages.list"
BUILD_LOG = "build.log"
INIT = "/sbin/testbed-init"
# Python modules of the recipe's rootfs/ (the agent's listener), byte-compiled in the image: a
# boot would otherwise compile them on its way to the agent's first answer (~0.08 s under TCG).
GUEST_PY_LIB = "/usr/local/lib/testbed"

# Host tool → the Debian package that provides it, for the error message.
TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "ssh-keygen": "openssh-client",
    "chroot": "coreutils",
}
# Deadlines per step (seconds): a stalled mirror must not hang a CI job forever.
TIMEOUTS = {"bootstrap": 1800, "keygen": 60, "compile": 300, "mke2fs": 600, "convert": 600}
LOCK_WAIT = 3600


def base_name(fmt: str) -> str:
    return f"base.{fmt}"


def image_dir(key: str) -> Path:
    return cache_dir("image") / short(key)


def _image_in(directory: Path, recipe: Recipe, key: str) -> GuestImage:
    return GuestImage(
        base=directory / base_name(recipe.format),
        format=recipe.format,
        ssh_key=directory / SSH_KEY,
        key=key,
    )


def cached_image(recipe: Recipe | None = None) -> GuestImage | None:
    """The image for the current recipe if it is built and complete, else None."""
    recipe = recipe or load_recipe(GUEST_IMAGES_DIR)
    key = recipe_key(recipe)
    image = _image_in(image_dir(key), recipe, key)
    if image.base.is_file() and image.ssh_key.is_file():
        return image
    return None


def ensure_image(progress: Progress = print) -> GuestImage:
    """The guest image for guest-images/, building it first if the cache lacks it."""
    recipe = load_recipe(GUEST_IMAGES_DIR)
    return ensure_image_for(recipe, progress)


def ensure_image_for(recipe: Recipe, progress: Progress = print) -> GuestImage:
    key = recipe_key(recipe)
    image = cached_image(recipe)
    if image is not None:
        mark_used(image_dir(key))
        return image
    check_host()
    mirror = debian_mirror()
    cache = cache_dir("image")
    with _locked(cache / f"{short(key)}.lock", progress):
        image = cached_image(recipe)  # another process may have built it while we waited
        if image is not None:
            return image
        _remove_stale(cache, key)
        return _build(recipe, key, mirror, cache, progress)


def check_host() -> None:
    missing = [f"{tool} (package {pkg})" for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    if missing:
        raise ConfigError(f"building the guest image needs: {', '.join(missing)}")
    if os.geteuid() != 0:
        # Root mode gives the tree real root ownership, which `mke2fs -d` copies verbatim.
        raise ConfigError(
            "building the guest image needs root (mmdebstrap root mode); "
            "run `sudo testbed image build` once, or build as root in CI"
        )


@contextmanager
def _locked(path: Path, progress: Progress) -> Iterator[None]:
    with open(path, "a") as handle:
        deadline = time.monotonic() + LOCK_WAIT
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    progress(f"image: waiting for another build of this image ({path})")
                    told = True
                if time.monotonic() > deadline:
                    raise InfraError(f"{path}: still locked after {LOCK_WAIT} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_tree(path: Path) -> None:
    """rm -r, refusing if anything is still mounted below (a crashed bootstrap's /proc)."""
    mounts = rootfs.mounts_under(path, Path("/proc/self/mountinfo").read_text())
    if mounts:
        raise InfraError(f"{path}: still mounted: {', '.join(mounts)}; unmount, then retry")
    shutil.rmtree(path, ignore_errors=True)


def _remove_stale(cache: Path, key: str) -> None:
    # We hold the key's lock, so its temp dirs and incomplete entry are leftovers.
    for stale in cache.glob(f".build-{short(key)}-*"):
        _remove_tree(stale)
    entry = image_dir(key)
    if entry.exists():
        _remove_tree(entry)


def _run(argv: list[str], step: str, log: TextIO, log_path: Path) -> None:
    """Run one step with output to the build log; on deadline, stop its whole process group."""
    log.write(f"\n$ {shlex.join(argv)}\n")
    log.flush()
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise InfraError(f"{step}: cannot run {argv[0]}: {exc}; build log: {log_path}") from None
    try:
        code = proc.wait(timeout=TIMEOUTS[step])
    except BaseException:
        # Timeout or Ctrl-C: TERM first, so mmdebstrap unmounts what it mounted in the tree.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=Timeouts().host_tool)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.write(f"\n[{step}: stopped]\n")
        raise
    if code != 0:
        raise InfraError(f"{step} failed (exit {code}); build log: {log_path}")


def _customize(root: Path, recipe: Recipe, work: Path, out: Path, run: Callable[[list[str], str], None]) -> None:
    rootfs.install_tree(recipe.rootfs, root)
    rootfs.install_symlink(root, "/etc/mtab", "../proc/self/mounts")
    if rootfs.inside(root, GUEST_PY_LIB).is_dir():  # the guest's python3 in its tree, as mmdebstrap ran its scripts
        run(compile_argv(root, GUEST_PY_LIB), "compile")
    # Host keys: one ed25519 key made here, so sshd starts at once and the harness can pin it.
    rootfs.remove_matching(root, "/etc/ssh", "ssh_host_*")
    run(ssh_keygen_argv(work / HOST_KEY, "testbed-guest-host"), "keygen")
    rootfs.install_file(root, f"/etc/ssh/{HOST_KEY}", (work / HOST_KEY).read_bytes(), 0o600)
    host_pub = (work / f"{HOST_KEY}.pub").read_bytes()
    rootfs.install_file(root, f"/etc/ssh/{HOST_KEY}.pub", host_pub, 0o644)
    (out / f"{HOST_KEY}.pub").write_bytes(host_pub)
    # Root's login key: private half stays in the cache beside the image.
    run(ssh_keygen_argv(out / SSH_KEY, "testbed-root"), "keygen")
    (out / SSH_KEY).chmod(0o600)
    rootfs.make_dir(root, "/root/.ssh", 0o700)
    rootfs.install_file(root, "/root/.ssh/authorized_keys", (out / f"{SSH_KEY}.pub").read_bytes(), 0o600)
    for path in (INIT, "/usr/sbin/sshd", "/usr/bin/python3"):
        found = rootfs.inside(root, path)
        if not (found.is_file() and os.access(found, os.X_OK)):
            raise InfraError(f"{path} missing or not executable in the bootstrapped tree")
    status = rootfs.inside(root, "/var/lib/dpkg/status").read_text()
    (out / PACKAGES).write_text("\n".join(rootfs.installed_packages(status)) + "\n")


def _build(recipe: Recipe, key: str, mirror: str, cache: Path, progress: Progress) -> GuestImage:
    started = time.monotonic()
    tag = short(key)
    log_path = cache / f"{tag}.{BUILD_LOG}"
    work = Path(tempfile.mkdtemp(prefix=f".build-{tag}-", dir=cache))
    out = work / "out"  # becomes the cache entry
    out.mkdir()
    root = work / "rootfs"
    raw = work / "image.raw"
    progress(f"image: building {tag} ({recipe.suite}, {len(recipe.packages)} packages)")
    ok = False
    try:
        with open(log_path, "w") as log:

            def run(argv: list[str], step: str) -> None:
                _run(argv, step, log, log_path)

            def stage(n: int, text: str) -> None:
                progress(f"image: [{n}/5] {text} ({time.monotonic() - started:.0f} s)")
                log.write(f"\n=== [{n}/5] {text}\n")
                log.flush()

            stage(1, f"mmdebstrap {recipe.suite} {recipe.variant} from {mirror}")
            run(mmdebstrap_argv(recipe, mirror, root), "bootstrap")
            stage(2, "installing rootfs/, init, sshd config and SSH keys")
            _customize(root, recipe, work, out, run)
            stage(3, f"mke2fs -d: {recipe.size} ext4")
            run(mke2fs_argv(root, raw, recipe.size), "mke2fs")
            _remove_tree(root)
            base = out / base_name(recipe.format)
            if recipe.format == "qcow2":
                stage(4, "converting to qcow2")
                run(convert_argv(raw, base), "convert")
                raw.unlink()
            else:
                stage(4, "keeping raw")
                raw.rename(base)
            base.chmod(0o444)  # overlays only; nothing may write the base
            seconds = time.monotonic() - started
            manifest = {
                "key": key,
                "suite": recipe.suite,
                "variant": recipe.variant,
                "architecture": recipe.architecture,
                "format": recipe.format,
                "size": recipe.size,
                "packages": list(recipe.packages),
                "build_seconds": round(seconds, 1),
                "disk_bytes": base.stat().st_blocks * 512,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            stage(5, "moving into the cache")
        log_path.rename(out / BUILD_LOG)
        final = image_dir(key)
        os.rename(out, final)  # atomic on one filesystem: the entry appears complete or not
        ok = True
    except OSError as exc:
        raise InfraError(f"image build: {exc}; build log: {log_path}") from None
    finally:
        if not ok:
            progress(f"image: build failed; build log: {log_path}")
        try:
            _remove_tree(work)
        except InfraError as exc:
            progress(f"image: leaving {work}: {exc}")
    image = _image_in(final, recipe, key)
    mib = image.base.stat().st_blocks * 512 / 2**20
    progress(f"image: built {image.base} ({mib:.0f} MiB) in {time.monotonic() - started:.0f} s")
    return image
