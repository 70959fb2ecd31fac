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


class _FakeMachine:
    """What cmd_run uses of a Machine; wait_ssh stalls as the plan says."""

    def __init__(self, name: str, stalls: bool, shut: list[str]) -> None:
        self.name, self.stalls, self.shut = name, stalls, shut
        self.process = argparse.Namespace(pid=1)
        self.console_log = f"/tmp/{name}/console.log"
        self.ssh_port = 2222
        self.timeouts = argparse.Namespace(boot_to_ssh=180.0)
        self.ssh_ready_seconds = 2.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shut.append(self.name)

    def wait_ssh(self):
        from testbed.vm import BootStalled

        if self.stalls:
            raise BootStalled(f"{self.name}: the guest stalled while booting (no console line ...)\nconsole tail")
        return object()

    def run(self, cmd, timeout=None):
        return argparse.Namespace(stdout=f"ran {cmd} on {self.name}\n", stderr="", status=0)


def _stalling_plans(monkeypatch, stalls: list[bool]) -> tuple[list[str], list[str]]:
    """cmd_run over plans whose boots stall as `stalls` says; (progress lines, VMs shut down)."""
    said: list[str] = []
    shut: list[str] = []
    names = iter(f"two-switch-{n}" for n in range(1, 10))

    def plan(args, paused=False):
        machine = _FakeMachine(next(names), stalls.pop(0), shut)
        return argparse.Namespace(machine=lambda: machine, runtime=argparse.Namespace(qmp_socket="/tmp/qmp"))

    monkeypatch.setattr(commands, "_plan", plan)
    monkeypatch.setattr(commands, "_progress", said.append)
    return said, shut


def test_run_boots_a_stalled_guest_once_more_and_says_so(monkeypatch, capsys):
    said, shut = _stalling_plans(monkeypatch, [True, False])
    assert commands.cmd_run(parse_args(["run", "two-switch", "--", "uname -r"])) == 0
    assert capsys.readouterr().out == "ran uname -r on two-switch-2\n"
    assert "two-switch-1: the guest stalled while booting (no console line ...); booting it once more" in said
    assert shut == ["two-switch-1", "two-switch-2"]


def test_a_second_stall_is_the_error(monkeypatch):
    from testbed.vm import BootStalled

    _, shut = _stalling_plans(monkeypatch, [True, True])
    with pytest.raises(BootStalled, match="two-switch-2: the guest stalled"):
        commands.cmd_run(parse_args(["run", "two-switch", "--", "uname -r"]))
    assert shut == ["two-switch-1", "two-switch-2"]
