"""`testbed kernel build` and `testbed kernel path`."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from .build import find_cached, refresh_debian_source
from .request import KernelRequest, add_options, from_options


def _inputs(parser: argparse.ArgumentParser) -> None:
    add_options(parser.add_argument)  # as everywhere else: boot, run, kselftest, ab, pytest


def _request(args: argparse.Namespace) -> KernelRequest:
    req = from_options(lambda name: getattr(args, name))
    if req.bzimage is not None:
        raise ConfigError(f"--kernel {req.bzimage} is built already; give a tree (--kernel TREE or --ksrc TREE)")
    return req


def _progress(message: str) -> None:
    print(message, flush=True)  # seen live even when stdout is a CI log file


def _build(args: argparse.Namespace) -> int:
    req = _request(args)
    if args.refresh and req.ksrc is None:
        refresh_debian_source(_progress)
    art = req.artifact(_progress)
    print(art.bzimage)
    return 0


def _path(args: argparse.Namespace) -> int:
    req = _request(args)
    art = find_cached(req.config_set, req.ksrc, req.patches, req.base_fixes, req.coverage_scope)
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
