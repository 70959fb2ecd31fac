"""The JUnit files are valid xunit2 (pytest's default family; tests/unit/data/junit-xunit2.xsd
is its grammar) and carry the run's kernel, QEMU, accelerator and fingerprints as suite
properties: pytest's own file written with the plugin, and the matrix merge of recorded cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import etree

from testbed.pytest_plugin.junit import suite_properties
from testbed.report.cells import find_cells
from testbed.report.merge import merged_junit
from testbed.runs.record import BootRecord, RunRecord

SCHEMA = Path(__file__).resolve().parent / "data" / "junit-xunit2.xsd"
CELLS = Path(__file__).resolve().parent.parent / "logs" / "cells"
KERNEL = {
    "key": "6f1c",
    "release": "7.2.13-testbed",
    "config_set": "default",
    "patches": [],
    "base_fixes": [{"name": "0001-iommu-dma-x.patch", "why": "..."}],
}


def _valid(path_or_tree: Path | ET.ElementTree) -> None:
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    doc = (
        etree.parse(str(path_or_tree))
        if isinstance(path_or_tree, Path)
        else etree.fromstring(ET.tostring(path_or_tree.getroot())).getroottree()
    )
    if not schema.validate(doc):
        raise AssertionError(f"not xunit2: {schema.error_log}")


def _boot(vm: str, digest: str | None, config: str = "default") -> BootRecord:
    return BootRecord(
        "two-switch", vm, "/c/kernel/6f1c/bzImage", KERNEL, "tcg", f"fingerprints/{vm}.json", config, digest
    )


def test_properties_name_kernel_qemu_accel_and_every_machine_once():
    record = RunRecord(boots=[_boot("vm1", "aaa"), _boot("vm2", "aaa"), _boot("vm3", "bbb", "debug-full")])
    props = suite_properties(record, "QEMU emulator version 7.2.19")
    assert props[0] == ("qemu", "QEMU emulator version 7.2.19")
    assert ("kernel_release", "7.2.13-testbed") in props and ("accel", "tcg") in props
    assert ("base_fixes", "0001-iommu-dma-x.patch") in props
    assert [v for n, v in props if n == "kernel_config"] == ["default", "debug-full"]
    assert [v for n, v in props if n == "fingerprint"] == [
        "two-switch aaa fingerprints/vm1.json",
        "two-switch aaa fingerprints/vm2.json",
        "two-switch bbb fingerprints/vm3.json",
    ]
    assert len(props) == len(set(props))


def test_a_users_bzimage_without_manifest_is_named_by_its_path():
    boot = BootRecord("acs", "vm1", "/home/u/linux/arch/x86/boot/bzImage", {}, "kvm")
    props = suite_properties(RunRecord(boots=[boot]), "")
    assert ("kernel", "/home/u/linux/arch/x86/boot/bzImage") in props and ("qemu", "unknown") in props


def test_pytests_file_with_the_plugin_is_xunit2_with_suite_properties(tmp_path: Path):
    """A real pytest run (the plugin loads from its entry point) that passes, fails, errors,
    skips and xfails, and has booted one VM as far as run.json is concerned."""
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from testbed.runs.record import BootRecord
            from testbed.pytest_plugin.state import state_of

            def pytest_sessionstart(session):
                kernel = {"key": "k1", "release": "7.2.13-testbed", "config_set": "default", "patches": []}
                boot = BootRecord("acs", "vm1", "/c/bzImage", kernel, "tcg", "fingerprints/vm1.json", None, "d1")
                state_of(session.config).record.boots.append(boot)

            @pytest.fixture
            def broken():
                raise RuntimeError("setup")
            """
        )
    )
    (tmp_path / "test_some.py").write_text(
        textwrap.dedent(
            """
            import pytest

            def test_pass():
                pass

            def test_fail():
                assert 0

            def test_error(broken):
                pass

            def test_skip():
                pytest.skip("why")

            @pytest.mark.xfail(strict=True, reason="known")
            def test_xfail():
                assert 0
            """
        )
    )
    junit = tmp_path / "junit.xml"
    env = os.environ | {"TESTBED_RESULTS": str(tmp_path / "results")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}", "test_some.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    _valid(junit)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["kernel_release"] == "7.2.13-testbed" and props["accel"] == "tcg"
    assert props["fingerprint"] == "acs d1 fingerprints/vm1.json"
    assert "qemu" in props
    assert not list(suite.iter("testcase"))[0].findall("properties")
    (run,) = (tmp_path / "results").glob("pytest/*/run.json")  # the per-test facts went here
    facts = json.loads(run.read_text())["tests"]
    assert facts["test_some.py::test_pass"] == {"path": "testbed.test_some.test_pass"}
    assert facts["test_some.py::test_xfail"]["xfail"] == "known"


def test_the_merge_of_recorded_cells_is_xunit2():
    """The recorded cells come from an older run that wrote per-case properties: the merge
    drops them (run.json keeps the facts) and keeps every case."""
    cells = find_cells([CELLS])
    had = sum(len(c.junit.findall(".//testcase/properties")) for c in cells if c.junit is not None)
    tree = merged_junit(cells)
    assert had and not tree.getroot().findall(".//testcase/properties")
    _valid(tree)


def test_the_schema_rejects_per_case_properties(tmp_path: Path):
    bad = tmp_path / "bad.xml"
    bad.write_text(
        '<testsuites><testsuite name="s" tests="1" failures="0" errors="0">'
        '<testcase name="t"><properties><property name="a" value="b"/></properties></testcase>'
        "</testsuite></testsuites>"
    )
    with pytest.raises(AssertionError, match="not xunit2"):
        _valid(bad)
