"""`testbed` command line: each area registers its own subcommands; errors map to exit codes."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from .children import Terminated, raise_terminated
from .errors import EXIT_CODES, INTERRUPTED, TestbedError

# Each module exposes `register(subparsers)` adding its subcommands; a subcommand sets
# `func(args) -> int` with `set_defaults`. Kept as names so `testbed --help` stays cheap.
COMMAND_MODULES = (
    "testbed.topology.commands",
    "testbed.render.commands",
    "testbed.kernel.commands",
    "testbed.image.commands",
    "testbed.qemu.commands",
    "testbed.vm.commands",
    "testbed.logs.commands",
    "testbed.kselftest.commands",
    "testbed.ab.commands",
    "testbed.ab.bisect",
    "testbed.matrix.commands",
    "testbed.report.commands",
    "testbed.cache.commands",
    "testbed.coverage.commands",
    "testbed.mutate.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testbed",
        description="Emulated PCIe peer-to-peer DMA testbed: topologies, kernels, guest images, VMs.",
        epilog="exit codes:\n" + "\n".join(f"  {code:<4}{meaning}" for code, meaning in EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Everything after the first `--` is a guest command (`testbed run TOPO -- CMD`), split off
    before argparse, which mangles `--` inside subcommands."""
    after: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, after = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.guest_command = after
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    signal.signal(signal.SIGTERM, raise_terminated)  # unwind: VMs stopped, children told (children.py)
    try:
        return int(args.func(args) or 0)
    except TestbedError as exc:
        print(f"testbed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Terminated:
        print("testbed: terminated", file=sys.stderr)
        return Terminated.exit_code
    except BrokenPipeError:
        # the reader went (`testbed coverage scope | head`): as a shell tool does, quietly; the
        # interpreter's own flush of stdout at exit would raise again, so it goes to /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
