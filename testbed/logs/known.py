"""Known splats: reports the unpatched base kernel already makes, declared with a reason.

A patched tree is judged against the kernel it is based on. A splat that the base kernel
prints on every NVMe removal would fail every hot-unplug test and hide the one the patch
introduced, so each such splat is declared once in `known-splats.yaml`. A matching splat
does not fail the test; it is listed in the run's summary with its entry. `--strict-splats`
makes known splats fail like any other.

An entry pins the whole report, so that a patch making it worse is a new splat: its
signature (matched whole), for lockdep the exact chain of locks (no link more or less), the
top of its call trace frame by frame, and the kernel release.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..located import Located, Problem, ProblemsError, format_path, load_entry_list
from ..paths import KNOWN_SPLATS_FILE
from .kinds import SplatKind
from .signature import call_trace, lock_chain
from .splat import Splat, scan_lines

KINDS = tuple(kind.value for kind in SplatKind)
FIELDS = {"kind", "signature", "chain", "stack", "kernel", "why"}
OPTIONAL = {"chain", "stack"}
RELEASE_RE = re.compile(r"Linux version (\S+)")


class KnownSplatsError(ProblemsError):
    what = "the known-splats file"


@dataclass(frozen=True)
class KnownSplat:
    kind: str
    signature: re.Pattern[str]  # matches the splat's whole signature
    chain: tuple[re.Pattern[str], ...]  # lockdep: each link of the chain, in order, no extra
    stack: tuple[re.Pattern[str], ...]  # the first frames of the call trace, in order
    kernel: re.Pattern[str]  # matched at the start of the guest's kernel release
    why: str
    where: str  # file:line of the entry, for the report

    def matches(self, splat: Splat, release: str | None) -> bool:
        return (
            splat.kind == self.kind
            and release is not None
            and bool(self.kernel.match(release))
            and bool(self.signature.fullmatch(splat.signature))
            and _all_match(self.chain, lock_chain(splat.body), whole=True)
            and _all_match(self.stack, call_trace(splat.body), whole=False)
        )


def _all_match(patterns: tuple[re.Pattern[str], ...], items: tuple[str, ...], whole: bool) -> bool:
    """Each pattern matches its item in order; `whole`: and there are no more items."""
    if len(items) < len(patterns) or (whole and patterns and len(items) != len(patterns)):
        return False
    return all(p.fullmatch(item) for p, item in zip(patterns, items, strict=False))


def kernel_release(console_lines: list[str]) -> str | None:
    """The release in the boot banner ("Linux version 7.2.13-testbed ..."), if it is there."""
    for line in console_lines[:200]:
        m = RELEASE_RE.search(line)
        if m:
            return m.group(1)
    return None


def find_known(splat: Splat, release: str | None, known: tuple[KnownSplat, ...]) -> KnownSplat | None:
    return next((k for k in known if k.matches(splat, release)), None)


def console_splats(
    lines: list[str], known: tuple[KnownSplat, ...], parts: Iterable[tuple[int, int]] | None = None
) -> list[tuple[Splat, KnownSplat | None]]:
    """Every splat of a console log with the known-splats entry that covers it (None: none),
    judged by the kernel release of the log's own boot banner. `parts`: only these line ranges
    (first, last: 1-based, inclusive), line numbers still counted in the whole log."""
    release = kernel_release(lines)
    ranges = [(1, len(lines))] if parts is None else parts
    return [
        (s, find_known(s, release, known))
        for first, last in ranges
        for s in scan_lines(lines[first - 1 : last], first_line=first)
    ]


def load_known(path: Path = KNOWN_SPLATS_FILE) -> tuple[KnownSplat, ...]:
    doc, entries, problems = load_entry_list(
        path, KnownSplatsError, "known: [{kind, signature, chain, stack, kernel, why}, ...]"
    )
    out = []
    for i, entry in enumerate(entries):
        known = _entry(doc, ("known", i), entry, problems)
        if known is not None:
            out.append(known)
    if problems:
        raise KnownSplatsError(problems)
    return tuple(out)


def _check_pinned(entry: dict, problem: Callable[[tuple, str, str], None]) -> None:
    """An entry must pin the report, not just name it."""
    if entry.get("kind") == "lockdep" and "chain" not in entry:
        problem((), "a lockdep entry must pin its chain", "chain: [lock class regex, ...] as the report's -> #N lines")
    if "chain" not in entry and "stack" not in entry:
        problem((), "must pin the report with 'chain' or 'stack'", "stack: [first call-trace frame regex, ...]")


def _entry(doc: Located, at: tuple, entry: object, problems: list[Problem]) -> KnownSplat | None:
    def problem(key: tuple, message: str, allowed: str = "") -> None:
        problems.append(Problem(doc.file, doc.line(at + key), format_path(at + key), message, allowed))

    if not isinstance(entry, dict):
        problem((), "must be a mapping", ", ".join(sorted(FIELDS)))
        return None
    before = len(problems)
    for key in sorted(set(entry) - FIELDS):
        problem((key,), "unknown key", ", ".join(sorted(FIELDS)))
    for key in sorted(FIELDS - set(entry) - OPTIONAL):
        problem((), f"missing '{key}'")
    if "kind" in entry and entry["kind"] not in KINDS:
        problem(("kind",), f"unknown splat kind {entry['kind']!r}", ", ".join(KINDS))
    _check_pinned(entry, problem)

    def regex_list(key: str) -> list[str]:
        items = entry.get(key, [])
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            problem((key,), "must be a list of regexes", "e.g. [debug_check_no_obj_freed, kfree, bdev_free_inode]")
            return []
        return items

    def regex(key: tuple, text: object) -> re.Pattern[str] | None:
        if not isinstance(text, str) or not text:
            problem(key, "must be a non-empty regex")
            return None
        try:
            return re.compile(text)
        except re.error as exc:
            problem(key, f"not a valid regex: {exc}")
            return None

    signature = regex(("signature",), entry.get("signature")) if "signature" in entry else None
    kernel = regex(("kernel",), entry.get("kernel")) if "kernel" in entry else None
    chain = tuple(regex(("chain", j), s) for j, s in enumerate(regex_list("chain")))
    stack = tuple(regex(("stack", j), s) for j, s in enumerate(regex_list("stack")))
    if "why" in entry and not (isinstance(entry["why"], str) and entry["why"].strip()):
        problem(("why",), "must say why the splat is known and not the patch's")
    if len(problems) > before or signature is None or kernel is None:
        return None
    return KnownSplat(
        entry["kind"],
        signature,
        tuple(p for p in chain if p is not None),
        tuple(p for p in stack if p is not None),
        kernel,
        " ".join(entry["why"].split()),
        f"{doc.file.name}:{doc.line(at)}",
    )
