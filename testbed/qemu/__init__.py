"""The testbed's own QEMU: Debian's pinned source, the testbed's patches, a content-keyed build."""

from .build import QemuBuild, ensure_qemu, testbed_series, user_series
from .source import QEMU_SERIES, QemuSource

__all__ = ["QEMU_SERIES", "QemuBuild", "QemuSource", "ensure_qemu", "testbed_series", "user_series"]
