"""Best-effort hints for a dropped option: what its Kconfig entry depends on that is not set.

Not a Kconfig parser: it reads `config SYMBOL` blocks (and the `if`/`menu` around them) well
enough to name the usual culprit, e.g. ZONE_DEVICE needing MEMORY_HOTREMOVE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ENTRY = re.compile(r"^\s*(menuconfig|config)\s+([A-Za-z0-9_]+)\s*$")
_DEPENDS = re.compile(r"^\s*depends\s+on\s+(.+)$")
_PROMPT = re.compile(r'^\s*(?:(?:bool|tristate|string|int|hex)\s+"|prompt\s+")')
_DEF_BOOL_IF = re.compile(r"^def_(?:bool|tristate)\s+\S+\s+if\s+(.+)$")
_SELECT_BY = re.compile(r"^\s*(?:select|imply)\s+([A-Za-z0-9_]+)")
_SYMBOL = re.compile(r"\b[A-Z][A-Z0-9_]*\b")
# keywords that end a config block
_BLOCK_END = re.compile(r"^\s*(config|menuconfig|choice|endchoice|menu|endmenu|if|endif|source|comment|mainmenu)\b")


@dataclass(frozen=True)
class SymbolInfo:
    name: str  # without CONFIG_
    where: str  # file:line
    depends: tuple[str, ...]  # expressions, including enclosing `if` and menu conditions
    has_prompt: bool


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations; keep the first line number."""
    out: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if pending is None:
            start = lineno
            pending = ""
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined = pending + line
        out.append((start, " ".join(joined.split()) if pending else joined))
        pending = None
    if pending:
        out.append((start, pending))
    return out


class _KconfigParser:
    """One Kconfig file, line by line: entries, the if/menu blocks around them, their deps."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.found: list[SymbolInfo] = []
        self.stack: list[list[str]] = []  # conditions of enclosing if/menu blocks
        self.menu_open = False  # a `menu` whose `depends on` lines are still being read
        self.current: dict | None = None
        self.in_help = False  # help text is prose: "depends on" there means nothing

    def close(self) -> None:
        if self.current is not None:
            outer = tuple(cond for frame in self.stack for cond in frame)
            c = self.current
            self.found.append(SymbolInfo(c["name"], c["where"], outer + tuple(c["deps"]), c["prompt"]))
            self.current = None

    def block(self, lineno: int, line: str) -> None:
        """A line that ends the previous entry: a new entry, if/menu/choice, or their end."""
        self.close()
        self.menu_open = False
        self.in_help = False
        keyword = line.split()[0]
        entry = _ENTRY.match(line)
        if entry:
            self.current = {"name": entry.group(2), "where": f"{self.filename}:{lineno}", "deps": [], "prompt": False}
        elif keyword == "if":
            self.stack.append([line.strip()[2:].strip()])
        elif keyword in ("menu", "choice"):
            self.stack.append([])
            self.menu_open = True
        elif keyword in ("endif", "endmenu", "endchoice") and self.stack:
            self.stack.pop()

    def attribute(self, line: str, stripped: str) -> None:
        """A line inside an entry or menu: depends on, a prompt, `def_bool y if EXPR`."""
        dep = _DEPENDS.match(stripped)
        if dep:
            if self.current is not None:
                self.current["deps"].append(dep.group(1).strip())
            elif self.menu_open and self.stack:
                self.stack[-1].append(dep.group(1).strip())
            return
        if self.current is None:
            return
        if _PROMPT.match(line):
            self.current["prompt"] = True
        cond = _DEF_BOOL_IF.match(stripped)
        if cond:  # `def_bool y if EXPR`: the condition is how it gets set
            self.current["deps"].append(cond.group(1).strip())

    def feed(self, lineno: int, line: str) -> None:
        stripped = line.split("#", 1)[0].strip()
        # help text may start a line with "if" or "menu"; real keywords there sit in column 0
        if _BLOCK_END.match(line) and not (self.in_help and line[:1].isspace()):
            self.block(lineno, line)
            return
        if stripped in ("help", "---help---"):
            self.in_help = True
        if not self.in_help:
            self.attribute(line, stripped)


def parse_kconfig(text: str, filename: str) -> list[SymbolInfo]:
    """Every config entry of one Kconfig file with its depends-on lines."""
    parser = _KconfigParser(filename)
    for lineno, line in _logical_lines(text):
        parser.feed(lineno, line)
    parser.close()
    return parser.found


def _kconfig_files(srctree: Path) -> list[Path]:
    return sorted(p for p in srctree.rglob("Kconfig*") if p.is_file())


def _kconfig_matching(srctree: Path, needle: re.Pattern[str]):
    """(path, text) of every Kconfig file in which `needle` matches."""
    for path in _kconfig_files(srctree):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if needle.search(text):
            yield path, text


def find_symbol(srctree: Path, symbol: str) -> list[SymbolInfo]:
    """All definitions of `symbol` (a symbol may be defined in several places)."""
    needle = re.compile(rf"^\s*(menu)?config\s+{re.escape(symbol)}\s*$", re.MULTILINE)
    infos: list[SymbolInfo] = []
    for path, text in _kconfig_matching(srctree, needle):
        rel = str(path.relative_to(srctree))
        infos.extend(i for i in parse_kconfig(text, rel) if i.name == symbol)
    return infos


def selectors(srctree: Path, symbol: str) -> list[str]:
    """Symbols that `select` or `imply` this one (the way in for prompt-less options)."""
    needle = re.compile(rf"^\s*(select|imply)\s+{re.escape(symbol)}\b", re.MULTILINE)
    out: list[str] = []
    for _, text in _kconfig_matching(srctree, needle):
        owner: str | None = None
        for _, line in _logical_lines(text):
            entry = _ENTRY.match(line)
            if entry:
                owner = entry.group(2)
            sel = _SELECT_BY.match(line)
            if sel and sel.group(1) == symbol and owner and owner not in out:
                out.append(owner)
    return out


def unmet_symbols(expr: str, final: dict[str, str]) -> list[str]:
    """Symbols named in a depends-on expression that are off in the final .config.
    Best effort: `!FOO` is skipped, `||` and comparisons are not evaluated."""
    unmet = []
    for match in _SYMBOL.finditer(expr):
        name = match.group(0)
        if expr[: match.start()].rstrip().endswith("!"):
            continue  # `!FOO` is met when FOO is off
        if final.get(f"CONFIG_{name}") in (None, "n") and name not in unmet:
            unmet.append(name)
    return unmet


def hint(srctree: Path, symbol: str, final: dict[str, str]) -> str:
    """One line explaining why `symbol` (no CONFIG_ prefix) may have been dropped."""
    infos = find_symbol(srctree, symbol)
    if not infos:
        return f"{symbol} is not defined in any Kconfig file of this tree (renamed or removed?)"
    parts: list[str] = []
    for info in infos:
        unmet = [
            f"{expr!r} ({', '.join(syms)} not set)" for expr in info.depends if (syms := unmet_symbols(expr, final))
        ]
        if unmet:
            parts.append(f"{info.where} depends on " + "; ".join(unmet))
    if not parts and not any(i.has_prompt for i in infos):
        sel = selectors(srctree, symbol)
        via = f"; selected by e.g. {', '.join(sel[:5])}" if sel else ""
        parts.append(f"{symbol} has no prompt: it can only be selected{via}")
    if not parts:
        deps = "; ".join(d for i in infos for d in i.depends) or "nothing"
        parts.append(f"{infos[0].where}: depends on {deps} (check choices and ranges)")
    return " | ".join(parts)
