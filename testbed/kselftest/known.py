"""Known failures of the tree's own tests on the unpatched base kernel, declared narrowly.

An entry in known-failures.yaml names the test (a glob over `<program>:<case>`, e.g.
`vfio/vfio_pci_device_test:vfio_pci_device_test.reset` or `kunit:dma-buf-fence.test_wait`), the
device kind it ran against when that matters, the kernel releases it applies to, a regex that
must match the failing case's own output (so the same case failing another way is a new
failure), and why. A matching failure is reported as an expected failure with the entry and
listed at the end of the run; a case that fails any other way is red.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from ..located import Problem, ProblemsError, load_entry_list
from ..paths import KNOWN_FAILURES_FILE

FIELDS = {"test", "device", "kernel", "output", "why"}
REQUIRED = FIELDS - {"device"}


class KnownFailuresError(ProblemsError):
    what = "the known-failures file"


@dataclass(frozen=True)
class KnownFailure:
    test: str  # glob over "<program id>:<case>"
    device: str | None  # endpoint kind (nvme, ivshmem, edu) or None for any
    kernel: re.Pattern[str]  # matched at the start of the guest's release
    output: re.Pattern[str]  # searched in the failing case's output
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
    doc, entries, problems = load_entry_list(
        path, KnownFailuresError, "known: [{test, device, kernel, output, why}, ...]"
    )
    out = []
    for i, entry in enumerate(entries):
        at = ("known", i)

        def problem(key: tuple, message: str, allowed: str = "", at: tuple = at) -> None:
            problems.append(Problem(path, doc.line(at + key), ".".join(map(str, at + key)), message, allowed))

        if not isinstance(entry, dict):
            problem((), "must be a mapping", ", ".join(sorted(FIELDS)))
            continue
        before = len(problems)
        for key in sorted(set(entry) - FIELDS):
            problem((key,), "unknown key", ", ".join(sorted(FIELDS)))
        for key in sorted(REQUIRED - set(entry)):
            problem((), f"missing '{key}'")
        patterns = {}
        for key in ("kernel", "output"):
            try:
                patterns[key] = re.compile(str(entry.get(key, "")))
            except re.error as exc:
                problem((key,), f"not a valid regex: {exc}")
        if "output" in entry and not str(entry["output"]).strip():
            problem(("output",), "must match the failure's own output", "a regex, e.g. 'libvfio.c:\\d+'")
        if "why" in entry and not str(entry["why"]).strip():
            problem(("why",), "must say why the case fails on the base kernel")
        if len(problems) > before:
            continue
        out.append(
            KnownFailure(
                str(entry["test"]),
                entry.get("device"),
                patterns["kernel"],
                patterns["output"],
                " ".join(str(entry["why"]).split()),
                f"{path.name}:{doc.line(at)}",
            )
        )
    if problems:
        raise KnownFailuresError(problems)
    return tuple(out)
