"""Kernel builds: a source tree (Debian's linux-source or the user's), an optional patch
series and a config set in, a cached bzImage out. `ensure_kernel` is the entry point."""

from __future__ import annotations

from .artifact import KernelArtifact
from .build import ensure_kernel, find_cached, refresh_debian_source
from .configsets import CONFIG_SETS
from .make import KernelBuildError

__all__ = ["CONFIG_SETS", "KernelArtifact", "KernelBuildError", "ensure_kernel", "find_cached", "refresh_debian_source"]
