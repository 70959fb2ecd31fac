"""Mutants of a kernel C file: each one small bug in one function, with the patch that plants it.

`testbed mutate` builds one kernel per mutant and runs the tests on it; a mutant that no test
turns red points at behaviour nothing checks. A build per mutant is expensive, so this half is
pure and cheap: source text in, an ordered tuple of mutants out, each with an id that is the
same on every run over the same source, and a seeded `sample` and a round-robin `shard` to run
a part of the set or spread it over machines.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import ConfigError
from .cfunc import CFunction, find_functions, split_lines
from .operators import mutations
from .patch import format_patch
from .scan import Mutation


@dataclass(frozen=True)
class Mutant:
    """One mutant; lines are 1-based lines of the original file."""

    id: str  # "<file stem>:<function>:<first line>:<operator>:<n>", n counting from 1 on that line
    path: str  # kernel-relative: drivers/vfio/pci/vfio_pci_dmabuf.c
    function: str
    operator: str
    first_line: int
    last_line: int
    description: str
    patch: str  # `git format-patch` mail against the original file
    replacement: tuple[str, ...]  # what lines first_line..last_line become

    def apply(self, text: str) -> str:
        """The mutated file, from the original `text` (the same edit as `patch`, without git)."""
        lines = split_lines(text)
        new = [*lines[: self.first_line - 1], *self.replacement, *lines[self.last_line :]]
        return "\n".join(new) + ("\n" if text.endswith("\n") and new else "")


def mutants_of(
    path: str, text: str, functions: Iterable[str] | None = None, operators: Iterable[str] | None = None
) -> tuple[Mutant, ...]:
    """The mutants of `functions` (None: every function) of the file `path` holding `text`, in source order.

    Read the file with errors="surrogateescape" if it may hold bytes that are not UTF-8: the
    patch then carries them back unchanged.
    """
    if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
        raise ConfigError(f"{path}: give the file's path relative to the kernel tree (drivers/...)")
    chosen = _chosen(path, find_functions(text), functions)
    lines = split_lines(text)
    stem = PurePosixPath(path).stem
    ops = None if operators is None else tuple(operators)
    seen: Counter[tuple[str, int, str]] = Counter()
    out = []
    for func in chosen:
        for mu in mutations(lines[func.body_start - 1 : func.end_line], func.body_start, ops):
            key = (func.name, mu.first_line, mu.operator)
            seen[key] += 1
            mutant_id = f"{stem}:{func.name}:{mu.first_line}:{mu.operator}:{seen[key]}"
            out.append(_mutant(mutant_id, path, func.name, mu, lines, text.endswith("\n")))
    return tuple(out)


def _chosen(path: str, found: Sequence[CFunction], functions: Iterable[str] | None) -> list[CFunction]:
    if functions is None:
        return list(found)
    wanted = set(functions)
    missing = sorted(wanted - {f.name for f in found})
    if missing:
        menu = ", ".join(sorted({f.name for f in found})) or "none"
        raise ConfigError(f"{path}: no function {', '.join(missing)} defined there; its functions: {menu}")
    return [f for f in found if f.name in wanted]


def _mutant(mutant_id: str, path: str, function: str, mu: Mutation, lines: Sequence[str], eol: bool) -> Mutant:
    where = str(mu.first_line) if mu.first_line == mu.last_line else f"{mu.first_line}-{mu.last_line}"
    body = (
        "Mutation testing: this commit plants a bug on purpose; a test should fail with it.\n\n"
        f"Operator: {mu.operator}\nFile: {path}\nLine: {where}\nMutant: {mutant_id}\n"
    )
    subject = f"mutate: {function}: {mu.description}"
    patch = format_patch(path, lines, eol, (mu.first_line, mu.last_line), mu.new_lines, subject, body)
    return Mutant(
        id=mutant_id,
        path=path,
        function=function,
        operator=mu.operator,
        first_line=mu.first_line,
        last_line=mu.last_line,
        description=mu.description,
        patch=patch,
        replacement=mu.new_lines,
    )


def sample(mutants: Iterable[Mutant], n: int, seed: int | str) -> tuple[Mutant, ...]:
    """`n` of `mutants`, the same ones for the same set and seed, in their given order.

    Spread out: the mutants are grouped by (file, function, operator), and the groups, in an
    order the seed shuffles, each give one (picked by the seed) in turn until `n` are taken,
    so a small sample touches many functions and kinds of bug before any gets a second one.
    """
    pool = list(mutants)
    if n < 0:
        raise ConfigError(f"sample size {n}: give a count of 0 or more")
    if n >= len(pool):
        return tuple(pool)
    rng = random.Random(seed)
    groups: dict[tuple[str, str, str], list[Mutant]] = {}
    for m in sorted(pool, key=lambda m: m.id):  # the input order must not change the pick
        groups.setdefault((m.path, m.function, m.operator), []).append(m)
    order = sorted(groups)
    rng.shuffle(order)
    for key in order:
        rng.shuffle(groups[key])
    picked: set[str] = set()
    while len(picked) < n:
        for key in order:
            if groups[key] and len(picked) < n:
                picked.add(groups[key].pop().id)
    return tuple(m for m in pool if m.id in picked)


def shard(mutants: Iterable[Mutant], k: int, n: int) -> tuple[Mutant, ...]:
    """The k-th of n shards (1-based): every n-th mutant by id, starting at the k-th; the n shards partition the set."""
    if not 1 <= k <= n:
        raise ConfigError(f"shard {k}/{n}: k must be between 1 and n")
    return tuple(sorted(mutants, key=lambda m: m.id)[k - 1 :: n])
