"""YAML loading that remembers where every key and item came from (for file:line errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .problems import Problem, TopologyError

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
        raise TopologyError([Problem(file, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if root is None:
        raise TopologyError([Problem(file, 1, "", "the file is empty")])
    lines: dict[KeyPath, int] = {}
    problems: list[Problem] = []
    data = _convert(root, (), lines, problems, file)
    if problems:
        raise TopologyError(problems)
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
