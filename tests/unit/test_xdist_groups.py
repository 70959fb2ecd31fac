"""pytest -n 2 --dist loadgroup keeps a topology's tests on one worker (its VMs are shared
there, its warm spares used). This broke silently once: pytest 9.2 with pytest-xdist 3.8 split
every group and booted each topology's VM on both workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SUITE = """\
import pytest
from testbed.topology.needs import ANY

@pytest.fixture
def fresh_vm():  # stands in for the plugin's: no VM boots here, the order is what is looked at
    pytest.skip("a destructive test's place in the order")

@pytest.mark.topology("two-switch", "acs", "root-ports", needs=ANY)
def test_destructive(testbed_topology, fresh_vm):
    pass

def _cases(topo, config):
    return [("x", 1), ("y", 2)]

@pytest.mark.topology("two-switch", "acs", "root-ports", needs=ANY, cases=_cases)
def test_cased(testbed_topology, topology_case):  # its topology parameter is function-scoped
    pass

@pytest.mark.topology("two-switch", "acs", "root-ports", needs=ANY)
@pytest.mark.parametrize("n", range(4))
def test_grouped(testbed_topology, n):
    pass
"""


def test_a_topologys_tests_run_on_one_worker(tmp_path: Path):
    (tmp_path / "test_groups.py").write_text(SUITE)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-n", "2", "--dist", "loadgroup",
         "--results-dir", str(tmp_path / "r")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "CI": "false"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers: dict[str, set[str]] = {}
    for worker, topology in re.findall(r"\[(gw\d)\] .*PASSED .*test_grouped\[([a-z-]+?)-\d\]", proc.stdout):
        workers.setdefault(topology, set()).add(worker)
    assert sorted(workers) == ["acs", "root-ports", "two-switch"], proc.stdout
    split = {t: w for t, w in workers.items() if len(w) > 1}
    assert not split, f"topology groups split across workers: {split}"
    # collected first, run last in its topology: its VM boots as a spare beside the others
    # (pytest's own reordering by the session-scoped parameter puts the cased tests, whose
    # topology parameter is function-scoped, after the others: the order is made after it)
    ran = re.findall(r"(?:PASSED|SKIPPED) .*::(test_\w+)\[([a-z-]+?)(?:-\d|-x|-y)?\]", proc.stdout)
    for topology in workers:
        order = [name for name, t in ran if t == topology]
        assert sorted(order[:-1]) == ["test_cased"] * 2 + ["test_grouped"] * 4, (topology, order)
        assert order[-1] == "test_destructive", (topology, order)
