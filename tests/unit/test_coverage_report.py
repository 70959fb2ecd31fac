"""Coverage reports from gcovr JSON, and the declared uncovered ranges.

The recorded fixtures are real gcovr 8 tracefiles (gcov-12) of tests/fixtures/coverage/src/
drivers/x/foo.c built like kbuild builds (see test_coverage_gcovr.py): run 1 is `foo 4 0` (a
bus-address map, no failure), run 2 is `foo -1 1 1` (not supported, the unwind taken). Small
synthetic dicts cover what the tiny program cannot show.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from testbed.coverage import report
from testbed.coverage.declared import (
    DECLARED_FILE,
    KINDS,
    Declared,
    DeclaredUncoveredError,
    find_declared,
    load_declared,
)
from testbed.coverage.scope import Scope, ScopeEntry, load_scope

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "coverage"
SRC = FIXTURES / "src"
FOO = "drivers/x/foo.c"


def _json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _scope(functions: tuple[str, ...] | None = None, path: str = FOO) -> Scope:
    return Scope(Path("scope.yaml"), (ScopeEntry(path, "why", functions, "scope.yaml:2"),))


RUN1, RUN2 = _json("gcovr-run1.json"), _json("gcovr-run2.json")


def test_summarize_a_whole_file():
    files, functions = report.summarize(RUN1, _scope())
    assert [(f.function, f.line, f.called) for f in functions] == [
        ("map_type", 11, True),
        ("map_ranges", 20, True),
        ("never_called", 39, False),
        ("main", 44, True),
    ]
    map_ranges = functions[1]
    assert (map_ranges.lines_total, map_ranges.lines_executed) == (11, 6)
    assert (map_ranges.branches_total, map_ranges.branches_taken) == (6, 3)
    (foo,) = files
    assert (foo.lines_total, foo.lines_executed, foo.functions_total, foo.functions_called) == (27, 17, 4, 3)
    assert (foo.branches_total, foo.branches_taken) == (18, 9)


def test_summarize_counts_only_the_listed_functions():
    files, functions = report.summarize(RUN2, _scope(("map_ranges", "never_called")))
    assert [f.function for f in functions] == ["map_ranges", "never_called"]
    (foo,) = files
    assert (foo.lines_total, foo.lines_executed) == (13, 10)  # 11 + 2 lines, 10 run in run 2
    assert (foo.functions_total, foo.functions_called) == (2, 1)


def test_summarize_ignores_files_out_of_scope():
    assert report.summarize(RUN1, _scope(path="drivers/pci/p2pdma.c")) == ((), ())


def test_table_lists_files_then_their_functions():
    files, functions = report.summarize(RUN1, _scope())
    lines = report.table_lines(files, functions, {"drivers/pci/remove.c": None, FOO: ("gone",)})
    assert lines[0] == "kernel coverage of the scope: lines 17/27 (63.0%), branches 9/18 (50.0%), functions called 3/4"
    assert re.match(r"drivers/x/foo.c\s+17/27\s+63.0%\s+9/18\s+50.0%\s+3/4$", lines[2])
    assert re.match(r"  never_called:39\s+0/2\s+0.0%\s+0/0\s+-\s+never called$", lines[5])
    assert lines[-2:] == [
        "not built: drivers/pci/remove.c (no notes or counters)",
        "no code of its own (inlined, or not compiled in): drivers/x/foo.c: gone",
    ]


def test_not_built_names_missing_files_and_functions():
    scope = Scope(
        Path("s.yaml"),
        (
            ScopeEntry(FOO, "w", ("map_type", "dma_iova_link"), "s:1"),
            ScopeEntry("drivers/pci/remove.c", "w", None, "s:3"),
        ),
    )
    assert report.not_built(RUN1, scope) == {FOO: ("dma_iova_link",), "drivers/pci/remove.c": None}


def test_uncovered_ranges_of_a_real_run():
    assert report.uncovered_ranges(RUN1, _scope()) == {
        (FOO, "map_type"): [(14, 14), (17, 17)],
        # the comment and the blank line inside the unwind (32, 35) do not split it
        (FOO, "map_ranges"): [(26, 26), (31, 36)],
        (FOO, "never_called"): [(39, 41)],
        (FOO, "main"): [(52, 52)],
    }
    assert report.uncovered_ranges(RUN2, _scope(("map_ranges",))) == {(FOO, "map_ranges"): [(29, 29)]}


def _synthetic(lines: list[tuple[int, int, str]], functions: list[dict] | None = None) -> dict:
    return {
        "files": [
            {
                "file": FOO,
                "functions": functions or [],
                "lines": [{"line_number": n, "count": c, "function_name": f, "branches": []} for n, c, f in lines],
            }
        ]
    }


def test_ranges_end_at_an_executed_line_and_span_gaps():
    data = _synthetic([(10, 1, "f"), (12, 0, "f"), (15, 0, "f"), (16, 3, "f"), (20, 0, "f"), (30, 0, "g")])
    assert report.uncovered_ranges(data, _scope()) == {(FOO, "f"): [(12, 15), (20, 20)], (FOO, "g"): [(30, 30)]}


def test_a_line_repeated_in_one_function_adds_its_counts():
    data = _synthetic([(10, 0, "f"), (10, 2, "f"), (11, 0, "f")])
    assert report.uncovered_ranges(data, _scope()) == {(FOO, "f"): [(11, 11)]}


def test_excluded_lines_and_compiler_clones():
    data = _synthetic([(10, 0, "f.part.0"), (11, 0, "f")], [{"name": "f.part.0", "lineno": 9, "execution_count": 0}])
    data["files"][0]["lines"][1]["gcovr/excluded"] = True
    files, functions = report.summarize(data, _scope(("f",)))
    assert [(f.function, f.line, f.lines_total, f.called) for f in functions] == [("f", 9, 1, False)]
    assert report.uncovered_ranges(data, _scope(("f",))) == {(FOO, "f"): [(10, 10)]}


def test_uncovered_markdown_quotes_the_source_and_the_declaration():
    ranges = report.uncovered_ranges(RUN1, _scope())
    declared = (
        Declared(FOO, "map_ranges", "err_unmap:", "the unwind needs a failing map", "fault-injection-only", "u.yaml:3"),
        Declared(FOO, "never_called", None, "a case is missing", "not-yet", "u.yaml:8"),
        Declared(FOO, "map_type", "/MAP_BUS_ADDR;$/", "executed in every run", "dead-config", "u.yaml:12"),
    )
    text = report.uncovered_markdown(ranges, declared, SRC)
    assert text.startswith("# Unexecuted code in the coverage scope\n\n")
    assert "6 unexecuted ranges in 4 functions: 4 not declared," in text
    assert "1 declared not-yet (a missing case), 1 excused" in text
    assert "- lines 31-36: declared `fault-injection-only` (u.yaml:3): the unwind needs a failing map" in text
    assert "     33  \twhile (mapped--)" in text
    assert "- line 26: **not declared**" in text
    assert "- lines 39-41: declared `not-yet` (u.yaml:8): a case is missing" in text
    stale = text.split("## Declarations that match no unexecuted range")[1]
    assert "u.yaml:12: drivers/x/foo.c `map_type` match '/MAP_BUS_ADDR;$/'" in stale
    assert "u.yaml:3" not in stale


def test_uncovered_markdown_shortens_long_ranges_and_survives_a_missing_source(tmp_path):
    ranges = {(FOO, "f"): [(1, 30)]}
    text = report.uncovered_markdown(ranges, (), SRC, max_quote=5)
    assert "... 25 more lines" in text
    text = report.uncovered_markdown(ranges, (Declared(FOO, "f", "x", "w", "not-yet", "u:1"),), tmp_path)
    assert "(source not found under" in text and "- lines 1-30: **not declared**" in text


def test_index_names_the_tests_that_execute_each_line():
    idx = report.index({"tests/vm/test_b.py::test_unwind": RUN2, "tests/vm/test_a.py::test_map": RUN1})
    lines = idx[FOO]
    assert lines["26"] == ["tests/vm/test_b.py::test_unwind"]  # the goto: only the failing run
    assert lines["16"] == ["tests/vm/test_a.py::test_map"]  # the bus-address return
    assert lines["13"] == ["tests/vm/test_a.py::test_map", "tests/vm/test_b.py::test_unwind"]
    assert lines["41"] == [] and lines["17"] == []  # counted by gcov, never executed
    assert list(lines) == sorted(lines, key=int)
    assert report.tests_for(idx, FOO, 14, 16) == ("tests/vm/test_a.py::test_map", "tests/vm/test_b.py::test_unwind")
    assert report.tests_for(idx, FOO, 39, 41) == ()
    assert report.tests_for(idx, "drivers/pci/p2pdma.c", 1, 100) == ()
    json.dumps(idx)  # the mutation tester reads it back from a file


# --- declared uncovered ranges (coverage-uncovered.yaml) ---


def test_the_shipped_declarations_load_and_name_scope_functions():
    declared = load_declared(DECLARED_FILE)
    scope = load_scope()
    recorded = {tuple(line.split()) for line in (FIXTURES / "scope-functions-7.2.13.txt").read_text().splitlines()}
    for d in declared:
        assert scope.in_scope(d.file, d.function), d.where
        assert (d.file, d.function) in recorded, d.where
        assert d.kind in KINDS


def test_declaration_matching():
    sub = Declared(FOO, "f", "goto err_unmap", "w", "not-yet", "u:1")
    rx = Declared(FOO, "f", r"/^\s+return -\d+;/", "w", "not-yet", "u:2")
    whole = Declared(FOO, "g", None, "w", "dead-config", "u:3")
    assert sub.covers(FOO, "f", ["\t\t\tgoto err_unmap;"]) and not sub.covers(FOO, "f", ["\treturn -1;"])
    assert rx.covers(FOO, "f", ["x", "\treturn -1;"]) and not rx.covers(FOO, "f", ["return -1;"])
    assert whole.covers(FOO, "g", []) and not whole.covers(FOO, "f", [])
    assert not sub.covers("drivers/y.c", "f", ["goto err_unmap"])
    assert find_declared((sub, rx, whole), FOO, "f", ["\treturn -1;"]) is rx
    assert whole.excuses and not sub.excuses


def _load(tmp_path: Path, text: str) -> tuple[Declared, ...]:
    path = tmp_path / "uncovered.yaml"
    path.write_text(text)
    return load_declared(path)


def test_an_empty_list_is_fine(tmp_path):
    assert _load(tmp_path, "# nothing yet\nuncovered:\n") == ()
    assert _load(tmp_path, "uncovered: []\n") == ()


ENTRY = "uncovered:\n  - file: drivers/x/foo.c\n    function: f\n    why: w\n    kind: not-yet\n"


def test_a_good_entry(tmp_path):
    (d,) = _load(tmp_path, ENTRY + "    match: '/goto err_\\w+/'\n")
    assert (d.file, d.function, d.kind, d.where) == (FOO, "f", "not-yet", "uncovered.yaml:2")
    assert d.match == "/goto err_\\w+/"


@pytest.mark.parametrize(
    "text, expected",
    [
        (ENTRY + "    colour: red\n", r"uncovered.yaml:6: uncovered\[0\].colour: unknown key \(allowed: file, "),
        (ENTRY.replace("    why: w\n", ""), r"uncovered.yaml:2: uncovered\[0\]: missing 'why'"),
        (ENTRY.replace("not-yet", "later"), r"uncovered\[0\].kind: 'later' is not a kind \(allowed: needs-hardware, "),
        (ENTRY.replace("foo.c", "foo.h"), r"uncovered\[0\].file: 'drivers/x/foo.h' is not a kernel-relative .c path"),
        (ENTRY.replace("function: f", "function: f()"), r"uncovered\[0\].function: 'f\(\)' is not a C function name"),
        (ENTRY.replace("why: w", "why: ''"), r"uncovered\[0\].why: must say why"),
        (ENTRY + "    match: '/(unclosed/'\n", r"uncovered\[0\].match: '/\(unclosed/' is not a substring or a /regex/"),
        ("uncovered: {file: x}\n", r"uncovered.yaml:1: uncovered: must be a list of entries"),
        ("known: []\n", r"uncovered.yaml:1: known: unknown key \(allowed: uncovered\)"),
        ("uncovered:\n  - just a string\n", r"uncovered\[0\]: must be a mapping"),
        ("- a list\n", r"must be a mapping with 'uncovered:'"),
    ],
)
def test_bad_declarations_say_where_and_what(tmp_path, text, expected):
    with pytest.raises(DeclaredUncoveredError) as err:
        _load(tmp_path, text)
    assert re.search(expected, str(err.value)), str(err.value)
    assert "in the declared uncovered ranges" in str(err.value)
