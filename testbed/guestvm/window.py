"""Per-test console windows: begin/end markers in /dev/kmsg, splats between them fail the test.

A test declares the kernel messages it provokes on purpose (a DMAR fault line) with the
`kernel_messages` fixture: they must appear in its window. That never excuses a splat: a
splat is only set apart when known-splats.yaml pins it as the base kernel's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..logs.known import KnownSplat, find_known, kernel_release
from ..logs.splat import END_RE, MAX_LINES, Splat, scan_lines, strip_prefix
from ..logs.windows import marker
from ..vm.console import NumberedLines

if TYPE_CHECKING:
    from .guest import GuestVM


@dataclass
class ExpectedMessages:
    """Kernel messages a test provokes on purpose (regexes on the console text)."""

    patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    # splats provoked on purpose: (signature, regex on the report's text, why, must appear)
    splats: list[tuple[str, re.Pattern[str], str, bool]] = field(default_factory=list)

    def expect(self, regex: str, why: str = "") -> None:
        self.patterns.append((re.compile(regex), why))

    def expect_splat(self, signature: str, regex: str, why: str, required: bool = True) -> None:
        """A kernel report the test provokes (a WARN a user can reach, recorded as 7.2 behaves):
        one with exactly this signature whose text matches `regex` does not fail the test, and
        must appear unless not `required` (a known bug's report on a kernel that may carry its
        fix). Any other splat still fails it."""
        self.splats.append((signature, re.compile(regex), why, required))

    def provoked(self, splat: Splat, text: str) -> bool:
        """`text`: the report with the lines just before it (a WARN's message precedes it)."""
        return any(sig == splat.signature and rx.search(text) for sig, rx, _, _ in self.splats)


LEAD_LINES = 3  # "cut here", then the WARN's own message, then the report


def _report_text(lines: list[str], splat: Splat) -> str:
    """The report's console lines (1-based first/last line) with the lines that lead into it."""
    return "".join(
        strip_prefix(line) + "\n" for line in lines[max(splat.first_line - 1 - LEAD_LINES, 0) : splat.last_line]
    )


@dataclass(frozen=True)
class WindowFindings:
    splats: list[Splat]  # neither expected by the test nor known in the base kernel
    missing: list[str]  # expected patterns that never appeared
    lines: tuple[int, int]  # 1-based range of the window in the console log
    complete: bool  # False: the end marker never reached the console
    lockdep_lost: bool = False  # debug_locks went from 1 to 0 during the test
    known: list[tuple[Splat, KnownSplat]] = field(default_factory=list)
    lockdep_off_at_start: bool = False  # an earlier report in this VM had turned it off

    @property
    def lockdep_lost_to_known(self) -> bool:
        """Lockdep went off, and a known lockdep report in the window is what turned it off."""
        return self.lockdep_lost and any(k.kind == "lockdep" for _, k in self.known)


@dataclass(frozen=True)
class OpenWindow:
    """A test's window once its begin marker is on the console."""

    begin_line: int  # 1-based console line of the begin marker
    debug_locks: int | None  # lockdep's debug_locks as the test began (None: no lockdep)


QUIET_S = 1.0  # a report cut by the end marker: the console quiet this long ends it
POLL_S = 0.02  # the marker is on the console within ms of its write; a 0.2 s poll cost every test


def wait_for_line(lines: NumberedLines, needle: str, after_line: int, timeout: float) -> int | None:
    """1-based line number of the first line after `after_line` containing needle, among the
    lines `lines` has not handed out yet."""
    deadline = time.monotonic() + timeout
    while True:
        for number, text in lines.new():
            if number > after_line and needle in text:
                return number
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)


def through_report(path: Path, end_line: int, timeout: float) -> list[str]:
    """The console from the end marker (1-based `end_line`, blanked so the report reads on
    through it) to the end of the report it interrupted: its closing line, else what came until
    the console stayed quiet for QUIET_S, at most MAX_LINES lines and `timeout` seconds."""
    deadline = time.monotonic() + timeout
    seen, quiet_since = -1, time.monotonic()
    while True:
        after = path.read_text(errors="replace").splitlines()[end_line - 1 : end_line - 1 + MAX_LINES]
        if any(END_RE.match(strip_prefix(line)) for line in after[1:]):
            break
        if len(after) != seen:
            seen, quiet_since = len(after), time.monotonic()
        if time.monotonic() - quiet_since >= QUIET_S or time.monotonic() > deadline or len(after) >= MAX_LINES:
            break
        time.sleep(0.1)
    closing = next((i for i, line in enumerate(after) if i and END_RE.match(strip_prefix(line))), len(after) - 1)
    return [""] + after[1 : closing + 1]


def begin(vm: GuestVM, test_id: str) -> OpenWindow:
    """Write the begin marker; its console line and lockdep's state as the test starts.
    Lockdep turns itself off after its first report or when it runs out of entries, and from
    then on reports nothing: a test after that point would pass blind."""
    text = marker("begin", test_id)
    lines = NumberedLines(vm.machine.console_log)
    start = lines.count()  # the log read once: the wait goes on from there
    locks = vm.mark(text)
    line = wait_for_line(lines, text, start, vm.machine.timeouts.console_flush)
    return OpenWindow(line if line is not None else start + 1, locks)


def end(
    vm: GuestVM,
    test_id: str,
    opened: OpenWindow,
    expected: ExpectedMessages,
    known: tuple[KnownSplat, ...] = (),
) -> WindowFindings:
    text = marker("end", test_id)
    begin_line, locks_before = opened.begin_line, opened.debug_locks
    complete = True
    locks_after = None
    try:
        locks_after = vm.mark(text)
        end_line = wait_for_line(
            NumberedLines(vm.machine.console_log), text, begin_line, vm.machine.timeouts.console_flush
        )
    except Exception:  # the guest may be gone; judge what reached the console
        end_line = None
    lines = vm.machine.console_log.read_text(errors="replace").splitlines()
    if end_line is None:
        complete = False
        end_line = len(lines)
    window = lines[begin_line : end_line - 1] if complete else lines[begin_line:]
    found = scan_lines(window, first_line=begin_line + 1)
    if complete and found and found[-1].last_line >= end_line - 1:
        # the end marker landed inside a report (another CPU was still printing it): judge the
        # report whole, as far as it goes past the marker, or its signature loses its place
        rest = through_report(vm.machine.console_log, end_line, vm.machine.timeouts.console_flush)
        found = [s for s in scan_lines(window + rest, first_line=begin_line + 1) if s.first_line < end_line]
    release = kernel_release(lines)
    splats, known_seen, provoked = [], [], []
    for splat in found:
        entry = find_known(splat, release, known)
        text = _report_text(lines, splat) if expected.splats else ""
        if expected.provoked(splat, text):
            provoked.append((splat, text))
        elif entry is None:
            splats.append(splat)
        else:
            known_seen.append((splat, entry))
    texts = [strip_prefix(line) for line in window]
    missing = [
        p.pattern + (f" ({why})" if why else "") for p, why in expected.patterns if not any(p.search(t) for t in texts)
    ] + [
        f"{sig} matching {rx.pattern} ({why})"
        for sig, rx, why, required in expected.splats
        if required and not any(s.signature == sig and rx.search(text) for s, text in provoked)
    ]
    lost = locks_before == 1 and locks_after == 0
    return WindowFindings(splats, missing, (begin_line, end_line), complete, lost, known_seen, locks_before == 0)
