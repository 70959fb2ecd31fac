"""`testbed kernel build` and `testbed kernel path`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import ensure_kernel, find_cached, refresh_debian_source
from .configsets import CONFIG_SETS


def _inputs(parser: argparse.ArgumentParser) -> None:
    # --kernel-config as everywhere else (boot, run, pytest); --config-set kept as an alias
    parser.add_argument(
        "--kernel-config",
        "--config-set",
        dest="config_set",
        default="default",
        choices=sorted(CONFIG_SETS),
        help="fragments of kernel-configs/ to merge (default: %(default)s)",
    )
    parser.add_argument(
        "--ksrc",
        type=Path,
        metavar="DIR",
        help="your kernel tree (built out of tree, never modified); default: Debian's linux-source package",
    )
    parser.add_argument(
        "--patches",
        type=Path,
        metavar="PATH",
        help="an mbox (as b4 writes it) or a directory of *.patch files, applied in a worktree",
    )
    parser.add_argument(
        "--no-base-fixes",
        dest="base_fixes",
        action="store_const",
        const=False,
        default=None,
        help="leave out the base fixes of kernel-configs/base-fixes/ (same as TESTBED_BASE_FIXES=0)",
    )


def _progress(message: str) -> None:
    print(message, flush=True)  # seen live even when stdout is a CI log file


def _build(args: argparse.Namespace) -> int:
    if args.refresh and args.ksrc is None:
        refresh_debian_source(_progress)
    art = ensure_kernel(args.config_set, args.ksrc, args.patches, _progress, base_fixes=args.base_fixes)
    print(art.bzimage)
    return 0


def _path(args: argparse.Namespace) -> int:
    art = find_cached(args.config_set, args.ksrc, args.patches, base_fixes=args.base_fixes)
    if art is None:
        print("testbed: no kernel built for these inputs; run 'testbed kernel build'", file=sys.stderr)
        return 1
    print(art.bzimage)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    kernel = subparsers.add_parser("kernel", help="build and locate guest kernels")
    sub = kernel.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build (or reuse) a kernel; prints the bzImage path")
    _inputs(build)
    build.add_argument("--refresh", action="store_true", help="check the Debian mirror for a newer linux-source first")
    build.set_defaults(func=_build)
    path = sub.add_parser("path", help="print the cached bzImage path for these inputs (exit 1 if not built)")
    _inputs(path)
    path.set_defaults(func=_path)
