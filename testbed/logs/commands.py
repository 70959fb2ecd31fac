"""`testbed scan-log FILE...`: the harness's splat detector over saved console logs.

Each report is printed with its signature (kind + what + where, stable across runs) and
repeats of one signature are counted under it. Splats the base kernel is known to print
(known-splats.yaml, matched against the release in the log's boot banner) are marked
`known` and do not set the exit status unless --strict. `--json` prints the same as one
JSON document, for scripts and `testbed ab`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..paths import KNOWN_SPLATS_FILE
from .known import KnownSplat, console_splats, load_known
from .splat import Splat


@dataclass(frozen=True)
class Finding:
    log: Path
    splat: Splat
    known: KnownSplat | None

    def as_json(self) -> dict[str, object]:
        return {
            "log": str(self.log),
            "lines": [self.splat.first_line, self.splat.last_line],
            "kind": str(self.splat.kind),
            "signature": self.splat.signature,
            "title": self.splat.title,
            "known": self.known.where if self.known else None,
        }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan-log", help="find kernel splats in saved console logs; exit 1 on any not in known-splats.yaml"
    )
    p.add_argument("logs", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--excerpt", action="store_true", help="print each splat's excerpt too")
    p.add_argument("--json", action="store_true", help="print one JSON document: every splat and a count per signature")
    p.add_argument("--strict", action="store_true", help="known base-kernel splats (known-splats.yaml) count too")
    p.add_argument(
        "--known-splats",
        type=Path,
        default=KNOWN_SPLATS_FILE,
        metavar="FILE",
        help="the known-splats file (default: %(default)s)",
    )
    p.set_defaults(func=_scan)


def scan_files(logs: list[Path], known: tuple[KnownSplat, ...]) -> list[Finding]:
    findings = []
    for path in logs:
        if not path.is_file():
            raise ConfigError(f"no such log file: {path}")
        lines = path.read_text(errors="replace").splitlines()
        findings += [Finding(path, s, k) for s, k in console_splats(lines, known)]
    return findings


def counts(findings: list[Finding]) -> dict[str, int]:
    """Reports per signature, in order of first appearance."""
    out: dict[str, int] = {}
    for f in findings:
        out[f.splat.signature] = out.get(f.splat.signature, 0) + 1
    return out


def _scan(args: argparse.Namespace) -> int:
    known = load_known(args.known_splats)
    findings = scan_files(args.logs, known)
    failing = [f for f in findings if f.known is None or args.strict]
    if args.json:
        doc = {
            "logs": [str(p) for p in args.logs],
            "splats": [f.as_json() for f in findings],
            "signatures": [
                {"signature": sig, "count": n, "known": any(f.known for f in findings if f.splat.signature == sig)}
                for sig, n in counts(findings).items()
            ],
            "failing": len(failing),
        }
        print(json.dumps(doc, indent=2))
        return 1 if failing else 0
    for f in findings:
        tag = f" [known: {f.known.where}]" if f.known else ""
        print(f"{f.log}:{f.splat.first_line}-{f.splat.last_line}: {f.splat.signature}{tag}")
        if args.excerpt:
            print("    " + f.splat.excerpt.replace("\n", "\n    "))
    if not findings:
        print(f"no splats in {len(args.logs)} log{'s' if len(args.logs) != 1 else ''}")
        return 0
    print("signatures:")
    for sig, n in counts(findings).items():
        print(f"  {n:4d}  {sig}")
    if not failing:
        print(f"all {len(findings)} splats are known in {args.known_splats.name} (--strict counts them)")
    return 1 if failing else 0
