"""The built guest image, as the rest of the testbed sees it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GuestImage:
    base: Path  # base disk image, never written
    format: str  # "raw" | "qcow2"
    ssh_key: Path  # private key for root
    key: str  # cache key

    @property
    def directory(self) -> Path:
        return self.base.parent

    @property
    def host_key(self) -> Path:
        """The guest's ed25519 host public key, for a known_hosts line if wanted."""
        return self.directory / "ssh_host_ed25519_key.pub"
