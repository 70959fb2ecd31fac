"""The host's QEMU as probed, never assumed: where it is, its version and the devices it has.

Runs differ by QEMU (7.2 on Debian bookworm, 8.2 on GitHub's Ubuntu 24.04 runners, whatever a
user's distribution ships): what a topology needs is checked against `-device help` of the
binary that will run it, so a missing model is a clear error naming the device before a boot,
and every result records the version it ran on (fingerprint, run.json, JUnit, KCIDB).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..timeouts import Timeouts

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
QEMU_ENV = "TESTBED_QEMU"  # distro | built | a path; `--qemu` sets it, so children and workers agree
CHOICES = ("distro", "built")
_VERSION = re.compile(r"version (\d+)\.(\d+)(?:\.(\d+))?")
_DEVICE = re.compile(r'^name "([^"]+)"', re.MULTILINE)


@dataclass(frozen=True)
class QemuBinary:
    path: str
    banner: str  # the first line of --version
    version: tuple[int, int, int]
    devices: frozenset[str]  # `-device help`: every device model this binary has

    def missing(self, drivers: Iterable[str]) -> list[str]:
        return sorted(set(drivers) - self.devices)

    def describe(self) -> str:
        return f"{self.path}: {self.banner} ({len(self.devices)} device models)"

    @functools.cached_property
    def features(self) -> QemuFeatures:
        """What this binary's switch downstream port can do, read from its properties."""
        props = device_properties(self.path, SWITCH_DOWNSTREAM) if SWITCH_DOWNSTREAM in self.devices else frozenset()
        return QemuFeatures(switch_acs="disable-acs" in props, peer_routing="peer-routing" in props)


SWITCH_DOWNSTREAM = "xio3130-downstream"


@dataclass(frozen=True)
class QemuFeatures:
    """Version-dependent behaviour the rendering and the oracle follow, probed from the binary."""

    switch_acs: bool = False  # xio3130-downstream can have an ACS capability (disable-acs=off)
    peer_routing: bool = False  # xio3130-downstream routes P2P inside its switch (peer-routing=on)

    def describe(self) -> str:
        acs = "switch ACS" if self.switch_acs else "no switch ACS"
        routing = "P2P routed inside switches" if self.peer_routing else "no P2P routing inside switches"
        return f"{acs}, {routing}"


_PROPERTY = re.compile(r"^\s+([A-Za-z0-9_.-]+)=<", re.MULTILINE)


def parse_properties(help_text: str) -> frozenset[str]:
    """Property names of `-device MODEL,help` (lines `  disable-acs=<bool>  - ... (default: true)`)."""
    return frozenset(_PROPERTY.findall(help_text))


@functools.cache
def device_properties(path: str, model: str) -> frozenset[str]:
    return parse_properties(_run(path, "-device", f"{model},help"))


def parse_version(banner: str) -> tuple[int, int, int]:
    m = _VERSION.search(banner)
    if m is None:
        raise ConfigError(f"cannot read a QEMU version from {banner!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def parse_devices(help_text: str) -> frozenset[str]:
    """The model names of `-device help` (lines `name "edu", bus PCI, desc "..."`)."""
    return frozenset(_DEVICE.findall(help_text))


def _run(path: str, *args: str) -> str:
    proc = subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=Timeouts().host_tool, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise ConfigError(f"{path} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    return proc.stdout


def qemu_choice(env: Mapping[str, str] = os.environ) -> str:
    """distro (the default: the host's package), built (the testbed's pinned build) or a path."""
    return env.get(QEMU_ENV, "").strip() or "distro"


def check_choice(choice: str) -> str:
    """A --qemu value, refused before anything starts when it names nothing usable."""
    if choice in CHOICES:
        return choice
    found = shutil.which(str(Path(choice).expanduser()))
    if found is None:
        raise ConfigError(f"--qemu {choice}: not 'distro', 'built' or an executable file")
    return str(Path(found).resolve())


def qemu_version(binary: str | None = None) -> str:
    """The first line of `--version`, for records (fingerprint, run.json, JUnit, KCIDB), with the
    testbed's build key and patches when it is the testbed's build; "" when there is no binary."""
    try:
        found = probe(binary)
    except ConfigError:
        return ""
    return found.banner + built_provenance(Path(found.path))


def built_provenance(path: Path) -> str:
    """` [testbed build KEY: patch, ...]` for a binary of the testbed's QEMU cache, else ""."""
    try:
        manifest = json.loads((path.parent / "manifest.json").read_text())
    except (OSError, ValueError):
        return ""
    if manifest.get("key") != path.parent.name:
        return ""
    names = ", ".join(str(p.get("name", "")).split(".patch")[0] for p in manifest.get("patches", []))
    return f" [testbed build {str(manifest['key'])[:16]}: {names or 'no patches'}]"


def selected_binary(choice: str, patches: Path | None = None) -> str:
    """The path of the chosen QEMU; `built` is the testbed's build (with `patches`, your QEMU
    patches after the testbed's), made if the cache lacks it."""
    if choice == "distro":
        return QEMU
    if choice == "built":
        from ..qemu import ensure_qemu, user_series  # imported here: only a built-QEMU run pays for it

        extra = user_series(patches) if patches else ()
        return str(ensure_qemu(extra, progress=lambda line: log.warning("%s", line)).binary)
    return check_choice(choice)


def choose(option: str | None, patches: Path | None = None) -> None:
    """--qemu (default: $TESTBED_QEMU, else distro) and --qemu-patches, checked and resolved once
    to a binary (`built` is built here if missing) and put in the environment, so every later
    probe, pytest worker and child agrees on it. pytest's controller and `testbed boot|run|accel`
    call it; a bad choice is a ConfigError before anything starts."""
    choice = check_choice(option or qemu_choice())
    if patches is not None and choice != "built":
        raise ConfigError("--qemu-patches applies to the testbed's QEMU: give --qemu built too")
    os.environ[QEMU_ENV] = selected_binary(choice, patches)


@functools.cache
def probe(binary: str | None = None) -> QemuBinary:
    """The chosen binary (TESTBED_QEMU; the host's on PATH by default), probed once per process."""
    binary = binary or selected_binary(qemu_choice())
    path = shutil.which(binary)
    if path is None:
        raise ConfigError(f"{binary} not found (`make deps` installs Debian's qemu-system-x86)")
    banner = _run(path, "--version").splitlines()[0].strip()
    found = QemuBinary(path, banner, parse_version(banner), parse_devices(_run(path, "-device", "help")))
    log.debug("QEMU: %s", found.describe())
    return found
