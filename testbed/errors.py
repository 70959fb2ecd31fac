"""Typed errors: whose fault it is decides what the user sees and whether we retry."""

from __future__ import annotations


class TestbedError(Exception):
    """Base of every error the testbed raises on purpose."""

    __test__ = False  # not a pytest test class despite the name
    exit_code = 1


class ConfigError(TestbedError):
    """The user's input is wrong (topology, option, path). Never retried."""

    exit_code = 2


class InfraError(TestbedError):
    """The machinery failed (QEMU, a download, a build tool, a timeout). Worth a retry."""

    exit_code = 3


class GuestError(TestbedError):
    """The guest or its kernel misbehaved: that is the thing under test. Never retried."""

    exit_code = 4
