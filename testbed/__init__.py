"""p2p-testbed: emulated PCIe peer-to-peer DMA topologies for kernel developers."""

__version__ = "0.1.0"
