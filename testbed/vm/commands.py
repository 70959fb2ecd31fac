"""`testbed boot|run|ssh|accel`: launch a topology, use it, tear it down."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..kernel.request import add_options as add_kernel_options
from ..kernel.request import from_options as kernel_request
from .accel import ACCELS, resolve_accel
from .qemu import QEMU_ENV
from .qemu import choose as choose_qemu
from .qemu import probe as probe_qemu
from .ssh import SSH, host_key_of, known_hosts_file, ssh_client_argv

if TYPE_CHECKING:
    from .launch import LaunchPlan
    from .machine import Machine


def _progress(message: str) -> None:
    print(f"testbed: {message}", file=sys.stderr, flush=True)


def _launch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", metavar="TOPO", help="topology name (topologies/NAME.yaml) or path")
    p.add_argument(
        "--accel",
        choices=ACCELS,
        default=None,
        help="accelerator (default: $ACCEL, else auto: KVM if a probe guest runs)",
    )
    add_kernel_options(p.add_argument)  # as for testbed kernel, kselftest, ab and pytest
    add_qemu_option(p)
    p.add_argument(
        "--append", action="append", default=[], metavar="ARG", help="extra kernel command-line argument (repeatable)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    boot = sub.add_parser("boot", help="boot a topology and open a shell in the guest")
    _launch_options(boot)
    boot.add_argument(
        "--dry-run", action="store_true", help="print the exact QEMU command and exit (builds kernel/image if needed)"
    )
    boot.add_argument(
        "--paused", action="store_true", help="stop QEMU before the firmware runs (-S); resume with QMP cont"
    )
    boot.set_defaults(func=cmd_boot)

    run = sub.add_parser("run", help="boot a topology, run a command in the guest, shut down")
    _launch_options(run)
    run.add_argument(
        "--timeout", type=float, default=None, help="seconds the command may take (default: scaled for the accelerator)"
    )
    # the guest command after `--` reaches us as args.guest_command (split off in cli.main)
    run.set_defaults(func=cmd_run)

    ssh = sub.add_parser("ssh", help="attach to a running VM (started by boot or a test run)")
    ssh.add_argument("name", nargs="?", metavar="NAME", help="VM name (default: the only one running)")
    ssh.set_defaults(func=cmd_ssh)

    accel = sub.add_parser("accel", help="which accelerator auto picks here, and why; the QEMU and its features")
    accel.add_argument("--accel", choices=ACCELS, default=None)
    add_qemu_option(accel)
    accel.set_defaults(func=cmd_accel)


def add_qemu_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--qemu",
        default=None,
        metavar="distro|built|PATH",
        help="the QEMU to run: the host's (distro, the default), the testbed's build (built: switch ACS "
        f"and P2P routed inside switches; built if missing) or a binary (default: ${QEMU_ENV} or distro)",
    )
    p.add_argument(
        "--qemu-patches",
        type=Path,
        default=None,
        metavar="SERIES",
        help="with --qemu built: your QEMU patches after the testbed's (a patch, an mbox or a directory)",
    )


def _plan(args: argparse.Namespace, paused: bool = False) -> LaunchPlan:
    from .launch import plan_launch  # pulls in kernel/image/render only when launching

    kernel = kernel_request(lambda name: getattr(args, name))
    choose_qemu(args.qemu, args.qemu_patches)
    return plan_launch(args.topology, args.accel, kernel, tuple(args.append), paused, _progress)


def _say_launched(vm: Machine, plan: LaunchPlan) -> None:
    _progress(f"{vm.name}: QEMU pid {vm.process.pid}, QMP {plan.runtime.qmp_socket}, console {vm.console_log}")


@contextlib.contextmanager
def _guest_up(args: argparse.Namespace, plan: LaunchPlan) -> Iterator[tuple[Machine, SSH]]:
    """The launched guest with SSH up. A boot that stalled (BootStalled: under TCG a vCPU
    starved of host CPU, or a boot that lost a wakeup) is launched once more, as the test pool
    does, and said; a second stall is the error."""
    from .machine import BootStalled  # with the launch's modules, not for every testbed command

    for attempt in (1, 2):
        with plan.machine() as vm:
            _say_launched(vm, plan)
            _progress(f"waiting for SSH on port {vm.ssh_port} (up to {vm.timeouts.boot_to_ssh:.0f}s)")
            try:
                ssh = vm.wait_ssh()
            except BootStalled as exc:
                if attempt == 2:
                    raise
                _progress(f"{str(exc).splitlines()[0]}; booting it once more")
            else:
                yield vm, ssh
                return
        plan = _plan(args)


def cmd_boot(args: argparse.Namespace) -> int:
    plan = _plan(args, paused=args.paused)
    if args.dry_run:
        print(shlex.join(plan.argv))
        return 0
    if args.paused:
        with plan.machine() as vm:
            _say_launched(vm, plan)
            _progress(
                f"paused before the firmware; resume with QMP cont on "
                f"{plan.runtime.qmp_socket}, then: testbed ssh {vm.name}"
            )
            _progress("press Enter to shut the VM down")
            sys.stdin.readline()
            return 0
    with _guest_up(args, plan) as (vm, ssh):
        _progress(
            f"guest up in {vm.ssh_ready_seconds:.1f}s; from another terminal: "
            f"{shlex.join(ssh_client_argv(ssh.port, ssh.key, known_hosts=_known_hosts(ssh.key)))}  "
            f"(or testbed ssh {vm.name})"
        )
        _progress("leaving this shell shuts the VM down")
        ssh.interactive_shell()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cmd = list(getattr(args, "guest_command", []))
    if not cmd:
        raise ConfigError("testbed run: give the guest command after --, e.g. testbed run two-switch -- lspci -tv")
    with _guest_up(args, _plan(args)) as (vm, _):
        _progress(f"guest up in {vm.ssh_ready_seconds:.1f}s; running: {shlex.join(cmd)}")
        # one argument is taken as a shell line ("dmesg | grep p2p"), several as argv
        result = vm.run(cmd[0] if len(cmd) == 1 else cmd, timeout=args.timeout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.status


def cmd_ssh(args: argparse.Namespace) -> int:
    from .registry import find

    name, cmd = args.name, list(getattr(args, "guest_command", []))
    vm = find(name)
    return SSH(vm.ssh_port, Path(vm.ssh_key)).interactive_shell(cmd)


def cmd_accel(args: argparse.Namespace) -> int:
    decision = resolve_accel(args.accel)
    print(decision.reason)
    choose_qemu(args.qemu, args.qemu_patches)
    qemu = probe_qemu()
    print(f"qemu: {qemu.describe()}")
    print(f"qemu features: {qemu.features.describe()}")
    return 0


def _known_hosts(login_key: Path) -> Path | None:
    from ..paths import runtime_dir

    pub = host_key_of(login_key)
    return known_hosts_file(pub, runtime_dir()) if pub is not None else None
