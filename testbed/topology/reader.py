"""Typed reads from located YAML data that record problems instead of raising on the first."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, TypeVar

from ..located import KeyPath, Located, format_path
from .problems import Problem
from .units import parse_int, parse_size

E = TypeVar("E", bound=Enum)
D = TypeVar("D")  # a choice's default: a member, or None for "not given"
_MISSING = object()


class Reader:
    def __init__(self, located: Located):
        self.located = located
        self.problems: list[Problem] = []

    # -- reporting -------------------------------------------------------------------------

    def problem(self, path: KeyPath, message: str, allowed: str = "") -> None:
        self.problems.append(Problem(self.located.file, self.located.line(path), format_path(path), message, allowed))

    def line(self, path: KeyPath) -> int:
        return self.located.line(path)

    # -- structure -------------------------------------------------------------------------

    def value(self, path: KeyPath) -> Any:
        node: Any = self.located.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return _MISSING
        return node

    def mapping(self, path: KeyPath, allowed: Iterable[str], required: Iterable[str] = ()) -> dict:
        """The mapping at path (empty if absent), reporting unknown and missing keys."""
        node = self.value(path)
        if node is _MISSING or node is None:
            node = {}
        if not isinstance(node, dict):
            self.problem(path, f"expected a mapping, got {_kind(node)}")
            return {}
        allowed = list(allowed)
        for key in node:
            if key not in allowed:
                self.problem(path + (key,), "unknown key", ", ".join(allowed))
        for key in required:
            if key not in node:
                self.problem(path, f"missing required key '{key}'")
        return node

    def sequence(self, path: KeyPath) -> list:
        node = self.value(path)
        if node is _MISSING or node is None:
            return []
        if not isinstance(node, list):
            self.problem(path, f"expected a list, got {_kind(node)}")
            return []
        return node

    # -- scalars ---------------------------------------------------------------------------

    def _scalar(self, path: KeyPath, default: Any, convert: Callable[[Any], Any], allowed: str) -> Any:
        raw = self.value(path)
        if raw is _MISSING:
            return default
        try:
            return convert(raw)
        except (ValueError, TypeError) as exc:
            self.problem(path, str(exc), allowed)
            return default

    def string(self, path: KeyPath, default: Any = None, allowed: str = "a string") -> Any:
        def convert(raw: Any) -> str:
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError(f"expected a non-empty string, got {_kind(raw)}")
            return raw

        return self._scalar(path, default, convert, allowed)

    def boolean(self, path: KeyPath, default: bool) -> bool:
        def convert(raw: Any) -> bool:
            if not isinstance(raw, bool):
                raise ValueError(f"expected true or false, got {raw!r}")
            return raw

        return self._scalar(path, default, convert, "true, false")

    def integer(self, path: KeyPath, default: Any = None, lo: int | None = None, hi: int | None = None) -> Any:
        allowed = _range_text(lo, hi)

        def convert(raw: Any) -> int:
            n = parse_int(raw)
            if (lo is not None and n < lo) or (hi is not None and n > hi):
                raise ValueError(f"{n} is out of range")
            return n

        return self._scalar(path, default, convert, allowed)

    def size(self, path: KeyPath, default: Any = None) -> Any:
        return self._scalar(path, default, parse_size, "bytes or a size such as 512K, 64M, 2G")

    def choice(self, path: KeyPath, enum: type[E], default: D) -> E | D:
        names = ", ".join(e.value for e in enum)

        def convert(raw: Any) -> E | D:
            try:
                return enum(str(raw))
            except ValueError:
                raise ValueError(f"unknown value {raw!r}") from None

        return self._scalar(path, default, convert, names)


def _kind(node: Any) -> str:
    if isinstance(node, dict):
        return "a mapping"
    if isinstance(node, list):
        return "a list"
    return f"{type(node).__name__} {node!r}"


def _range_text(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"an integer from {lo} to {hi}"
    if lo is not None:
        return f"an integer >= {lo}"
    return "an integer"
