"""Known failures and known skips of the tree's own tests in this testbed, declared narrowly.

An entry in known-failures.yaml names the test (a glob over `<program>:<case>`, e.g.
`vfio/vfio_pci_device_test:vfio_pci_device_test.reset` or `kunit:dma-buf-fence.test_wait`), the
device kind it ran against when that matters, the kernel releases it applies to, a regex that
must match the failing case's own output (so the same case failing another way is a new
failure), and why. A matching failure is reported as an expected failure with the entry and
listed at the end of the run; a case that fails any other way is red.

known-skips.yaml declares the same way the cases that skip themselves here (what QEMU or the
guest cannot give them): a regex on the skip's own reason, and the kernel only when the skip
is a release's. An undeclared skip is listed as such, and under CI fails: a case that starts
skipping (a device not bound, a setup step broken) would otherwise pass unnoticed.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from ..located import Problem, ProblemsError, load_entry_list
from ..paths import KNOWN_FAILURES_FILE, KNOWN_SKIPS_FILE


class KnownFailuresError(ProblemsError):
    what = "the known-failures file"


class KnownSkipsError(ProblemsError):
    what = "the known-skips file"


@dataclass(frozen=True)
class _Kind:
    """What one of the two files holds: its text field, what that matches, what may be left out."""

    error: type[ProblemsError]
    text: str  # "output" (a failure's output) or "reason" (a skip's)
    text_example: str
    why_says: str
    optional: frozenset[str]

    @property
    def fields(self) -> set[str]:
        return {"test", "device", "kernel", self.text, "why"}


FAILURES = _Kind(
    KnownFailuresError,
    "output",
    "a regex on the failure's own output, e.g. 'libvfio.c:\\d+'",
    "why the case fails on the base kernel",
    frozenset({"device"}),
)
SKIPS = _Kind(
    KnownSkipsError,
    "reason",
    "a regex on the skip's reason, e.g. 'SR-IOV may not be supported'",
    "why the case skips itself here",
    frozenset({"device", "kernel"}),
)


@dataclass(frozen=True)
class KnownFailure:
    """An entry of either file (a known skip is matched the same way, on its reason)."""

    test: str  # glob over "<program id>:<case>"
    device: str | None  # endpoint kind (nvme, ivshmem, edu) or None for any
    kernel: re.Pattern[str]  # matched at the start of the guest's release
    output: re.Pattern[str]  # searched in the failing case's output (a skip: its reason)
    why: str
    where: str  # file:line

    def matches(self, test: str, device_kind: str | None, release: str | None, output: str) -> bool:
        return (
            fnmatch.fnmatchcase(test, self.test)
            and (self.device is None or self.device == device_kind)
            and release is not None
            and bool(self.kernel.match(release))
            and bool(self.output.search(output))
        )


def find_failure(
    known: tuple[KnownFailure, ...], test: str, device_kind: str | None, release: str | None, output: str
) -> KnownFailure | None:
    return next((k for k in known if k.matches(test, device_kind, release, output)), None)


def load_failures(path: Path = KNOWN_FAILURES_FILE) -> tuple[KnownFailure, ...]:
    return _load(path, FAILURES)


def load_skips(path: Path = KNOWN_SKIPS_FILE) -> tuple[KnownFailure, ...]:
    return _load(path, SKIPS)


def _load(path: Path, kind: _Kind) -> tuple[KnownFailure, ...]:
    fields = kind.fields
    required = fields - kind.optional
    doc, entries, problems = load_entry_list(path, kind.error, f"known: [{{{', '.join(sorted(fields))}}}, ...]")
    out = []
    for i, entry in enumerate(entries):
        at = ("known", i)

        def problem(key: tuple, message: str, allowed: str = "", at: tuple = at) -> None:
            problems.append(Problem(path, doc.line(at + key), ".".join(map(str, at + key)), message, allowed))

        if not isinstance(entry, dict):
            problem((), "must be a mapping", ", ".join(sorted(fields)))
            continue
        before = len(problems)
        for key in sorted(set(entry) - fields):
            problem((key,), "unknown key", ", ".join(sorted(fields)))
        for key in sorted(required - set(entry)):
            problem((), f"missing '{key}'")
        patterns = {}
        for key in ("kernel", kind.text):
            try:
                patterns[key] = re.compile(str(entry.get(key, "")))  # no kernel: any release
            except re.error as exc:
                problem((key,), f"not a valid regex: {exc}")
        if kind.text in entry and not str(entry[kind.text]).strip():
            problem((kind.text,), f"must match the case's own {kind.text}", kind.text_example)
        if "why" in entry and not str(entry["why"]).strip():
            problem(("why",), f"must say {kind.why_says}")
        if len(problems) > before:
            continue
        out.append(
            KnownFailure(
                str(entry["test"]),
                entry.get("device"),
                patterns["kernel"],
                patterns[kind.text],
                " ".join(str(entry["why"]).split()),
                f"{path.name}:{doc.line(at)}",
            )
        )
    if problems:
        raise kind.error(problems)
    return tuple(out)
