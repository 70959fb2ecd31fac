"""The guest's gcov helper: every .gcda under debugfs's gcov tree, then the counters zeroed.
Run on a directory laid out as the kernel lays out /sys/kernel/debug/gcov."""

from __future__ import annotations

import base64
import importlib
import sys
from pathlib import Path

import pytest

AGENT_DIR = Path(__file__).resolve().parents[2] / "testbed" / "in_guest"


@pytest.fixture
def gcov(monkeypatch, tmp_path: Path):
    monkeypatch.syspath_prepend(str(AGENT_DIR))
    module = importlib.import_module("gcov")
    monkeypatch.setattr(module, "GCOV", str(tmp_path / "gcov"))
    yield module
    sys.modules.pop("gcov", None)


def test_a_kernel_without_gcov_has_nothing_and_resets_nothing(gcov):
    assert gcov.snapshot({}) == {"ok": True, "present": False, "files": {}}
    assert gcov.reset({}) == {"ok": True, "present": False}


def test_snapshot_takes_every_gcda_then_resets(gcov, tmp_path: Path):
    build = tmp_path / "gcov" / "root" / "builds" / "b" / "drivers" / "pci"
    build.mkdir(parents=True)
    (build / "p2pdma.gcda").write_bytes(b"\x00gcda")
    (build / "p2pdma.gcno").write_text("a link to the notes in the build directory")
    (tmp_path / "gcov" / "reset").write_text("")
    answer = gcov.snapshot({})
    assert answer["present"] is True
    assert list(answer["files"]) == ["root/builds/b/drivers/pci/p2pdma.gcda"]
    assert base64.b64decode(answer["files"]["root/builds/b/drivers/pci/p2pdma.gcda"]) == b"\x00gcda"
    assert (tmp_path / "gcov" / "reset").read_text() == "1"
