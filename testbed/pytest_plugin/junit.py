"""The run's own facts in the JUnit file: which kernel, config set, base fixes, QEMU and
accelerator ran, and the digest of every machine the tests ran on.

xunit2 (pytest's default family, and the schema pytest validates its own output against)
allows <properties> in a <testsuite> only, never in a <testcase>: these are suite properties,
added on the process that writes the file (the xdist controller), and the per-test facts
(which VM, lock checking) stay in run.json. A fingerprint property names the copy of the
machine's fingerprint beside run.json, relative to it, so it resolves inside an artifact.
"""

from __future__ import annotations

import logging

import pytest
from _pytest.junitxml import xml_key  # LogXML: its add_global_property is what record_testsuite_property calls

from ..runs.record import BootRecord, RunRecord
from ..vm.qemu import qemu_version

log = logging.getLogger(__name__)


def suite_properties(record: RunRecord, qemu: str) -> list[tuple[str, str]]:
    """(name, value) pairs, each distinct pair once, in boot order; a name repeats when the run
    booted several kernels or machines."""
    pairs = [("qemu", qemu or "unknown")]
    for boot in record.boots:
        pairs += _boot_properties(boot)
    return list(dict.fromkeys(pairs))


def _boot_properties(boot: BootRecord) -> list[tuple[str, str]]:
    kernel = boot.kernel
    pairs = [("accel", boot.accel)]
    if kernel:
        fixes = [str(f.get("name")) for f in _listed(kernel.get("base_fixes")) if isinstance(f, dict)]
        pairs += [
            ("kernel_release", str(kernel.get("release") or "unknown")),
            ("kernel_config", boot.kernel_config or str(kernel.get("config_set") or "unknown")),
            ("kernel_key", str(kernel.get("key") or "unknown")),
            ("base_fixes", ", ".join(fixes) or "none"),
        ]
        patches = _listed(kernel.get("patches"))
        if patches:
            pairs.append(("kernel_patches", ", ".join(map(str, patches))))
    else:
        pairs.append(("kernel", boot.bzimage))  # a user's bzImage, no manifest
    if boot.fingerprint_digest:
        pairs.append(("fingerprint", f"{boot.topology} {boot.fingerprint_digest} {boot.fingerprint}"))
    return pairs


def _listed(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def add_suite_properties(config: pytest.Config, record: RunRecord) -> None:
    """Into the JUnit file pytest is about to write (--junitxml); nothing without one."""
    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    for name, value in suite_properties(record, qemu_version()):
        xml.add_global_property(name, value)
    log.debug("%d suite properties for %s", len(xml.global_properties), xml.logfile)
