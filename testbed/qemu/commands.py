"""`testbed qemu build|path|show`: the testbed's own QEMU."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from ..kernel.patches import Patch
from .build import build_key, cached_build, ensure_qemu, qemu_root, testbed_series, user_series
from .source import QEMU_SERIES, pinned_source


def _progress(line: str) -> None:
    # stdout carries only the result, so `$(testbed qemu build)` is the binary's path
    print(line, file=sys.stderr, flush=True)


def _extra(args: argparse.Namespace) -> tuple[Patch, ...]:
    return user_series(Path(args.qemu_patches)) if args.qemu_patches else ()


def _build(args: argparse.Namespace) -> int:
    built = ensure_qemu(_extra(args), progress=_progress, offline_ok=not args.refresh)
    print(built.binary)
    return 0


def _path(args: argparse.Namespace) -> int:
    source = pinned_source(qemu_root())
    found = cached_build(build_key(source, (*testbed_series(), *_extra(args)))) if source else None
    if found is None:
        raise ConfigError("the testbed's QEMU for these patches is not built; run `testbed qemu build`")
    print(json.dumps(found.manifest, indent=2) if args.manifest else found.binary)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "qemu",
        help=f"the testbed's own QEMU (Debian's {QEMU_SERIES}.x source + qemu/patches): build it, find it",
        description="Debian's qemu source of the pinned series, Debian's patches and the testbed's "
        "(qemu/patches: switch ACS, P2P routed inside switches), built for x86_64 only and cached "
        "by content. `--qemu built` on testbed and pytest runs VMs on it.",
    )
    actions = parser.add_subparsers(dest="qemu_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("build", _build, "build (or reuse) it; prints the binary's path"),
        ("path", _path, "print the binary's path (or its manifest); fails when it is not built"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--qemu-patches",
            metavar="SERIES",
            help="more QEMU patches after the testbed's: a patch, an mbox (b4's rules, as --patches) or a "
            "directory of *.patch; part of the cache key",
        )
        if name == "build":
            action.add_argument(
                "--refresh", action="store_true", help="ask the mirror for a newer Debian revision first"
            )
        else:
            action.add_argument("--manifest", action="store_true", help="print the build's manifest (JSON)")
        action.set_defaults(func=func)
