import argparse

import pytest

from testbed.cli import parse_args
from testbed.vm import commands


@pytest.fixture
def parser():
    p = argparse.ArgumentParser(prog="testbed")
    commands.register(p.add_subparsers(dest="command", required=True))
    return p


def test_boot_options(parser):
    a = parser.parse_args(
        [
            "boot",
            "two-switch",
            "--accel",
            "tcg",
            "--kernel-config",
            "debug",
            "--dry-run",
            "--append",
            "nvme.use_cmb_sqes=0",
        ]
    )
    assert (a.topology, a.accel, a.kernel_config, a.dry_run) == ("two-switch", "tcg", "debug", True)
    assert a.append == ["nvme.use_cmb_sqes=0"] and a.func is commands.cmd_boot


def test_run_takes_the_command_after_dashes():
    a = parse_args(["run", "single-switch", "--accel", "tcg", "--", "lspci", "-tv"])
    assert (a.topology, a.accel, a.guest_command) == ("single-switch", "tcg", ["lspci", "-tv"])


def test_run_without_command_is_a_config_error():
    from testbed.errors import ConfigError

    a = parse_args(["run", "single-switch"])
    with pytest.raises(ConfigError, match="after --"):
        commands.cmd_run(a)


@pytest.mark.parametrize(
    "argv,want",
    [
        ([], (None, [])),
        (["vm1"], ("vm1", [])),
        (["vm1", "--", "dmesg", "-w"], ("vm1", ["dmesg", "-w"])),
        (["--", "uname", "-r"], (None, ["uname", "-r"])),
    ],
)
def test_ssh_name_optional(argv, want):
    a = parse_args(["ssh", *argv])
    assert (a.name, a.guest_command) == want


def test_bad_accel_rejected(parser):
    with pytest.raises(SystemExit):
        parser.parse_args(["boot", "x", "--accel", "xen"])
