"""`testbed render TOPO`: the exact QEMU command line of a topology, shell-quoted."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..topology import load_topology
from . import preview_runtime, render_argv


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="print the QEMU command line of a topology, shell-quoted")
    p.add_argument("topology", metavar="TOPO")
    p.add_argument("--accel", choices=("tcg", "kvm"), default="tcg")
    p.add_argument("--kernel", type=Path, help="bzImage path to show (default: a BZIMAGE placeholder)")
    p.add_argument("--one-per-line", action="store_true", help="one argument per line, for diffs")
    p.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    topo = load_topology(args.topology)
    runtime = preview_runtime(args.accel)
    if args.kernel:
        runtime = type(runtime)(**{**runtime.__dict__, "kernel": args.kernel.resolve()})
    argv = render_argv(topo, runtime)
    print("\n".join(argv) if args.one_per_line else shlex.join(argv))
    return 0
