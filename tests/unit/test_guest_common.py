"""common.py's pieces that stand in for an import a boot's first calls should not pay for."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "in_guest"))
import common  # noqa: E402  (in-guest helpers: modules of their own directory)


@pytest.mark.parametrize(
    "name",
    ["nvme0n1", "nvme12n3", "nvme0c0n1", "nvme0n1p1", "nvme0", "nvmen1", "nvme0n", "nvme0n1n2", "sda", "nvme٣n1", "x"],
)
def test_a_namespace_name_is_what_the_pattern_it_replaces_matched(name):
    assert common._is_namespace(name) == bool(re.match(r"^nvme\d+n\d+$", name))


def test_late_import_imports_under_the_agents_guard(monkeypatch):
    held = []

    class Guard:
        def __enter__(self):
            held.append(True)

        def __exit__(self, *exc):
            held.append(False)

    monkeypatch.setattr(common, "IMPORT_GUARD", Guard())
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    assert common.late_import("colorsys").__name__ == "colorsys"
    assert held == [True, False]
    assert common.late_import("colorsys") is sys.modules["colorsys"]
    assert held == [True, False]  # loaded: a lookup, no guard taken


def test_late_import_without_an_agent_imports_as_usual(monkeypatch):
    monkeypatch.setattr(common, "IMPORT_GUARD", None)
    assert common.late_import("re") is re
    assert common.late_import("threading") is threading
