"""Guest disk image: built once per recipe (guest-images/), cached, one qcow2 overlay per VM."""

from __future__ import annotations

from .build import cached_image, ensure_image
from .model import GuestImage
from .overlay import make_overlay

__all__ = ["GuestImage", "cached_image", "ensure_image", "make_overlay"]
