"""Declared uncovered code: the ranges of the scope no test executes, each with its reason.

coverage-uncovered.yaml at the repository root names a file, a function and, optionally, a
`match` that picks one range of it by its source text (so the declaration survives line shifts
from unrelated patches), with why no test executes it and what kind of reason that is. uncovered.md
quotes the declaration under the range it covers; only `not-yet` leaves a range listed as a gap
(a case is missing), the other kinds excuse it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..located import Located, Problem, ProblemsError, format_path, load_entry_list
from ..paths import COVERAGE_UNCOVERED_FILE
from .scope import IDENTIFIER

DECLARED_FILE = COVERAGE_UNCOVERED_FILE
FIELDS = ("file", "function", "match", "why", "kind")
REQUIRED = ("file", "function", "why", "kind")
KINDS = {
    "needs-hardware": "QEMU cannot model what reaches it",
    "dead-config": "dead under the testbed's kernel configs",
    "fault-injection-only": "an error path the kernel offers no fault injection for",
    "not-yet": "a test case is missing (listed, not excused)",
}
_USAGE = "uncovered: [{file, function, match (optional), why, kind}, ...]"


class DeclaredUncoveredError(ProblemsError):
    what = "the declared uncovered ranges"


@dataclass(frozen=True)
class Declared:
    file: str  # kernel-relative source path
    function: str
    match: str | None  # a substring of the range's source, or /regex/
    why: str
    kind: str  # one of KINDS
    where: str  # file:line of the entry

    @property
    def excuses(self) -> bool:
        return self.kind != "not-yet"

    def covers(self, file: str, function: str, source: Sequence[str]) -> bool:
        """Whether this declaration is about that range of `function` (its source lines given)."""
        if (file, function) != (self.file, self.function):
            return False
        if self.match is None:
            return True
        if len(self.match) > 2 and self.match.startswith("/") and self.match.endswith("/"):
            pattern = re.compile(self.match[1:-1])
            return any(pattern.search(line) for line in source)
        return any(self.match in line for line in source)


def find_declared(declared: Sequence[Declared], file: str, function: str, source: Sequence[str]) -> Declared | None:
    return next((d for d in declared if d.covers(file, function, source)), None)


def load_declared(path: Path = DECLARED_FILE) -> tuple[Declared, ...]:
    """The declarations, validated; every problem at once with file:line."""
    doc, entries, problems = load_entry_list(path, DeclaredUncoveredError, _USAGE, "uncovered")
    out = []
    for i, entry in enumerate(entries):
        declared = _entry(doc, ("uncovered", i), entry, problems)
        if declared is not None:
            out.append(declared)
    if problems:
        raise DeclaredUncoveredError(problems)
    return tuple(out)


def _entry(doc: Located, at: tuple[str | int, ...], entry: Any, problems: list[Problem]) -> Declared | None:
    def problem(key: tuple[str, ...], message: str, allowed: str = "") -> None:
        problems.append(Problem(doc.file, doc.line(at + key), format_path(at + key), message, allowed))

    if not isinstance(entry, dict):
        problem((), "must be a mapping", ", ".join(FIELDS))
        return None
    before = len(problems)
    for key in sorted(set(entry) - set(FIELDS)):
        problem((key,), "unknown key", ", ".join(FIELDS))
    for key in REQUIRED:
        if key not in entry:
            problem((), f"missing '{key}'")
    file = entry.get("file")
    if "file" in entry and not (isinstance(file, str) and _source_path(file)):
        problem(("file",), f"{file!r} is not a kernel-relative .c path", "e.g. drivers/pci/p2pdma.c")
    function = entry.get("function")
    if "function" in entry and not (isinstance(function, str) and IDENTIFIER.match(function)):
        problem(("function",), f"{function!r} is not a C function name")
    if "why" in entry and (not isinstance(entry["why"], str) or not entry["why"].strip()):
        problem(("why",), "must say why no test executes the range")
    if "kind" in entry and entry["kind"] not in KINDS:
        problem(("kind",), f"{entry['kind']!r} is not a kind", ", ".join(KINDS))
    match = entry.get("match")
    if match is not None and not _valid_match(match):
        problem(
            ("match",),
            f"{match!r} is not a substring or a /regex/ that compiles",
            "e.g. 'err_unmap_dma:', '/goto err_\\w+/'",
        )
    if len(problems) > before:
        return None
    why = " ".join(entry["why"].split())
    return Declared(entry["file"], entry["function"], match, why, entry["kind"], f"{doc.file.name}:{doc.line(at)}")


def _source_path(path: str) -> bool:
    pure = PurePosixPath(path)
    return path.endswith(".c") and not pure.is_absolute() and ".." not in pure.parts


def _valid_match(match: Any) -> bool:
    if not isinstance(match, str) or not match.strip():
        return False
    if len(match) > 2 and match.startswith("/") and match.endswith("/"):
        try:
            re.compile(match[1:-1])
        except re.error:
            return False
    return True
