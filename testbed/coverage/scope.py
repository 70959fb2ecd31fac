"""The coverage scope: which kernel files (and which of their functions) a coverage build profiles
and the reports count.

coverage-scope.yaml at the repository root lists the files of the P2PDMA, VFIO dma-buf, dma-buf
revoke and two-step DMA API series, each with why it is in scope and, for files the series only
touch in part, the functions that count. `--coverage-scope FILE` replaces it. Only the file list
changes the kernel build (`GCOV_PROFILE_<obj>.o := y` per file), so only the file list goes into
the kernel cache key (`Scope.digest`); the function lists only narrow the reports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..hashing import hash_bytes
from ..located import Located, Problem, ProblemsError, format_path, load_entry_list
from ..paths import COVERAGE_SCOPE_FILE

DEFAULT_SCOPE = COVERAGE_SCOPE_FILE
FIELDS = ("path", "why", "functions")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_USAGE = "files: [{path: drivers/pci/p2pdma.c, why: ..., functions: [name, ...] (optional)}, ...]"


class CoverageScopeError(ProblemsError):
    what = "the coverage scope"


@dataclass(frozen=True)
class ScopeEntry:
    path: str  # kernel-relative, e.g. drivers/pci/p2pdma.c
    why: str
    functions: tuple[str, ...] | None  # None: every function of the file
    where: str  # file:line of the entry

    def covers(self, function: str) -> bool:
        return self.functions is None or source_name(function) in self.functions


@dataclass(frozen=True)
class Scope:
    file: Path
    entries: tuple[ScopeEntry, ...]

    def paths(self) -> tuple[str, ...]:
        return tuple(entry.path for entry in self.entries)

    def entry(self, path: str) -> ScopeEntry | None:
        return next((entry for entry in self.entries if entry.path == path), None)

    def in_scope(self, path: str, function: str | None = None) -> bool:
        """Whether `path` is profiled and, given a function, whether that function counts."""
        entry = self.entry(path)
        return entry is not None and (function is None or entry.covers(function))

    def digest(self) -> str:
        # the build profiles files, not functions: a new function list must not rebuild the kernel
        return hash_bytes(*(path.encode() for path in sorted(self.paths())))


def source_name(function: str) -> str:
    """A function's name in the source: without the suffix of a compiler clone (`foo.part.0`)."""
    return function.split(".", 1)[0]


def profile_lines(scope: Scope) -> dict[str, list[str]]:
    """Per kbuild directory (`drivers/pci`), the Makefile lines that profile its scope files."""
    out: dict[str, list[str]] = {}
    for path in sorted(scope.paths()):
        pure = PurePosixPath(path)
        out.setdefault(str(pure.parent), []).append(f"GCOV_PROFILE_{pure.stem}.o := y")
    return out


def load_scope(path: Path = DEFAULT_SCOPE) -> Scope:
    """The scope file, validated; a CoverageScopeError lists every problem with file:line."""
    doc, files, problems = load_entry_list(path, CoverageScopeError, _USAGE, "files", non_empty=True)
    entries: list[ScopeEntry] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(files):
        entry = _entry(doc, ("files", i), raw, problems)
        if entry is None:
            continue
        if entry.path in seen:
            at = ("files", i, "path")
            problems.append(
                Problem(
                    path,
                    doc.line(at),
                    format_path(at),
                    f"{entry.path} is listed twice (first at line {seen[entry.path]})",
                    "one entry per file",
                )
            )
            continue
        seen[entry.path] = doc.line(("files", i))
        entries.append(entry)
    if problems:
        raise CoverageScopeError(problems)
    return Scope(path, tuple(entries))


def _entry(doc: Located, at: tuple[str | int, ...], raw: Any, problems: list[Problem]) -> ScopeEntry | None:
    def problem(key: tuple[str | int, ...], message: str, allowed: str = "") -> None:
        problems.append(Problem(doc.file, doc.line(at + key), format_path(at + key), message, allowed))

    if not isinstance(raw, dict):
        problem((), "must be a mapping", ", ".join(FIELDS))
        return None
    before = len(problems)
    for key in sorted(set(raw) - set(FIELDS)):
        problem((key,), "unknown key", ", ".join(FIELDS))
    for key in ("path", "why"):
        if key not in raw:
            problem((), f"missing '{key}'")
    if "path" in raw:
        _check_path(raw["path"], lambda message, allowed: problem(("path",), message, allowed))
    if "why" in raw and (not isinstance(raw["why"], str) or not raw["why"].strip()):
        problem(("why",), "must say why the file is in scope", "a sentence or two a kernel developer agrees with")
    functions = raw.get("functions")
    if "functions" in raw:
        if not isinstance(functions, list) or not functions:
            problem(("functions",), "must be a non-empty list of C function names", "leave it out for the whole file")
        else:
            for j, name in enumerate(functions):
                if not isinstance(name, str) or not IDENTIFIER.match(name):
                    problem(("functions", j), f"{name!r} is not a C identifier", "names like dma_buf_dynamic_attach")
                elif functions.index(name) != j:
                    problem(("functions", j), f"{name} is listed twice")
    if len(problems) > before:
        return None
    return ScopeEntry(
        raw["path"],
        " ".join(raw["why"].split()),
        tuple(functions) if functions is not None else None,
        f"{doc.file.name}:{doc.line(at)}",
    )


def _check_path(value: Any, problem: Callable[[str, str], None]) -> None:
    allowed = "a kernel-relative path of a C file, e.g. drivers/pci/p2pdma.c"
    if not isinstance(value, str) or not value:
        problem("must be a path", allowed)
    elif value.startswith("/"):
        problem(f"{value} is absolute", allowed)
    elif ".." in PurePosixPath(value).parts:
        problem(f"{value} leaves the kernel tree ('..')", allowed)
    elif str(PurePosixPath(value)) != value or "\\" in value:
        problem(f"{value} is not in normal form (write {PurePosixPath(value)})", allowed)
    elif not value.endswith(".c"):
        problem(
            f"{value} is not a .c file (gcov profiles objects; headers count in the .c files that use them)", allowed
        )
