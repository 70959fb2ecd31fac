"""run.json: outcomes folded over setup/call/teardown, splats and boots recorded."""

from __future__ import annotations

import json
import subprocess
import sys

from testbed.logs import scan_text
from testbed.runs.record import RunRecord, SplatRecord

from .test_splat import LOGS


def test_the_worst_phase_is_the_outcome():
    r = RunRecord()
    r.outcome("t::a", "setup", "passed", False)
    r.outcome("t::a", "call", "passed", False)
    r.outcome("t::a", "teardown", "failed", False)  # a splat fails the test in teardown
    r.outcome("t::b", "setup", "failed", False)
    r.outcome("t::c", "setup", "skipped", False)
    r.outcome("t::d", "call", "skipped", True)
    r.outcome("t::e", "call", "passed", True)
    r.outcome("t::f", "call", "passed", False)
    r.outcome("t::f", "teardown", "passed", False)
    assert r.outcomes == {
        "t::a": "failed",
        "t::b": "error",
        "t::c": "skipped",
        "t::d": "xfailed",
        "t::e": "xpassed",
        "t::f": "passed",
    }


def test_written_record_round_trips(tmp_path):
    r = RunRecord()
    r.outcome("t::a", "call", "passed", False)
    (splat,) = scan_text((LOGS / "splats" / "kasan-uaf.log").read_text())
    r.splats.append(SplatRecord.of(splat, "t::a", None, tmp_path / "console.log"))
    kernel_dir = tmp_path / "k"
    kernel_dir.mkdir()
    (kernel_dir / "manifest.json").write_text(json.dumps({"key": "abc", "release": "7.2.13-testbed", "x": 1}))
    r.boot("two-switch", "two-switch-1", kernel_dir / "bzImage", "tcg", kernel_config="debug-full")
    doc = json.loads(r.write(tmp_path / "run").read_text())
    assert doc["boots"][0]["kernel_config"] == "debug-full"
    assert doc["outcomes"] == {"t::a": "passed"}
    assert doc["splats"][0]["signature"] == "KASAN: slab-use-after-free Read in pci_p2pdma_map_type"
    assert doc["splats"][0]["known"] is None
    assert doc["boots"][0]["kernel"]["release"] == "7.2.13-testbed" and "x" not in doc["boots"][0]["kernel"]


def test_a_pass_without_lock_checking_is_not_a_plain_pass():
    import pytest

    from testbed.pytest_plugin.plugin import pytest_report_teststatus

    def report(when: str, outcome: str = "passed") -> pytest.TestReport:
        return pytest.TestReport("t::a", ("t.py", 1, "a"), {}, outcome, None, when)

    teardown = report("teardown")
    assert pytest_report_teststatus(teardown, None) is None  # lock-checked: nothing to add
    teardown.testbed_unchecked = "lockdep was already off when the test began"
    assert pytest_report_teststatus(teardown, None) == ("not lock-checked", "U", ("NOT LOCK-CHECKED", {"yellow": True}))
    failed = report("teardown", "failed")
    failed.testbed_unchecked = "x"
    assert pytest_report_teststatus(failed, None) is None  # a failure stays a failure


def test_xdist_group_suffix_is_not_part_of_a_test():
    from testbed.runs.record import plain

    assert plain("t.py::a[two-switch]@two-switch") == "t.py::a[two-switch]"
    assert plain("t.py::a[kselftest-vfio_x@nvme0-case]@kselftest") == "t.py::a[kselftest-vfio_x@nvme0-case]"
    assert plain("t.py::a[kselftest-vfio_x@nvme0-case]") == "t.py::a[kselftest-vfio_x@nvme0-case]"
    assert plain("t.py::plain") == "t.py::plain"


INFRA_TESTS = """
from testbed.errors import GuestError, InfraError


def test_machinery():
    raise InfraError("QEMU exited during boot")


def test_kernel():
    raise GuestError("the guest said no")


def test_assertion():
    assert False
"""


def test_a_failure_of_the_machinery_is_recorded_as_such(tmp_path):
    """run.json says which failures were the machinery's (testbed ab calls them inconclusive);
    a guest's or an assertion's failure is the kernel's verdict."""
    (tmp_path / "test_x.py").write_text(INFRA_TESTS)
    results = tmp_path / "results"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--results-dir",
            str(results),
            "-k",
            "not nothing",
            "test_x.py",
        ],  # fmt: skip
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    doc = json.loads((results / "run.json").read_text())
    assert doc["selection"] == ["test_x.py", "-k", "not nothing"]  # what chose the tests, no more
    assert set(doc["outcomes"].values()) == {"failed"}
    infra = {nodeid: facts.get("infra") for nodeid, facts in doc["tests"].items()}
    assert infra == {
        "test_x.py::test_machinery": "InfraError: QEMU exited during boot",
        "test_x.py::test_kernel": None,
        "test_x.py::test_assertion": None,
    }
