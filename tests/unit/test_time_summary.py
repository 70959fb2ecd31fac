"""The end of the run says where the time went: per test file, boots, fresh-VM waits."""

from __future__ import annotations

from testbed.pytest_plugin.pool import FreshWait
from testbed.pytest_plugin.timing import time_lines


def test_files_longest_first_then_boots_and_waits():
    durations = {
        "tests/unit/test_a.py::t1": 0.5,
        "tests/unit/test_a.py::t2": 0.5,
        "tests/vm/test_p2p.py::x[two-switch]": 30.0,
        "tests/vm/test_kselftest.py::k[a]": 10.0,
        "tests/vm/test_kselftest.py::k[b]": 12.0,
    }
    lines = time_lines(durations, [("two-switch", 3.0), ("acs", 5.0)], [FreshWait("acs", 4.0, "spare")], top=2)
    assert lines[0] == "test time, all workers: 53 s in 5 tests"
    assert lines[1].endswith("tests/vm/test_p2p.py") and "57 %" in lines[1]
    assert lines[2].endswith("tests/vm/test_kselftest.py") and "2 tests" in lines[2]
    assert lines[3].endswith("1 other files") and "1.0 s" in lines[3]
    assert lines[4].startswith("VM boots to ready: 2, 8 s in all, median 4.0 s")
    assert lines[5] == "destructive tests waited 4 s for VMs of their own (1 tests)"


def test_nothing_ran_nothing_said():
    assert time_lines({}, [], []) == []
