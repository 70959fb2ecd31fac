"""Sizes and numbers as users write them in topology files ("64M", "2G", 4096, 0xfffffff)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def parse_size(value: object) -> int:
    """Bytes from an int or a string with a binary suffix (K, M, G, T; 'MiB'/'MB' alike).

    Raises ValueError with a message meant for the user.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match.group(1)) * _FACTORS[match.group(2).upper()]
    raise ValueError(f"{value!r} is not a size")


def parse_int(value: object) -> int:
    """An integer from an int or a decimal/hex/octal/binary string."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an integer")


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def format_size(n: int) -> str:
    for suffix, factor in (("G", GiB), ("M", MiB), ("K", KiB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)
