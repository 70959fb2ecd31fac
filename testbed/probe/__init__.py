"""The kernel-side probe: a test module (kmod/) built against the kernel under test, loaded in
the guest, reporting the kernel's own P2PDMA decisions in KTAP."""

from .build import ProbeModule, ensure_probe, kernel_tree_of

__all__ = ["ProbeModule", "ensure_probe", "kernel_tree_of"]
