"""`testbed scan-log FILE...`: the harness's splat detector over saved console logs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .splat import scan_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan-log", help="find kernel splats in saved console logs; exit 1 if any")
    p.add_argument("logs", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--excerpt", action="store_true", help="print each splat's excerpt too")
    p.set_defaults(func=_scan)


def _scan(args: argparse.Namespace) -> int:
    found = 0
    for path in args.logs:
        if not path.is_file():
            raise ConfigError(f"no such log file: {path}")
        for splat in scan_text(path.read_text(errors="replace")):
            found += 1
            print(f"{path}:{splat.first_line}-{splat.last_line}: {splat.kind}: {splat.title}")
            if args.excerpt:
                print("    " + splat.excerpt.replace("\n", "\n    "))
    if not found:
        print(f"no splats in {len(args.logs)} log{'s' if len(args.logs) != 1 else ''}")
    return 1 if found else 0
