"""The README's timing table is generated from bench/figures.json (what the bench scripts
printed), never typed: the block in README.md must equal the rendering of the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.report import timing

ROOT = Path(__file__).resolve().parents[2]
BOOT = {
    "bench": "boot", "topology": "two-switch", "kernel_config": "default", "append": [], "runs": 5,
    "bare_s": 1.4, "ready_s": 3.1, "ratio": 2.21, "phases_s": {"kernel": 0.8, "agent": 0.55},
}  # fmt: skip


def test_the_readme_table_is_the_rendering_of_the_recorded_figures():
    readme = (ROOT / "README.md").read_text()
    figures = timing.load(ROOT / "bench" / "figures.json")
    assert figures, "bench/figures.json holds no figures"
    assert timing.block(readme) == timing.render(figures), "README.md's timing table was edited by hand: bench/table"


def test_a_new_figure_replaces_the_one_it_measures_again():
    newer = {**BOOT, "ready_s": 2.9}
    other = {**BOOT, "kernel_config": "debug"}
    merged = timing.merge([BOOT, other], [newer])
    assert [r["ready_s"] for r in merged] == [3.1, 2.9]
    assert [r["kernel_config"] for r in merged] == ["debug", "default"]


def test_rows_say_their_machine_when_the_table_has_several():
    one = timing.render([{**BOOT, "machine": "2 cores (A)", "measured_on": "2026-12-01"}])
    assert "Measured on: 2 cores (A)." in one and "| 2026-12-01 |" in one
    two = timing.render(
        [
            {**BOOT, "machine": "2 cores (A)", "measured_on": "2026-12-01"},
            {**BOOT, "kernel_config": "debug", "machine": "2 cores (B)", "measured_on": "2026-12-02"},
        ]
    )
    assert "Measured on: (a) 2 cores (A); (b) 2 cores (B)." in two
    assert "| 2026-12-01 (a) |" in two and "| 2026-12-02 (b) |" in two


def test_bench_output_lines_are_read_and_other_lines_ignored():
    text = 'run 1: bare 1.4 s\n{"bench": "suites", "suite": "unit", "jobs": 1}\n{"not": "a figure"}\n'
    assert timing.read_lines(text) == [{"bench": "suites", "suite": "unit", "jobs": 1}]


def test_update_replaces_only_the_block_and_needs_its_markers():
    readme = f"head\n{timing.BEGIN}\nold\n{timing.END}\ntail\n"
    table = timing.render([BOOT])
    assert timing.update(readme, table) == f"head\n{table}\ntail\n"
    assert "ratio 2.21" in table and "1.40 s / 3.10 s" in table
    with pytest.raises(ValueError, match="exactly one"):
        timing.update("no markers", table)
