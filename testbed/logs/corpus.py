"""syzkaller's recorded crash reports (pkg/report/testdata/linux/report) as a yardstick.

Each file is a header ("TITLE: ...", "TYPE: ...", an empty TITLE for a log with no crash),
a blank line, then real console text. The detector is judged on it: recall (a crash file
yields a splat), false alarms (a no-crash file yields none), and whether our `where` is
the function syzkaller's title names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .splat import Splat, scan_text

TITLE_FUNC_RE = re.compile(r" in (?P<func>\S+)$")


@dataclass(frozen=True)
class CorpusEntry:
    name: str
    title: str  # syzkaller's title; "" for a log with no crash in it
    text: str

    @property
    def function(self) -> str:
        """The function syzkaller's title points at ("" when it names none or is 'corrupted')."""
        match = TITLE_FUNC_RE.search(self.title)
        return match["func"] if match and match["func"] != "corrupted" else ""


@dataclass(frozen=True)
class Score:
    crashes: int
    found: int
    clean: int
    false_alarms: tuple[str, ...]
    with_function: int
    same_function: int
    missed: tuple[str, ...]

    def lines(self) -> list[str]:
        return [
            f"recall         {self.found}/{self.crashes} crash logs yield a splat "
            f"({self.found / max(self.crashes, 1):.1%})",
            f"false alarms   {len(self.false_alarms)}/{self.clean} no-crash logs yield one"
            + (f" ({', '.join(self.false_alarms)})" if self.false_alarms else ""),
            f"where          {self.same_function}/{self.with_function} name the function syzkaller's title names "
            f"({self.same_function / max(self.with_function, 1):.1%})",
        ]


def read_entry(path: Path) -> CorpusEntry:
    raw = path.read_bytes().decode(errors="replace")
    head, _, text = raw.partition("\n\n")
    fields = dict(line.split(":", 1) for line in head.splitlines() if re.match(r"^[A-Z]+:", line))
    return CorpusEntry(path.name, fields.get("TITLE", "").strip(), text)


def read_corpus(directory: Path) -> list[CorpusEntry]:
    files = [p for p in directory.iterdir() if p.is_file() and not p.name.endswith(".md")]
    return [read_entry(p) for p in sorted(files, key=lambda p: (len(p.name), p.name))]


def names_function(splat: Splat, function: str) -> bool:
    return splat.signature.endswith(f" in {function}") or f" in {function} [" in splat.signature


def score(entries: list[CorpusEntry]) -> Score:
    crashes = found = clean = with_function = same = 0
    false_alarms: list[str] = []
    missed: list[str] = []
    for entry in entries:
        splats = scan_text(entry.text)
        if not entry.title:
            clean += 1
            if splats:
                false_alarms.append(entry.name)
            continue
        crashes += 1
        if not splats:
            missed.append(entry.name)
            continue
        found += 1
        if entry.function:
            with_function += 1
            same += names_function(splats[0], entry.function)
    return Score(crashes, found, clean, tuple(false_alarms), with_function, same, tuple(missed))
