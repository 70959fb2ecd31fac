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


class GuestHung(InfraError):
    """The guest stopped running (its vCPUs idle for good while QEMU runs): a wait for it is
    cut short instead of running to its deadline."""


class GuestError(TestbedError):
    """The guest or its kernel misbehaved: that is the thing under test. Never retried."""

    exit_code = 4


INTERRUPTED = 130  # Ctrl-C, as a shell reports a SIGINT death
# `testbed --help` and the README print this table
EXIT_CODES = (
    (0, "success: the command did what it says, every result green"),
    (1, "a red result: tests or cells failed, new splats, a WORSE side of `ab` (the command itself worked)"),
    (
        ConfigError.exit_code,
        "bad input: option, topology, path, series; nothing was started (argparse's usage errors too)",
    ),
    (InfraError.exit_code, "the machinery failed: QEMU, a build tool, a download, a timeout; worth a retry"),
    (GuestError.exit_code, "the guest or its kernel misbehaved outside what a test judges"),
    (INTERRUPTED, "interrupted (SIGINT); SIGTERM ends a command with 143 after stopping its VMs"),
)
