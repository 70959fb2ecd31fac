"""The host's QEMU as probed, never assumed: where it is, its version and the devices it has.

Runs differ by QEMU (7.2 on Debian bookworm, 8.2 on GitHub's Ubuntu 24.04 runners, whatever a
user's distribution ships): what a topology needs is checked against `-device help` of the
binary that will run it, so a missing model is a clear error naming the device before a boot,
and every result records the version it ran on (fingerprint, run.json, JUnit, KCIDB).
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigError
from ..timeouts import Timeouts

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
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


def qemu_version(binary: str = QEMU) -> str:
    """The first line of `--version`, for records; "" when there is no such binary."""
    try:
        return probe(binary).banner
    except ConfigError:
        return ""


@functools.cache
def probe(binary: str = QEMU) -> QemuBinary:
    """The binary on PATH (or a path), probed once per process."""
    path = shutil.which(binary)
    if path is None:
        raise ConfigError(f"{binary} not found (`make deps` installs Debian's qemu-system-x86)")
    banner = _run(path, "--version").splitlines()[0].strip()
    found = QemuBinary(path, banner, parse_version(banner), parse_devices(_run(path, "-device", "help")))
    log.debug("QEMU: %s", found.describe())
    return found
