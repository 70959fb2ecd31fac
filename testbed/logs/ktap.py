"""Parse KTAP / TAP test results out of a kernel log or a kselftest run.

Accepted input is any sequence of lines that contains one or more KTAP documents
(Documentation/dev-tools/ktap.rst):

* a document starts at a version line: ``KTAP version 1``, ``TAP version 13`` or ``TAP version 14``;
  anything before it is ignored, and a version line at the document's own indentation (or less)
  starts the next document (a test module loaded twice prints two);
* lines may carry what the console or ``dmesg`` adds before the message: a syslog level ``<6>``,
  a printk timestamp ``[   12.345678]`` and a caller id ``[    T1]`` / ``[    C0]``; see strip_prefix;
* a plan ``1..N`` (optional, KTAP allows leaving it out), result lines
  ``ok N [- ]name [# DIRECTIVE reason]`` / ``not ok ...`` (a ``# SKIP`` directive, in any case, makes
  the status SKIP; TODO, XFAIL, TIMEOUT, ERROR keep the ok / not ok status) and ``# ...`` diagnostics;
* nesting is by indentation, as KUnit prints it: a version line, a plan or a ``# Subtest: name`` line
  indented deeper than the current document opens a subtest document (KUnit's old form has only
  ``# Subtest:`` and a plan, the KTAP form a version line; any indent width works, tabs count 8);
  the parent's own result line, back at the parent's indentation, closes it;
* anything else (kernel messages interleaved with the test output, oopses, the kselftest runner's
  ``# ``-prefixed output of the programs it runs, kselftest_harness ``#  RUN`` / ``#  OK`` lines,
  ``# Totals:``) is not structure: every line goes to the ``log`` of the case being run, ``#`` lines
  also to its ``diagnostics`` (a ``#`` line less indented than the running subtest goes to the
  enclosing case: KUnit's ``# suite: pass:1 fail:0`` to the suite). Lines between a document's version
  line and its plan (``# module: name``) are header, not part of the first case; lines after the last
  result of a document belong to no case and are dropped.

Nothing in a log makes parse_ktap raise. A case whose result line never comes (the kernel crashed,
the module stopped printing) becomes a Status.ERROR case with number 0, holding the lines printed
while it ran, and the cases that did finish are kept; a plan that does not match what ran, an
unexpected test number or version are recorded in ``problems`` of the case (for a subtest document)
or of the report (for the top level).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["KtapCase", "KtapReport", "Status", "parse_ktap", "strip_prefix"]

ACCEPTED_VERSIONS = ("KTAP version 1", "TAP version 13", "TAP version 14")
TAB_WIDTH = 8

# "<6>" syslog level, "[   12.345678]" printk time, "[    T1]" caller id (CONFIG_PRINTK_CALLER)
_PREFIX_RE = re.compile(r"^(?:<\d{1,3}>)?(?:\[\s*\d+\.\d+\])?(?:\[\s*[CT]\d+\])?")
_VERSION_RE = re.compile(r"^K?TAP version \d+$")
_PLAN_RE = re.compile(r"^1\.\.(\d+)\s*(?:#.*)?$")
_RESULT_RE = re.compile(r"^(not ok|ok)[ \t]+(\d+)\b(?:[ \t]+-(?=[ \t]|$))?([^#]*)(?:#(.*))?$")
_SUBTEST_RE = re.compile(r"^#\s*Subtest:\s*(.*)$")
_DIRECTIVE_RE = re.compile(r"^(skip|todo|xfail|timeout|error)\b\s*(.*)$", re.IGNORECASE)


class Status(str, Enum):
    PASS = "ok"
    FAIL = "not ok"
    SKIP = "skip"
    ERROR = "error"  # no result line (crashed, output stopped)


@dataclass(frozen=True)
class KtapCase:
    number: int  # as printed; 0 if the result line never came
    name: str  # "- " of TAP13 removed; for a missing result, the "# Subtest:" name if any
    status: Status
    directive: str  # what follows '#' on the result line, keyword upper-cased: "SKIP reason"; "" if none
    diagnostics: tuple[str, ...]  # '#' lines of this case, '#' and surrounding blanks removed
    log: tuple[str, ...]  # every line since the previous sibling's result (or the header), prefixes removed
    first_line: int  # 1-based, in the input
    last_line: int
    subtests: tuple[KtapCase, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class KtapReport:
    version: str
    plan: int | None
    cases: tuple[KtapCase, ...]
    problems: tuple[str, ...]
    first_line: int
    last_line: int

    def walk(self) -> Iterator[tuple[tuple[str, ...], KtapCase]]:
        """Every case, depth first, a parent before its subtests; the path ends with the case's name."""

        def visit(path: tuple[str, ...], cases: tuple[KtapCase, ...]) -> Iterator[tuple[tuple[str, ...], KtapCase]]:
            for case in cases:
                here = (*path, case.name)
                yield here, case
                yield from visit(here, case.subtests)

        return visit((), self.cases)

    def counts(self) -> dict[Status, int]:
        """How many leaf cases (no subtests) ended in each status; every status is a key."""
        counts = dict.fromkeys(Status, 0)
        for _, case in self.walk():
            if not case.subtests:
                counts[case.status] += 1
        return counts


def strip_prefix(line: str) -> str:
    """The message of a console / dmesg line: without the line end, '<6>', '[  1.234567]', '[  T12]'.

    The single space printk puts after the prefix goes too; the message's own indentation stays.
    """
    line = line.rstrip("\r\n")
    match = _PREFIX_RE.match(line)
    end = match.end() if match else 0
    if not end:
        return line
    return line[end + 1 :] if line[end : end + 1] == " " else line[end:]


@dataclass
class _Frame:
    """One open (sub)document, and what has been seen of the case it is running now."""

    indent: int
    first_line: int
    version: str = ""
    name: str = ""  # from "# Subtest: name"
    plan: int | None = None
    ran: int = 0  # result lines seen
    last_line: int = 0
    cases: list[KtapCase] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    log: list[tuple[int, str]] = field(default_factory=list)  # of the running case
    diags: list[str] = field(default_factory=list)
    sub: _Frame | None = None  # finished subtest document, waiting for this level's result line
    next_name: str = ""  # a "# Subtest:" at this level, naming the next case (TAP14 style)

    def fresh(self) -> bool:
        return self.plan is None and not self.cases and self.sub is None


class _Parser:
    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.reports: list[KtapReport] = []

    def feed(self, n: int, raw: str) -> None:
        text = strip_prefix(raw)
        expanded = text.expandtabs(TAB_WIDTH)
        content = expanded.strip()
        indent = len(expanded) - len(expanded.lstrip())
        if not self.stack:
            if _VERSION_RE.match(content):
                self._open(n, indent, version=content)
            return
        if _VERSION_RE.match(content):
            return self._version(n, text, content, indent)
        if match := _RESULT_RE.match(content):
            return self._result(n, text, indent, match)
        if (match := _PLAN_RE.match(content)) and self._plan(n, text, content, indent, int(match[1])):
            return
        if (match := _SUBTEST_RE.match(content)) and self._subtest(n, text, indent, match[1].strip()):
            return
        if content.startswith("#"):
            self._target(indent).diags.append(content[1:].strip())
        self._append(n, text, len(self.stack))

    def _version(self, n: int, text: str, content: str, indent: int) -> None:
        inner = self.stack[-1]
        if indent == inner.indent and inner.fresh() and not inner.version:
            inner.version = content  # "# Subtest:" came first
        else:
            while self.stack and self.stack[-1].indent >= indent:
                self._close()
            self._open(n, indent, version=content)
        self._header(n, text)

    def _plan(self, n: int, text: str, content: str, indent: int, count: int) -> bool:
        """A plan line that opens or completes a document; False: it is just text."""
        inner = self.stack[-1]
        if indent > inner.indent:
            self._open(n, indent, plan=count)
        elif self._target(indent) is inner:
            if inner.plan is None:
                inner.plan = count
                if not inner.cases and inner.sub is None:  # what came before is header ("# module:")
                    inner.log, inner.diags = [], []
            else:
                inner.problems.append(f"second plan line {content!r}")
        else:
            return False
        self._header(n, text)
        return True

    def _subtest(self, n: int, text: str, indent: int, name: str) -> bool:
        """`# Subtest: name`: opens a document, names a fresh one, or names the next case."""
        inner = self.stack[-1]
        if indent > inner.indent:
            self._open(n, indent, name=name)
        elif indent == inner.indent and inner.fresh() and not inner.name:
            inner.name = name
        else:
            self._target(indent).next_name = name
            return False
        self._header(n, text)
        return True

    def finish(self) -> list[KtapReport]:
        while self.stack:
            self._close()
        return self.reports

    def _target(self, indent: int) -> _Frame:
        """The innermost open document a line at this indentation belongs to."""
        for frame in reversed(self.stack):
            if frame.indent <= indent:
                return frame
        return self.stack[0]

    def _append(self, n: int, text: str, depth: int) -> None:
        for frame in self.stack[:depth]:
            frame.log.append((n, text))

    def _header(self, n: int, text: str) -> None:
        """A line that opens or describes the innermost document: in the logs of its ancestors only."""
        self._append(n, text, len(self.stack) - 1)
        self.stack[-1].last_line = n

    def _open(self, n: int, indent: int, version: str = "", name: str = "", plan: int | None = None) -> None:
        frame = _Frame(indent, n, version, name, plan, last_line=n)
        if self.stack:
            parent = self.stack[-1]
            if parent.sub is not None:  # the previous subtest document's parent result never came
                self._add_case(parent, 0, "", Status.ERROR, "")
            frame.name = frame.name or parent.next_name
        elif version not in ACCEPTED_VERSIONS:
            frame.problems.append(f"unexpected version line {version!r}")
        self.stack.append(frame)

    def _result(self, n: int, text: str, indent: int, match: re.Match[str]) -> None:
        target = self._target(indent)
        while self.stack[-1] is not target:
            self._close()
        self._append(n, text, len(self.stack))
        target.ran += 1
        status = Status.PASS if match[1] == "ok" else Status.FAIL
        directive = (match[4] or "").strip()
        if keyword := _DIRECTIVE_RE.match(directive):
            directive = f"{keyword[1].upper()} {keyword[2]}".rstrip()
            if keyword[1].upper() == "SKIP":
                status = Status.SKIP
        self._add_case(target, int(match[2]), match[3].strip(), status, directive, result_line=n)

    def _add_case(
        self, frame: _Frame, number: int, name: str, status: Status, directive: str, result_line: int = 0
    ) -> None:
        problems: list[str] = []
        sub = frame.sub
        if not result_line:
            problems.append("no result line (crashed?)")
            name = name or (sub.name if sub else "") or frame.next_name
        elif number != len(frame.cases) + 1:
            problems.append(f"expected test {len(frame.cases) + 1}, got {number}")
        if sub is not None:
            if sub.name and name != sub.name:
                problems.append(f"subtest header says {sub.name!r}, result line {name!r}")
            problems += sub.problems
        log = frame.log
        first = log[0][0] if log else frame.last_line
        last = log[-1][0] if log else first
        frame.cases.append(
            KtapCase(
                number=number,
                name=name,
                status=status,
                directive=directive,
                diagnostics=tuple(frame.diags),
                log=tuple(text for _, text in log),
                first_line=first,
                last_line=last,
                subtests=tuple(sub.cases) if sub else (),
                problems=tuple(problems),
            )
        )
        frame.log, frame.diags, frame.sub, frame.next_name = [], [], None, ""
        frame.last_line = max(frame.last_line, last)

    def _close(self) -> None:
        """End the innermost document: its running case, if any, never got a result line."""
        frame = self.stack.pop()
        if frame.sub is not None or (frame.plan is not None and len(frame.cases) < frame.plan):
            self._add_case(frame, 0, "", Status.ERROR, "")
        if frame.plan is not None and frame.ran != frame.plan:
            tests = "test" if frame.plan == 1 else "tests"
            frame.problems.append(f"plan said {frame.plan} {tests}, {frame.ran} ran")
        if self.stack:
            self.stack[-1].sub = frame
            return
        if frame.plan is None and not frame.cases:
            frame.problems.append("no test results")
        self.reports.append(
            KtapReport(
                version=frame.version,
                plan=frame.plan,
                cases=tuple(frame.cases),
                problems=tuple(frame.problems),
                first_line=frame.first_line,
                last_line=frame.last_line,
            )
        )


def parse_ktap(lines: Iterable[str], first_line: int = 1) -> list[KtapReport]:
    """Every KTAP document in the lines, in order; line numbers count from first_line."""
    parser = _Parser()
    for n, line in enumerate(lines, start=first_line):
        parser.feed(n, line)
    return parser.finish()
