"""Validation findings: every problem at once, each with file:line, key path, what, allowed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .yamlpos import Located


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


def load_entry_list(path: Path, error: type[ProblemsError], usage: str) -> tuple[Located, list]:
    """A declarations file (`known: [...]`): its located document and the list, or `error` with
    file:line problems. `usage` shows what an entry looks like."""
    from .yamlpos import load_located

    if not path.is_file():
        raise ConfigError(f"{error.what} {path} does not exist")
    try:
        doc = load_located(path)
    except TopologyError as exc:
        raise error(exc.problems) from None
    entries = doc.data.get("known") if isinstance(doc.data, dict) else None
    if not isinstance(entries, list):
        raise error([Problem(path, doc.line(()), "known", "must be a list of entries", usage)])
    return doc, entries
