"""Declared equivalent mutants: the file's checks and matching by the original line."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.mutate.equivalents import EQUIVALENTS_FILE, find_equivalent, load_equivalents
from testbed.mutate.generate import Mutant

ENTRY = """equivalents:
  - path: drivers/pci/p2pdma.c
    function: pci_p2pdma_bus_addr_map
    operator: drop-call
    match: "state->bus_off"
    why: bus and CPU addresses are the same on q35
"""


def _mutant(removed: str, operator: str = "drop-call") -> Mutant:
    patch = f"Subject: x\n---\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,3 +1,2 @@\n ctx\n-{removed}\n ctx\n"
    fields = {
        "id": "m1", "path": "drivers/pci/p2pdma.c", "function": "pci_p2pdma_bus_addr_map", "operator": operator,
        "first_line": 2, "last_line": 2, "description": "d", "patch": patch, "replacement": (),
    }  # fmt: skip
    return Mutant(**fields)


def test_the_shipped_file_loads():
    load_equivalents(EQUIVALENTS_FILE)


def test_an_entry_matches_by_operator_and_original_text(tmp_path: Path):
    f = tmp_path / "eq.yaml"
    f.write_text(ENTRY)
    declared = load_equivalents(f)
    assert find_equivalent(_mutant("\tx = state->bus_off;"), declared) is declared[0]
    assert find_equivalent(_mutant("\ty = 1;"), declared) is None
    assert find_equivalent(_mutant("\tx = state->bus_off;", "negate-if"), declared) is None


def test_a_bad_entry_names_its_line(tmp_path: Path):
    f = tmp_path / "eq.yaml"
    f.write_text(ENTRY.replace("    why: bus and CPU addresses are the same on q35\n", ""))
    with pytest.raises(ConfigError, match=r"eq.yaml:2: an entry has exactly the fields"):
        load_equivalents(f)


def test_every_shipped_declaration_matches_a_mutant_of_the_recorded_sources():
    from testbed.mutate.generate import mutants_of

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "mutate"
    for e in load_equivalents(EQUIVALENTS_FILE):
        source = fixtures / e.path
        if not source.is_file():
            continue  # a file the unit tests keep no copy of
        mutants = mutants_of(e.path, source.read_text(), [e.function])
        assert any(find_equivalent(m, (e,)) is e for m in mutants), f"{e.where} matches no mutant"
