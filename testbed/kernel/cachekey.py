"""The kernel cache key: everything that can change the bzImage, and nothing else."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass

from ..errors import InfraError
from ..hashing import hash_bytes, short

# Bump when the build recipe changes what identical inputs produce.
RECIPE_VERSION = "2"


@dataclass(frozen=True)
class KeyInputs:
    source: str  # SourceTree.identity
    patches: str  # hash of the series, "" without one
    fragment: str  # the merged fragment as rendered for KCONFIG_ALLCONFIG
    compiler: str  # first line of `gcc --version`
    config_set: str
    base_fixes: str = ""  # hash of the base fixes this build may apply (basefixes.py), "" for none
    coverage: str = ""  # digest of the coverage scope's profiled files (coverage sets), "" for none

    def key(self) -> str:
        fields = asdict(self)
        for optional in ("base_fixes", "coverage"):
            if not fields[optional]:
                del fields[optional]  # a build without them keeps the key it always had
        parts = [RECIPE_VERSION.encode()]
        for name in sorted(fields):
            parts += [name.encode(), fields[name].encode()]
        return short(hash_bytes(*parts))


def compiler_version(cc: str = "gcc") -> str:
    try:
        proc = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise InfraError(
            f"cannot run '{cc} --version' ({exc}): building a kernel needs gcc (Debian: build-essential)"
        ) from exc
    return proc.stdout.splitlines()[0].strip() if proc.stdout else cc
