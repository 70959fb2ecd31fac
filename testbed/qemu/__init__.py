"""The testbed's own QEMU: Debian's pinned source, the testbed's patches, a content-keyed build."""

from .build import QemuBuild, QemuPatch, ensure_qemu, read_series, testbed_series
from .source import QEMU_SERIES, QemuSource

__all__ = ["QEMU_SERIES", "QemuBuild", "QemuPatch", "QemuSource", "ensure_qemu", "read_series", "testbed_series"]
