"""Declared equivalent mutants (mutation-equivalents.yaml): mutants no test can tell from the
original on this emulated machine, each with why, so they are listed and not counted.

An entry names the file, the function and the operator, and `match`: text of the original line
(a substring of a line the mutant removes), so the declaration survives line shifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..located import YamlError, load_located
from ..paths import MUTATION_EQUIVALENTS_FILE
from .generate import Mutant

EQUIVALENTS_FILE = MUTATION_EQUIVALENTS_FILE
FIELDS = ("path", "function", "operator", "match", "why")


@dataclass(frozen=True)
class Equivalent:
    path: str
    function: str
    operator: str
    match: str
    why: str
    where: str  # file:line


def load_equivalents(file: Path = EQUIVALENTS_FILE) -> tuple[Equivalent, ...]:
    if not file.is_file():
        return ()
    try:
        doc = load_located(file)
    except YamlError as exc:
        raise ConfigError(f"the mutation equivalents file: {exc}") from None
    items = (doc.data or {}).get("equivalents") if isinstance(doc.data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"{file}:{doc.line(())}: needs a list `equivalents:` (fields: {', '.join(FIELDS)})")
    out = []
    for n, item in enumerate(items):
        where = f"{file}:{doc.line(('equivalents', n))}"
        if not isinstance(item, dict) or set(item) != set(FIELDS):
            raise ConfigError(f"{where}: an entry has exactly the fields {', '.join(FIELDS)}; got {item!r}")
        if not all(isinstance(item[f], str) and item[f].strip() for f in FIELDS):
            raise ConfigError(f"{where}: every field is a non-empty string")
        fields = {f: item[f].strip() for f in FIELDS}
        out.append(
            Equivalent(fields["path"], fields["function"], fields["operator"], fields["match"], fields["why"], where)
        )
    return tuple(out)


def _removed_lines(patch: str) -> list[str]:
    diff = patch.split("\ndiff --git ", 1)[-1]
    return [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]


def find_equivalent(mutant: Mutant, declared: tuple[Equivalent, ...]) -> Equivalent | None:
    for e in declared:
        if (e.path, e.function, e.operator) != (mutant.path, mutant.function, mutant.operator):
            continue
        if any(e.match in line for line in _removed_lines(mutant.patch)):
            return e
    return None
