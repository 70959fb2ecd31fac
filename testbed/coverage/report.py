"""What the scope's counters say, from gcovr's JSON (pure: data in, data or text out).

gcovr's JSON lists per source file its `functions` (name, first line, execution count) and its
instrumented `lines` (line number, count, branches, and the function the line belongs to). From
that: per-file and per-function totals of the scope's functions and the table printed at the end
of a run; the unexecuted line ranges of each function and uncovered.md, which quotes them with
the declaration (coverage-uncovered.yaml) that explains each; and, from one tracefile per test,
which tests execute a line (what mutation testing runs for a mutant on that line).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .declared import Declared, find_declared
from .scope import Scope, source_name

GcovrJson = Mapping[str, Any]
Ranges = dict[tuple[str, str], list[tuple[int, int]]]  # (file, function) -> [(first, last)]
Index = dict[str, dict[str, list[str]]]  # file -> line (a string: JSON keys) -> test node ids


@dataclass(frozen=True)
class FunctionCoverage:
    file: str
    function: str
    line: int  # where the definition starts
    lines_total: int
    lines_executed: int
    branches_total: int
    branches_taken: int
    called: bool


@dataclass(frozen=True)
class FileCoverage:
    file: str  # the scope's functions of it only, when the scope lists functions
    lines_total: int
    lines_executed: int
    branches_total: int
    branches_taken: int
    functions_total: int
    functions_called: int


def _files(data: GcovrJson, scope: Scope) -> Iterator[Mapping[str, Any]]:
    for file in sorted(data.get("files", []), key=lambda f: f["file"]):
        if scope.in_scope(file["file"]):
            yield file


def _lines(file: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    # lines gcovr excluded (markers, non-code) are not the tests' to execute
    for line in file.get("lines", []):
        if not line.get("gcovr/excluded") and not line.get("gcovr/noncode"):
            yield line


def _functions(file: Mapping[str, Any]) -> dict[str, tuple[int, bool]]:
    """Function (its source name) -> (first line, called); clones and repeats fold into one."""
    out: dict[str, tuple[int, bool]] = {}
    for fn in file.get("functions", []):
        name = source_name(fn.get("demangled_name") or fn["name"])
        line = fn.get("lineno") or (fn.get("pos") or [0])[0]
        called = (fn.get("execution_count") or 0) > 0
        first, was_called = out.get(name, (line, False))
        out[name] = (min(first, line), was_called or called)
    return out


def _function_lines(file: Mapping[str, Any]) -> dict[str | None, dict[int, list[int]]]:
    """Function -> line number -> [count, branches, branches taken] (repeats of a line added)."""
    out: dict[str | None, dict[int, list[int]]] = {}
    for line in _lines(file):
        name = line.get("function_name")
        key = source_name(name) if name else None
        branches = line.get("branches", [])
        taken = sum(1 for b in branches if b.get("count", 0) > 0)
        row = out.setdefault(key, {}).setdefault(line["line_number"], [0, 0, 0])
        row[0] += line.get("count", 0)
        row[1] = max(row[1], len(branches))
        row[2] = max(row[2], taken)
    return out


def summarize(data: GcovrJson, scope: Scope) -> tuple[tuple[FileCoverage, ...], tuple[FunctionCoverage, ...]]:
    """Totals per scope file and per scope function, files by path, functions by line."""
    files, functions = [], []
    for file in _files(data, scope):
        path = file["file"]
        meta = _functions(file)
        by_function = _function_lines(file)
        mine = []
        for name in {n for n in (*meta, *by_function) if n and scope.in_scope(path, n)}:
            rows = by_function.get(name, {})
            first, called = meta.get(name, (min(rows, default=0), False))
            totals = _totals(rows.values())
            mine.append(FunctionCoverage(path, name, first, *totals, called or totals[1] > 0))
        mine.sort(key=lambda f: (f.line, f.function))
        entry = scope.entry(path)
        # lines outside every function (rare in C) count for a whole-file entry only
        outside = _totals(by_function.get(None, {}).values()) if entry and entry.functions is None else (0, 0, 0, 0)
        lines, executed, branches, taken = (outside[i] + sum(_counts(f)[i] for f in mine) for i in range(4))
        files.append(FileCoverage(path, lines, executed, branches, taken, len(mine), sum(f.called for f in mine)))
        functions += mine
    return tuple(files), tuple(functions)


def _counts(f: FunctionCoverage) -> tuple[int, int, int, int]:
    return f.lines_total, f.lines_executed, f.branches_total, f.branches_taken


def _totals(rows: Iterable[list[int]]) -> tuple[int, int, int, int]:
    """(lines, executed, branches, taken) of [count, branches, taken] rows."""
    rows = list(rows)
    return len(rows), sum(1 for r in rows if r[0] > 0), sum(r[1] for r in rows), sum(r[2] for r in rows)


def not_built(data: GcovrJson, scope: Scope) -> dict[str, tuple[str, ...] | None]:
    """Scope files with no data (None: not compiled, or its notes were not found) and scope
    functions the compiler did not emit (an #ifdef'd or unused static function), per file."""
    present = {f["file"]: f for f in data.get("files", [])}
    out: dict[str, tuple[str, ...] | None] = {}
    for entry in scope.entries:
        if entry.path not in present:
            out[entry.path] = None
            continue
        emitted = set(_functions(present[entry.path])) | set(_function_lines(present[entry.path]))
        absent = tuple(name for name in entry.functions or () if name not in emitted)
        if absent:
            out[entry.path] = absent
    return out


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "     -"


def _short(part: int, whole: int) -> str:
    return f"{part}/{whole} ({_pct(part, whole).strip()})"


def _ratio(part: int, whole: int) -> str:
    return f"{part:>5}/{whole:<5} {_pct(part, whole)}"


def table_lines(
    files: Sequence[FileCoverage],
    functions: Sequence[FunctionCoverage],
    missing: Mapping[str, tuple[str, ...] | None] | None = None,
) -> list[str]:
    """The kernel coverage table for the end of a run: each file, then its functions."""
    width = max([len(f.file) for f in files] + [len(f.function) + 9 for f in functions] + [20])
    total = [sum(getattr(f, k) for f in files) for k in FileCoverage.__dataclass_fields__ if k != "file"]
    out = [
        f"kernel coverage of the scope: lines {_short(total[1], total[0])}, branches {_short(total[3], total[2])}, "
        f"functions called {total[5]}/{total[4]}",
        f"{'file / function':<{width}}  {'lines':<19}  {'branches':<19}  functions",
    ]
    for file in files:
        out.append(
            f"{file.file:<{width}}  {_ratio(file.lines_executed, file.lines_total)}  "
            f"{_ratio(file.branches_taken, file.branches_total)}  {file.functions_called}/{file.functions_total}"
        )
        for fn in (f for f in functions if f.file == file.file):
            name = f"  {fn.function}:{fn.line}"
            out.append(
                f"{name:<{width}}  {_ratio(fn.lines_executed, fn.lines_total)}  "
                f"{_ratio(fn.branches_taken, fn.branches_total)}  {'called' if fn.called else 'never called'}"
            )
    for path, names in sorted((missing or {}).items()):
        if names:  # static inline helpers land in their callers: their lines count there
            out.append(f"no code of its own (inlined, or not compiled in): {path}: {', '.join(names)}")
        else:
            out.append(f"not built: {path} (no notes or counters)")
    return out


def uncovered_ranges(data: GcovrJson, scope: Scope) -> Ranges:
    """Per scope function, its runs of unexecuted lines as (first, last): consecutive
    instrumented lines with count 0; lines with no code between them do not split a run."""
    out: Ranges = {}
    for file in _files(data, scope):
        for name, rows in sorted(_function_lines(file).items(), key=lambda kv: min(kv[1])):
            if name is None or not scope.in_scope(file["file"], name):
                continue
            runs: list[tuple[int, int]] = []
            start = last = None
            for number in sorted(rows):
                if rows[number][0] == 0:
                    start = number if start is None else start
                    last = number
                elif start is not None and last is not None:
                    runs.append((start, last))
                    start = last = None
            if start is not None and last is not None:
                runs.append((start, last))
            if runs:
                out[(file["file"], name)] = runs
    return out


def uncovered_markdown(ranges: Ranges, declared: Sequence[Declared], srctree: Path, max_quote: int = 12) -> str:
    """uncovered.md: every unexecuted range with its source and the declaration that explains it."""
    body: list[str] = []
    used: set[Declared] = set()
    counts = {"excused": 0, "not-yet": 0, "undeclared": 0}
    current = None
    for (path, function), runs in ranges.items():
        source = _source(srctree / path)
        if path != current:
            body += [f"## {path}", ""] + ([f"(source not found under {srctree})", ""] if source is None else [])
            current = path
        body += [f"### `{function}`", ""]
        for first, last in runs:
            quoted = (source or [])[first - 1 : last]
            decl = find_declared(declared, path, function, quoted)
            where = f"lines {first}-{last}" if last > first else f"line {first}"
            if decl is None:
                counts["undeclared"] += 1
                body.append(f"- {where}: **not declared**")
            else:
                used.add(decl)
                counts["excused" if decl.excuses else "not-yet"] += 1
                body.append(f"- {where}: declared `{decl.kind}` ({decl.where}): {decl.why}")
            if quoted:
                shown = [f"{first + i:>5}  {text.rstrip()}" for i, text in enumerate(quoted[:max_quote])]
                more = [f"       ... {len(quoted) - max_quote} more lines"] if len(quoted) > max_quote else []
                body += ["", "  ```c", *[f"  {line}" for line in shown + more], "  ```"]
            body.append("")
    total = sum(counts.values())
    head = [
        "# Unexecuted code in the coverage scope",
        "",
        f"{total} unexecuted ranges in {len(ranges)} functions: {counts['undeclared']} not declared, "
        f"{counts['not-yet']} declared not-yet (a missing case), {counts['excused']} excused "
        "(needs-hardware, dead-config, fault-injection-only).",
        "",
    ]
    stale = [d for d in declared if d not in used]
    if stale:
        body += [
            "## Declarations that match no unexecuted range",
            "",
            "Now executed, or the code they quote changed:",
            "",
        ]
        body += [f"- {d.where}: {d.file} `{d.function}`" + (f" match {d.match!r}" if d.match else "") for d in stale]
        body.append("")
    return "\n".join(head + body).rstrip() + "\n"


def _source(path: Path) -> list[str] | None:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return None


def index(per_test: Mapping[str, GcovrJson]) -> Index:
    """file -> line -> the tests whose counters executed it, from one tracefile per test. Every
    line gcov counts is a key (an empty list: no test executed it), so a line that is not a key
    is one gcov does not count on its own (folded into a line before it)."""
    out: Index = {}
    for test in sorted(per_test):
        for file in per_test[test].get("files", []):
            for line in _lines(file):
                tests = out.setdefault(file["file"], {}).setdefault(str(line["line_number"]), [])
                if line.get("count", 0) > 0:
                    if not tests or tests[-1] != test:  # a line repeated in one tracefile counts once
                        tests.append(test)
    return {path: dict(sorted(lines.items(), key=lambda kv: int(kv[0]))) for path, lines in sorted(out.items())}


def tests_for(idx: Index, path: str, first: int, last: int) -> tuple[str, ...]:
    """The tests that execute any line of path's first..last."""
    lines = idx.get(path, {})
    return tuple(sorted({test for number in range(first, last + 1) for test in lines.get(str(number), ())}))
