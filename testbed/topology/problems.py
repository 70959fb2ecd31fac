"""Validation findings: every problem at once, each with file:line, key path, what, allowed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int  # 1-based; 0 when the problem is not tied to one line
    path: str  # key path, e.g. "endpoints[2].cmb"
    message: str
    allowed: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text} (allowed: {self.allowed})" if self.allowed else text


class ProblemsError(ConfigError):
    """A file the user owns is invalid; carries every problem found, in file order."""

    what = "the file"

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (str(p.file), p.line, p.path))
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} in {self.what}"
        super().__init__(header + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class TopologyError(ProblemsError):
    what = "topology"
