"""Fixtures shared by the unit and VM suites."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture
def require_qemu() -> str:
    """The QEMU binary; under CI a missing QEMU fails the test instead of skipping it."""
    path = shutil.which("qemu-system-x86_64")
    if path is None or shutil.which("qemu-img") is None:
        message = "qemu-system-x86_64/qemu-img not installed (make deps installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
