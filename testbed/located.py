"""Files a user owns, read with every problem found at once: YAML loading that remembers where
every key and item came from (for file:line errors), the problems themselves, and the loader of
declaration lists (`known: [...]`). Neutral ground: topologies, known splats, known failures,
the coverage scope, base fixes and mutation equivalents all read their files through it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


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


class YamlError(ProblemsError):
    what = "the YAML file"


KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Located:
    """Plain Python data plus the 1-based line of every key path in it."""

    file: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, path: KeyPath) -> int:
        # Fall back to the nearest enclosing node that has a line.
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def load_located(file: Path, text: str | None = None) -> Located:
    if text is None:
        text = file.read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise YamlError([Problem(file, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if root is None:
        raise YamlError([Problem(file, 1, "", "the file is empty")])
    lines: dict[KeyPath, int] = {}
    problems: list[Problem] = []
    data = _convert(root, (), lines, problems, file)
    if problems:
        raise YamlError(problems)
    return Located(file, data, lines)


def _convert(node: yaml.Node, path: KeyPath, lines: dict, problems: list, file: Path) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(_scalar(key_node))
            child = path + (key,)
            if key in out:
                problems.append(Problem(file, key_node.start_mark.line + 1, format_path(child), "duplicate key"))
                continue
            lines[child] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, child, lines, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), lines, problems, file) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    # A fresh constructor per scalar keeps YAML 1.1 typing (ints, hex, booleans) without
    # building the whole document twice.
    return yaml.SafeLoader("").construct_object(node, deep=True)


def load_entry_list(
    path: Path, error: type[ProblemsError], usage: str, key: str = "known", non_empty: bool = False
) -> tuple[Located, list, list[Problem]]:
    """A declarations file (`known: [...]`, `uncovered: [...]`): its located document, the list
    under `key`, and the problems found so far (other top-level keys), for the caller to add its
    entries' problems to. `error` with file:line problems when there is no usable list. `usage`
    shows what an entry looks like; `key:` present with nothing under it is an empty list
    unless `non_empty`."""
    if not path.is_file():
        raise error([Problem(path, 0, "", f"{error.what} file does not exist")])
    try:
        doc = load_located(path)
    except YamlError as exc:
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
