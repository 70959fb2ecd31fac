"""`testbed scan-log FILE...`: the harness's splat detector over saved console logs.

Splats the base kernel is known to print (known-splats.yaml, matched against the release in
the log's boot banner) are marked `known` and do not set the exit status unless --strict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..paths import KNOWN_SPLATS_FILE
from .known import find_known, kernel_release, load_known
from .splat import scan_lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan-log", help="find kernel splats in saved console logs; exit 1 on any not in known-splats.yaml"
    )
    p.add_argument("logs", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--excerpt", action="store_true", help="print each splat's excerpt too")
    p.add_argument("--strict", action="store_true", help="known base-kernel splats (known-splats.yaml) count too")
    p.add_argument(
        "--known-splats",
        type=Path,
        default=KNOWN_SPLATS_FILE,
        metavar="FILE",
        help="the known-splats file (default: %(default)s)",
    )
    p.set_defaults(func=_scan)


def _scan(args: argparse.Namespace) -> int:
    known = load_known(args.known_splats)
    found = failing = 0
    for path in args.logs:
        if not path.is_file():
            raise ConfigError(f"no such log file: {path}")
        lines = path.read_text(errors="replace").splitlines()
        release = kernel_release(lines)
        for splat in scan_lines(lines):
            found += 1
            entry = find_known(splat, release, known)
            failing += entry is None or args.strict
            tag = f" [known: {entry.where}]" if entry else ""
            print(f"{path}:{splat.first_line}-{splat.last_line}: {splat.kind}: {splat.title}{tag}")
            if args.excerpt:
                print("    " + splat.excerpt.replace("\n", "\n    "))
    if not found:
        print(f"no splats in {len(args.logs)} log{'s' if len(args.logs) != 1 else ''}")
    elif not failing:
        print(f"all {found} splats are known in {args.known_splats.name} (--strict counts them)")
    return 1 if failing else 0
