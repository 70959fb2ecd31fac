"""Debian's `qemu` source package, fetched with a private apt configuration (deb-src lines) and
unpacked with Debian's own patches by dpkg-source: the pinned QEMU the testbed builds.

Pinned to one upstream series (QEMU_SERIES) of one suite (trixie, Debian's stable release, where
a version stays published for years): the newest Debian revision of that series is taken, so a
security update arrives as a new source identity and a new build, never as a surprise in an old
one. TESTBED_QEMU_SUITES overrides the suites (space separated).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..debian_mirror import debian_mirror
from ..errors import InfraError
from ..hashing import file_sha256
from ..kernel.debian import PrivateApt

log = logging.getLogger(__name__)

PACKAGE = "qemu"
QEMU_SERIES = "10.0"  # the series our patches (qemu/patches) apply to
DEFAULT_SUITES = ("trixie",)
_VERSION_LINE = re.compile(r"^Version: (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class QemuSource:
    """An unpacked qemu source package (Debian's patches applied): what it is, where it lives."""

    package: str
    version: str  # Debian's, e.g. 1:10.0.13+ds-0+deb13u1
    dsc_sha256: str  # of the .dsc, which names every file's SHA-256
    tree: Path

    @property
    def identity(self) -> str:
        return f"debian:{self.package}={self.version}:dsc-sha256={self.dsc_sha256}"

    @property
    def upstream(self) -> str:
        """QEMU's own version: 10.0.13 of 1:10.0.13+ds-0+deb13u1."""
        return upstream_version(self.version)


def upstream_version(debian_version: str) -> str:
    return debian_version.split(":", 1)[-1].split("+", 1)[0].split("-", 1)[0]


def qemu_suites(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    return tuple(env.get("TESTBED_QEMU_SUITES", "").split()) or DEFAULT_SUITES


def newest_in_series(versions: list[str], series: str = QEMU_SERIES) -> str | None:
    """The highest Debian version of the series (dpkg's ordering), or None."""
    candidates = [v for v in versions if upstream_version(v).startswith(series + ".")]
    best: str | None = None
    for v in candidates:
        if best is None or _dpkg_newer(v, best):
            best = v
    return best


def _dpkg_newer(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0


def _state_file(root: Path) -> Path:
    return root / "source.json"


def pinned_source(root: Path) -> QemuSource | None:
    """The source unpacked last time, when its tree is complete (no network needed)."""
    try:
        data = json.loads(_state_file(root).read_text())
        src = QemuSource(data["package"], data["version"], data["dsc_sha256"], Path(data["tree"]))
    except (OSError, ValueError, KeyError):
        return None
    return src if (src.tree / "configure").is_file() and (src.tree / ".testbed-complete").exists() else None


def fetch(root: Path, progress: Callable[[str], None] = print) -> QemuSource:
    """Refresh the source indexes, download the pinned series' newest source package and unpack
    it (Debian's patches applied) if it is not the one unpacked already."""
    mirror, suites = debian_mirror(), qemu_suites()
    apt = PrivateApt(root / "apt")
    apt.prepare(mirror, suites, kind="deb-src")
    progress(f"qemu: apt-get update (source indexes of {' '.join(suites)})")
    apt.run(["update"])
    shown = subprocess.run(["apt-cache", *apt.options(), "showsrc", PACKAGE], capture_output=True, text=True)
    version = newest_in_series(_VERSION_LINE.findall(shown.stdout))
    if version is None:
        raise InfraError(
            f"no {PACKAGE} source of QEMU {QEMU_SERIES}.x in {' '.join(suites)} at {mirror}: "
            "the testbed's QEMU patches are written for that series (TESTBED_QEMU_SUITES picks suites)"
        )
    pinned = pinned_source(root)
    if pinned and pinned.version == version:
        progress(f"qemu: source {version} already unpacked")
        return pinned
    download = apt.root / "download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    progress(f"qemu: downloading source {PACKAGE} {version}")
    # apt checks every file against the hashes of the signed Sources index it fetched
    apt.run(["source", "--download-only", f"{PACKAGE}={version}"], cwd=download)
    (dsc,) = download.glob("*.dsc") or (None,)
    if dsc is None:
        raise InfraError(f"apt-get source left no .dsc in {download}")
    dest = root / "src" / f"{PACKAGE}_{upstream_version(version)}_{file_sha256(dsc)[:12]}"
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    progress(f"qemu: unpacking {dsc.name} with Debian's patches")
    # --no-check: the .dsc's own signature needs debian-keyring; apt verified the files already
    proc = subprocess.run(
        ["dpkg-source", "--no-check", "-x", str(dsc), str(staging)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise InfraError(f"dpkg-source -x {dsc.name} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    (staging / ".testbed-complete").touch()
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    source = QemuSource(PACKAGE, version, file_sha256(dsc), dest)
    shutil.rmtree(download, ignore_errors=True)  # ~40 MB of tarballs: the tree is what we keep
    state = asdict(source) | {"tree": str(dest)}
    tmp = _state_file(root).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(_state_file(root))
    log.info("qemu source %s unpacked at %s", version, dest)
    return source
