"""Entry point registered in pyproject (`pytest11`): options, markers, VM fixtures, splat checks.

pytest -m p2p                       the P2P suite on the topologies each test names
pytest -m hotunplug --kernel-config debug
pytest --topology two-switch-iommu  only tests that can run there, only there
pytest --kernel ~/linux/arch/x86/boot/bzImage   your own build (or a source tree)
pytest --strict-splats              splats of the base kernel (known-splats.yaml) fail too
pytest -m p2p --coverage            kernel coverage of the scope's code, per test (results/.../coverage/)

pytest finds the hooks and fixtures by their names on this module; each lives in the module of
its job: options.py (options, markers, the run's state), collection.py (which test runs on
which topology, in which order), fixtures.py (VMs, roles, tables, the kernel window),
judge.py (a window's findings -> the problems that fail a test), reporting.py (per-test
reports and artifacts), summary.py (the end of the run).
"""

from __future__ import annotations

from .collection import pytest_collection_modifyitems, pytest_generate_tests
from .fixtures import (
    _kernel_window,
    census_table,
    fresh_vm,
    kernel_bug,
    kernel_messages,
    known_splats,
    kselftest_session,
    require_qemu,
    roles,
    testbed_pool,
    testbed_results,
    testbed_topology,
    verdict_table,
    vm,
)
from .options import pytest_addoption, pytest_configure
from .reporting import pytest_report_teststatus, pytest_runtest_makereport
from .summary import pytest_sessionfinish, pytest_terminal_summary

__all__ = [
    "_kernel_window",
    "census_table",
    "fresh_vm",
    "kernel_bug",
    "kernel_messages",
    "known_splats",
    "kselftest_session",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_report_teststatus",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "require_qemu",
    "roles",
    "testbed_pool",
    "testbed_results",
    "testbed_topology",
    "verdict_table",
    "vm",
]
