"""Deterministic test data from a seed, identical on host and guest (stdlib only)."""

import hashlib

POISON = 0xA5


def pattern(seed: int, size: int) -> bytes:
    """`size` bytes that depend on `seed` only: a fresh seed per transfer defeats stale data."""
    return hashlib.shake_256(b"testbed-pattern:%d" % seed).digest(size)


def poison(size: int) -> bytes:
    return bytes([POISON]) * size


def first_mismatch(got: bytes, want: bytes) -> int:
    """Offset of the first differing byte, or -1 when equal."""
    if got == want:
        return -1
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return i
    return min(len(got), len(want))
