"""Kernel bugs a case found, each with its candidate upstream fix (upstream-fixes/*.patch).

A case that finds a bug in the base kernel stays as strict as it was and is marked an expected
failure where the bug is: on a base release the fix is written against, built without that fix.
Built with the fix (`--patches upstream-fixes/NNNN-....patch`, or a series that carries it) it
must pass. On a kernel with someone else's series the bug may or may not be fixed, so the mark
is not strict there: an unexpected pass is reported, never red.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..errors import ConfigError
from ..paths import UPSTREAM_FIXES_DIR

SUBJECT_RE = re.compile(r"^Subject: (?:\[PATCH[^\]]*\] )?(?P<subject>.+(?:\n [^\n]+)*)", re.MULTILINE)


@dataclass(frozen=True)
class KernelBug:
    fix: str  # file name under upstream-fixes/
    release: str  # regex matched at the start of the kernel release the bug is known on
    why: str  # the wrong result, in a sentence
    # the kernel report the bug leaves when it shows, (signature, regex on its text): tolerated
    # where the bug is expected, required where it certainly is (the base kernel)
    splat: tuple[str, str] | None = None

    @property
    def path(self) -> Path:
        return UPSTREAM_FIXES_DIR / self.fix

    @property
    def subject(self) -> str:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise ConfigError(f"{self.path}: the candidate fix of a known kernel bug is missing ({exc})") from exc
        found = SUBJECT_RE.search(text)
        if found is None:
            raise ConfigError(f"{self.path}: not a git format-patch file (no Subject: line)")
        return " ".join(found["subject"].split())


@dataclass(frozen=True)
class Expectation:
    xfail: bool
    strict: bool
    reason: str


def expectation(bug: KernelBug, release: str, patches: list[str] | None) -> Expectation:
    """What a case that found `bug` should do on a kernel of `release` built with `patches`
    (the kernel manifest's names: a patch file's name, or "NNNN subject" for a mail; None for
    a kernel the testbed did not build, whose patches nobody knows)."""
    fixed = any(name == bug.fix or name.endswith(bug.subject) for name in patches or [])
    if fixed or not re.match(bug.release, release):
        return Expectation(False, False, "")
    reason = f"kernel bug: {bug.why} (candidate fix: upstream-fixes/{bug.fix})"
    return Expectation(True, patches == [], reason)


class KnownKernelBug(AssertionError):
    """An assertion that found a known kernel bug: the one failure its expected-failure mark
    takes (any other failure of the case stays a failure)."""


@dataclass(frozen=True)
class BugSite:
    """`with site:` around the assertions that find the bug: where it is expected, their
    failure becomes KnownKernelBug; elsewhere (fixed, another release) they fail as written."""

    expected: Expectation

    def __enter__(self) -> BugSite:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.expected.xfail and isinstance(exc, AssertionError) and not isinstance(exc, KnownKernelBug):
            raise KnownKernelBug(f"{self.expected.reason}\n{exc}") from exc
