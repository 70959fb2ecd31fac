"""A booted topology as tests and tools see it: the Machine plus the model, the in-guest agent,
per-test windows of the kernel log, and the VM's fingerprint. Above vm/ (the QEMU process),
below kselftest/ and the pytest plugin."""

from .guest import Background, GuestVM, start_background

__all__ = ["Background", "GuestVM", "start_background"]
