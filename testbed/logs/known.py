"""Known splats: reports the unpatched base kernel already makes, declared with a reason.

A patched tree is judged against the kernel it is based on. A splat that the base kernel
prints on every NVMe removal would fail every hot-unplug test and hide the one the patch
introduced, so each such splat is declared once in `known-splats.yaml` (kind, title, the
stack functions that identify it, the kernel releases it applies to, why). A matching splat
does not fail the test; it is listed in the run's summary with its entry. `--strict-splats`
makes known splats fail like any other. Only exact signatures are declared: a different
title, a different stack or another kernel release is a new splat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..paths import KNOWN_SPLATS_FILE
from ..topology.problems import Problem, ProblemsError, load_entry_list
from ..topology.yamlpos import Located, format_path
from .splat import HEADERS, Splat

KINDS = tuple(dict.fromkeys(kind for kind, _ in HEADERS))
FIELDS = {"kind", "title", "stack", "kernel", "why"}
RELEASE_RE = re.compile(r"Linux version (\S+)")


class KnownSplatsError(ProblemsError):
    what = "the known-splats file"


@dataclass(frozen=True)
class KnownSplat:
    kind: str
    title: re.Pattern[str]  # searched in the splat's title
    stack: tuple[re.Pattern[str], ...]  # each must appear somewhere in the splat's text
    kernel: re.Pattern[str]  # matched at the start of the guest's kernel release
    why: str
    where: str  # file:line of the entry, for the report

    def matches(self, splat: Splat, release: str | None) -> bool:
        return (
            splat.kind == self.kind
            and release is not None
            and bool(self.kernel.match(release))
            and bool(self.title.search(splat.title))
            and all(p.search(splat.body) for p in self.stack)
        )


def kernel_release(console_lines: list[str]) -> str | None:
    """The release in the boot banner ("Linux version 7.2.13-testbed ..."), if it is there."""
    for line in console_lines[:200]:
        m = RELEASE_RE.search(line)
        if m:
            return m.group(1)
    return None


def find_known(splat: Splat, release: str | None, known: tuple[KnownSplat, ...]) -> KnownSplat | None:
    return next((k for k in known if k.matches(splat, release)), None)


def load_known(path: Path = KNOWN_SPLATS_FILE) -> tuple[KnownSplat, ...]:
    doc, entries = load_entry_list(path, KnownSplatsError, "known: [{kind, title, stack, kernel, why}, ...]")
    problems: list[Problem] = []
    out = []
    for i, entry in enumerate(entries):
        known = _entry(doc, ("known", i), entry, problems)
        if known is not None:
            out.append(known)
    if problems:
        raise KnownSplatsError(problems)
    return tuple(out)


def _entry(doc: Located, at: tuple, entry: object, problems: list[Problem]) -> KnownSplat | None:
    def problem(key: tuple, message: str, allowed: str = "") -> None:
        problems.append(Problem(doc.file, doc.line(at + key), format_path(at + key), message, allowed))

    if not isinstance(entry, dict):
        problem((), "must be a mapping", ", ".join(sorted(FIELDS)))
        return None
    before = len(problems)
    for key in sorted(set(entry) - FIELDS):
        problem((key,), "unknown key", ", ".join(sorted(FIELDS)))
    for key in sorted(FIELDS - set(entry) - {"stack"}):
        problem((), f"missing '{key}'")
    if "kind" in entry and entry["kind"] not in KINDS:
        problem(("kind",), f"unknown splat kind {entry['kind']!r}", ", ".join(KINDS))
    stack = entry.get("stack", [])
    if not isinstance(stack, list) or not all(isinstance(s, str) for s in stack):
        problem(("stack",), "must be a list of regexes", "e.g. [bdev_free_inode]")
        stack = []

    def regex(key: tuple, text: object) -> re.Pattern[str] | None:
        if not isinstance(text, str) or not text:
            problem(key, "must be a non-empty regex")
            return None
        try:
            return re.compile(text)
        except re.error as exc:
            problem(key, f"not a valid regex: {exc}")
            return None

    title = regex(("title",), entry.get("title")) if "title" in entry else None
    kernel = regex(("kernel",), entry.get("kernel")) if "kernel" in entry else None
    patterns = tuple(regex(("stack", j), s) for j, s in enumerate(stack))
    if "why" in entry and not (isinstance(entry["why"], str) and entry["why"].strip()):
        problem(("why",), "must say why the splat is known and not the patch's")
    if len(problems) > before or title is None or kernel is None or None in patterns:
        return None
    return KnownSplat(
        entry["kind"],
        title,
        tuple(p for p in patterns if p is not None),
        kernel,
        " ".join(entry["why"].split()),
        f"{doc.file.name}:{doc.line(at)}",
    )
