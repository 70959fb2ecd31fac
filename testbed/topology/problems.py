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


def load_entry_list(
    path: Path, error: type[ProblemsError], usage: str, key: str = "known", non_empty: bool = False
) -> tuple[Located, list, list[Problem]]:
    """A declarations file (`known: [...]`, `uncovered: [...]`): its located document, the list
    under `key`, and the problems found so far (other top-level keys), for the caller to add its
    entries' problems to. `error` with file:line problems when there is no usable list. `usage`
    shows what an entry looks like; `key:` present with nothing under it is an empty list
    unless `non_empty`."""
    from .yamlpos import load_located

    if not path.is_file():
        raise error([Problem(path, 0, "", f"{error.what} file does not exist")])
    try:
        doc = load_located(path)
    except TopologyError as exc:
        raise error(exc.problems) from None
    if not isinstance(doc.data, dict):
        raise error([Problem(path, doc.line(()), "", f"must be a mapping with '{key}:'", usage)])
    problems = [Problem(path, doc.line((k,)), k, "unknown key", key) for k in sorted(set(doc.data) - {key})]
    entries = doc.data.get(key)
    if key in doc.data and entries is None and not non_empty:
        entries = []  # `key:` with nothing under it: no entries yet
    if not isinstance(entries, list) or (non_empty and not entries):
        what = "must be a non-empty list of entries" if non_empty else "must be a list of entries"
        raise error([*problems, Problem(path, doc.line((key,)), key, what, usage)])
    return doc, entries, problems
