"""Per-test windows of the console log, delimited by markers the harness writes to /dev/kmsg."""

from __future__ import annotations

import re
from dataclasses import dataclass

BEGIN = "testbed: begin"
END = "testbed: end"
MARKER_RE = re.compile(r"testbed: (?P<edge>begin|end) (?P<test>\S+)")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.:/\[\]=-]+")


@dataclass(frozen=True)
class TestWindow:
    __test__ = False  # not a pytest class

    test: str
    begin_line: int  # 1-based line of the begin marker
    end_line: int | None  # None: the test never wrote its end marker (crash, hang)


def marker(edge: str, test_id: str) -> str:
    """The line a test writes to /dev/kmsg; test ids are made single-word."""
    return f"testbed: {edge} {_UNSAFE_RE.sub('_', test_id)}"


def find_windows(lines: list[str]) -> list[TestWindow]:
    open_: dict[str, int] = {}
    windows: list[TestWindow] = []
    for i, line in enumerate(lines, start=1):
        match = MARKER_RE.search(line)
        if not match:
            continue
        if match["edge"] == "begin":
            open_[match["test"]] = i
        elif match["test"] in open_:
            windows.append(TestWindow(match["test"], open_.pop(match["test"]), i))
    windows += [TestWindow(test, line, None) for test, line in open_.items()]
    return sorted(windows, key=lambda w: w.begin_line)


def outside_windows(lines: list[str]) -> list[tuple[int, int]]:
    """1-based inclusive line ranges not covered by any test window."""
    windows = find_windows(lines)
    ranges, start = [], 1
    for w in windows:
        if w.begin_line > start:
            ranges.append((start, w.begin_line - 1))
        start = (w.end_line or len(lines)) + 1
    if start <= len(lines):
        ranges.append((start, len(lines)))
    return ranges
