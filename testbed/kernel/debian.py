"""Debian's linux-source package, fetched with a private apt configuration.

Nothing is installed system-wide: apt gets its own sources list, lists, cache and an empty
dpkg status, all under the cache; `apt-get download` only fetches the .deb. The mirror comes
from the host's own apt configuration so the testbed uses whatever mirror the machine trusts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..debian_mirror import debian_mirror  # shared with the image build: one discovery
from ..errors import InfraError
from ..hashing import file_sha256

PACKAGE = "linux-source-7.2"
TARBALL = f"usr/src/{PACKAGE}.tar.xz"
DEFAULT_SUITES = ("sid", "trixie-backports")  # 7.2 is in both
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@dataclass(frozen=True)
class DebianSource:
    """An extracted linux-source package: what it is and where its tree lives."""

    package: str
    version: str
    sha256: str  # of the .deb
    tree: Path

    @property
    def identity(self) -> str:
        return f"debian:{self.package}={self.version}:sha256={self.sha256}"


# --- which mirror and suites -----------------------------------------------------------------


def debian_suites(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """TESTBED_DEBIAN_SUITES (space separated), else sid and trixie-backports."""
    override = env.get("TESTBED_DEBIAN_SUITES", "").split()
    return tuple(override) or DEFAULT_SUITES


def sources_list(mirror: str, suites: tuple[str, ...], keyring: Path = KEYRING, kind: str = "deb") -> str:
    """deb lines (binary packages) or deb-src lines (source packages, for the testbed's QEMU)."""
    return "".join(f"{kind} [signed-by={keyring}] {mirror} {suite} main\n" for suite in suites)


# --- private apt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivateApt:
    """An apt configuration rooted in `root`; nothing of the host's state is read or written."""

    root: Path

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": r / "sources.list.d",  # empty: ignore the host's
            "Dir::Etc::Preferences": r / "preferences",
            "Dir::Etc::PreferencesParts": r / "preferences.d",
            "Dir::State": r / "state",
            "Dir::State::Lists": r / "state" / "lists",
            "Dir::State::status": "/dev/null",  # nothing is "installed": no dpkg database
            "Dir::Cache": r / "cache",
            "Dir::Cache::archives": r / "cache" / "archives",
            "Acquire::Languages": "none",
            # as root apt drops to _apt for downloads, which cannot write into our cache
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
            "Debug::NoLocking": "true",  # our own dirs; a file lock guards them instead
        }
        argv: list[str] = []
        for key, value in opts.items():
            if value != "":
                argv += ["-o", f"{key}={value}"]
        return argv

    def prepare(self, mirror: str, suites: tuple[str, ...], kind: str = "deb") -> None:
        for sub in ("sources.list.d", "preferences.d", "state/lists/partial", "cache/archives/partial", "download"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "sources.list").write_text(sources_list(mirror, suites, kind=kind))
        (self.root / "preferences").write_text("")

    def run(self, args: list[str], cwd: Path | None = None) -> str:
        argv = ["apt-get", *self.options(), *args]
        try:
            proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
        except FileNotFoundError as exc:
            raise InfraError("apt-get not found: fetching Debian's kernel source needs apt") from exc
        if proc.returncode != 0:
            raise InfraError(
                f"apt-get {' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr).strip()[-3000:]}"
            )
        return proc.stdout

    def cache_show(self, package: str) -> dict[str, str]:
        """The candidate's Version and SHA256 from the fetched indexes."""
        argv = ["apt-cache", *self.options(), "show", "--no-all-versions", package]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise InfraError(
                f"{package} not found in the configured suites: {(proc.stdout + proc.stderr).strip()[-2000:]}"
            )
        return parse_control(proc.stdout)


def parse_control(text: str) -> dict[str, str]:
    """The first stanza of Debian control data as {Field: value}."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0].isspace():
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


# --- fetch and extract -------------------------------------------------------------------------


def _state_file(root: Path) -> Path:
    return root / f"{PACKAGE}.json"


def pinned_source(root: Path) -> DebianSource | None:
    """The source fetched last time, if its tree is complete (no network needed)."""
    try:
        data = json.loads(_state_file(root).read_text())
        src = DebianSource(data["package"], data["version"], data["sha256"], Path(data["tree"]))
    except (OSError, ValueError, KeyError):
        return None
    complete = (src.tree / "Makefile").is_file() and (src.tree.parent / ".complete").exists()
    return src if complete else None


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-2000:]
        raise InfraError(f"{what} failed ({' '.join(argv)}):\n{output}")


def extract(deb: Path, dest: Path) -> Path:
    """Unpack the .deb's source tarball into dest; returns the kernel tree."""
    staging = dest.parent / f".{dest.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "deb").mkdir(parents=True)
    _run(["dpkg-deb", "--extract", str(deb), str(staging / "deb")], "unpacking the .deb")
    tarball = staging / "deb" / TARBALL
    if not tarball.is_file():
        raise InfraError(f"{deb} has no {TARBALL}")
    _run(["tar", "-xf", str(tarball), "-C", str(staging)], "extracting the kernel tarball")
    shutil.rmtree(staging / "deb")
    trees = [p for p in staging.iterdir() if (p / "Makefile").is_file()]
    if len(trees) != 1:
        raise InfraError(f"expected one kernel tree in {TARBALL}, found {len(trees)}")
    (staging / ".complete").touch()
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest / trees[0].name


def fetch(root: Path, progress: Callable[[str], None] = print) -> DebianSource:
    """Refresh the indexes, download the newest linux-source and extract it if it is new."""
    mirror, suites = debian_mirror(), debian_suites()
    apt = PrivateApt(root / "apt")
    apt.prepare(mirror, suites)
    progress(f"kernel: apt-get update ({mirror}, suites {' '.join(suites)})")
    apt.run(["update"])
    info = apt.cache_show(PACKAGE)
    version, sha = info.get("Version", ""), info.get("SHA256", "")
    pinned = pinned_source(root)
    if pinned and pinned.version == version and pinned.sha256 == sha:
        progress(f"kernel: {PACKAGE} {version} already extracted")
        return pinned
    download = apt.root / "download"
    for old in download.glob("*.deb"):
        old.unlink()
    progress(f"kernel: downloading {PACKAGE} {version}")
    apt.run(["download", f"{PACKAGE}={version}"], cwd=download)
    debs = sorted(download.glob(f"{PACKAGE}_*.deb"))
    if len(debs) != 1:
        raise InfraError(f"apt-get download left {len(debs)} .deb files in {download}")
    actual = file_sha256(debs[0])
    if sha and actual != sha:
        raise InfraError(f"{debs[0]} sha256 {actual} does not match the index's {sha}")
    progress(f"kernel: extracting {debs[0].name}")
    tree = extract(debs[0], root / "src" / f"{PACKAGE}_{version}")
    debs[0].unlink()  # the tree and the recorded sha256 are all we keep (~160 MB saved)
    source = DebianSource(PACKAGE, version, actual, tree)
    state = asdict(source) | {"tree": str(tree)}
    tmp = _state_file(root).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(_state_file(root))
    return source
