"""Moved to testbed.guestvm; this name stays until tests/vm import from there."""

from ..guestvm import Background, GuestVM, start_background

__all__ = ["Background", "GuestVM", "start_background"]
