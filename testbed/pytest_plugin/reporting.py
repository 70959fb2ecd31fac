"""Per-test reports: a pass that was not lock-checked shows as such, and a failed VM test
carries its artifacts (console excerpt, QEMU command, QMP events, dmesg)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from . import artifacts
from .collection import TOPOLOGY_KEY
from .fixtures import INFRA_KEY, UNCHECKED_KEY, VM_KEY, WINDOW_KEY, not_the_kernels
from .kernelci import own_test_path
from .state import state_of


def _kernelci_path(item: pytest.Item, topology: str | None) -> str:
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("topology_case") if callspec is not None else None
    path = getattr(case, "kernelci_path", None)  # a kselftest or KUnit case
    return path if isinstance(path, str) else own_test_path(item.nodeid, topology)


def pytest_report_teststatus(
    report: pytest.TestReport, config: pytest.Config
) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    """A test that passed with part of it not lock-checked is not a plain pass: its teardown
    reports "NOT LOCK-CHECKED" (U), counted in the final line, listed in the summary."""
    if report.when == "teardown" and report.passed and getattr(report, "testbed_unchecked", None):
        return "not lock-checked", "U", ("NOT LOCK-CHECKED", {"yellow": True})
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    # report attributes cross xdist: the setup report (every test has one, a test skipped there
    # has no call) carries the facts for run.json, the call report what counts a VM test as run
    topology = item.stash.get(TOPOLOGY_KEY, None)
    if report.when in ("setup", "call"):
        report.testbed_topology = topology
    if report.when == "setup":
        report.testbed_path = _kernelci_path(item, topology)
    if report.when == "teardown" and UNCHECKED_KEY in item.stash:
        report.testbed_unchecked = item.stash[UNCHECKED_KEY]
    if report.failed:  # the machinery's or the input's failure, not the kernel's (testbed ab)
        infra = item.stash.get(INFRA_KEY, None) or (not_the_kernels(call.excinfo.value) if call.excinfo else None)
        if infra:
            report.testbed_infra = infra
    guest = item.stash.get(VM_KEY, None)
    if not report.failed or guest is None or report.when == "setup" and call.excinfo is None:
        return
    dest = artifacts.test_dir(state_of(item.config).results, item.nodeid)
    written = artifacts.collect(guest, dest, item.stash.get(WINDOW_KEY, None))
    report.sections.append(("testbed artifacts", f"{dest}\n  " + "\n  ".join(written)))
