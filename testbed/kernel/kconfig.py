"""Kconfig fragments: parse, merge (later wins), render for KCONFIG_ALLCONFIG, verify a .config.

Pure: text in, data out. `olddefconfig` silently drops options whose dependencies are unmet,
so every requested option is checked against the final .config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

_ASSIGN = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set\s*$")
_NUMBER = re.compile(r"^-?(0[xX][0-9a-fA-F]+|[0-9]+)$")


@dataclass(frozen=True)
class Option:
    """One requested option: `value` is y, m, n, a number as written, or a quoted string."""

    name: str  # with the CONFIG_ prefix
    value: str
    origin: str  # "file:line", for messages

    @property
    def symbol(self) -> str:
        return self.name.removeprefix("CONFIG_")

    def line(self) -> str:
        """The option as a .config line."""
        if self.value == "n":
            return f"# {self.name} is not set"
        return f"{self.name}={self.value}"


@dataclass(frozen=True)
class Override:
    """A later fragment changed what an earlier one asked for (kept for messages)."""

    earlier: Option
    later: Option


@dataclass(frozen=True)
class MergedConfig:
    options: tuple[Option, ...]  # in first-seen order, each with its winning value
    overrides: tuple[Override, ...]

    def render(self) -> str:
        """The merged fragment, as KCONFIG_ALLCONFIG reads it."""
        return "".join(f"{opt.line()}\n" for opt in self.options)

    def get(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)


@dataclass(frozen=True)
class Mismatch:
    """A requested option the final .config does not have; `actual` None means absent/not set."""

    wanted: Option
    actual: str | None

    def describe(self) -> str:
        got = "not set" if self.actual in (None, "n") else f"={self.actual}"
        return f"{self.wanted.line()} (from {self.wanted.origin}) is {got} in the final .config"


def _parse_value(raw: str, where: str) -> str:
    value = raw.strip()
    if value in ("y", "m", "n"):
        return value
    if _NUMBER.match(value):
        return value
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        body = value[1:-1]
        # an unescaped quote inside means the string ended early: a typo
        if re.search(r'(?<!\\)"', body):
            raise ConfigError(f"{where}: stray quote in string value {value}")
        return value
    raise ConfigError(f'{where}: bad value {value!r}: expected y, m, n, a number or a "quoted string"')


def parse_fragment(text: str, name: str) -> tuple[Option, ...]:
    """Parse one fragment. Blank lines and comments are skipped; a conflicting duplicate
    inside one fragment is an error (across fragments, the later one wins on purpose)."""
    seen: dict[str, Option] = {}
    out: list[Option] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{name}:{lineno}"
        if not line:
            continue
        not_set = _NOT_SET.match(line)
        if not_set:
            opt = Option(not_set.group(1), "n", where)
        elif line.startswith("#"):
            continue
        else:
            match = _ASSIGN.match(line)
            if not match:
                raise ConfigError(
                    f"{where}: cannot parse {raw!r}: expected CONFIG_NAME=value, "
                    f"'# CONFIG_NAME is not set' or a # comment"
                )
            opt = Option(match.group(1), _parse_value(match.group(2), where), where)
        earlier = seen.get(opt.name)
        if earlier is not None:
            if earlier.value != opt.value:
                raise ConfigError(f"{where}: {opt.line()} contradicts {earlier.line()} at {earlier.origin}")
            continue  # same value twice: harmless
        seen[opt.name] = opt
        out.append(opt)
    return tuple(out)


def load_fragment(path: Path, name: str | None = None) -> tuple[Option, ...]:
    """`name` is how messages refer to the file (default: its path)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read kconfig fragment {path}: {exc.strerror}") from exc
    return parse_fragment(text, name or str(path))


def merge(fragments: list[tuple[Option, ...]] | tuple[tuple[Option, ...], ...]) -> MergedConfig:
    """Merge in order; a later fragment's value replaces an earlier one in place."""
    winners: dict[str, Option] = {}
    overrides: list[Override] = []
    for fragment in fragments:
        for opt in fragment:
            earlier = winners.get(opt.name)
            if earlier is not None and earlier.value != opt.value:
                overrides.append(Override(earlier, opt))
            winners[opt.name] = opt
    return MergedConfig(tuple(winners.values()), tuple(overrides))


def parse_dotconfig(text: str) -> dict[str, str]:
    """A generated .config as {CONFIG_NAME: value}; `# ... is not set` gives "n"."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        not_set = _NOT_SET.match(line)
        if not_set:
            values[not_set.group(1)] = "n"
            continue
        match = _ASSIGN.match(line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def _same(wanted: str, actual: str) -> bool:
    if _NUMBER.match(wanted) and _NUMBER.match(actual):
        return int(wanted, 0) == int(actual, 0)
    return wanted == actual


def verify(merged: MergedConfig, final: dict[str, str]) -> tuple[Mismatch, ...]:
    """Every requested option as olddefconfig left it; `=n` is met by absent or not set."""
    bad: list[Mismatch] = []
    for opt in merged.options:
        actual = final.get(opt.name)
        if opt.value == "n":
            if actual not in (None, "n"):
                bad.append(Mismatch(opt, actual))
        elif actual is None or not _same(opt.value, actual):
            bad.append(Mismatch(opt, actual))
    return tuple(bad)
