"""The end-of-run census table: the probe's kernel answers against the oracle's."""

from __future__ import annotations

from testbed.pytest_plugin.report import CensusRow, CensusTable


def _table() -> CensusTable:
    table = CensusTable()
    table.add(CensusRow("two-switch", "map", "nvme0", "nvme1", "BUS_ADDR 4", "BUS_ADDR 4", "same switch"))
    table.add(
        CensusRow("two-switch", "map", "nvme0", "nvme2", "THRU_HOST_BRIDGE 8", "NOT_SUPPORTED -1", "no common bridge")
    )
    table.add(CensusRow("vfio-dmabuf", "branch", "shm0", "edu0", "NOT_SUPPORTED/none", "NOT_SUPPORTED/none", "q35"))
    return table


def test_summary_counts_answers_topologies_and_disagreements():
    assert _table().summary() == "3 kernel answers on 2 topologies, 1 disagree with testbed explain"


def test_only_disagreements_are_listed_with_both_answers_and_the_reason():
    (line,) = _table().disagreements()
    assert "nvme0->nvme2" in line and "kernel THRU_HOST_BRIDGE 8" in line and "explain NOT_SUPPORTED -1" in line
    assert "(no common bridge)" in line


def test_tsv_has_every_row_and_marks_disagreement(tmp_path):
    path = tmp_path / "census.tsv"
    _table().write_tsv(path)
    rows = path.read_text().splitlines()
    assert rows[0].split("\t")[:7] == ["topology", "part", "provider", "client", "kernel", "expected", "agrees"]
    assert [r.split("\t")[6] for r in rows[1:]] == ["yes", "NO", "yes"]
