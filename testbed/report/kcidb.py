"""The matrix's results as KCIDB JSON (the KernelCI reporting schema), validated with the
kcidb-io package before it is written: a checkout per source + series, a build per kernel
(cache key), a test per cell and test."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ..errors import ConfigError
from .cells import CellResults

ORIGIN = "p2p_testbed"  # KCIDB origins are [a-z0-9_]
STATUS = {
    "passed": "PASS",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "SKIP",
    "xfailed": "PASS",  # the declared emulation limit showed as declared (misc says xfailed)
    "xpassed": "FAIL",  # strict xfail: a limit that vanished is a failure
}


def _id(*parts: str) -> str:
    return f"{ORIGIN}:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def path_of(nodeid: str) -> str:
    """A KCIDB test path: dot-separated words ("tests/vm/test_p2p.py::t[x-y]" ->
    "testbed.test_p2p.t.x-y")."""
    file, _, rest = nodeid.partition("::")
    module = file.rsplit("/", 1)[-1].removesuffix(".py")
    name, _, param = rest.partition("[")
    words = ["testbed", module, name] + ([param.rstrip("]")] if param else [])
    return ".".join(re.sub(r"[^A-Za-z0-9_\-]+", "_", w) for w in words)


def kcidb(cells: list[CellResults]) -> dict[str, Any]:
    checkouts: dict[str, dict[str, Any]] = {}
    builds: dict[str, dict[str, Any]] = {}
    tests = []
    for cell in cells:
        boots = _boots(cell)
        kernel = boots[0] if boots else {}
        source = str(kernel.get("source_tree") or "debian linux-source")
        patches = [str(p) for p in (kernel.get("patches") or [])]
        checkout_id = _id("checkout", source, *patches)
        checkouts.setdefault(
            checkout_id,
            {"id": checkout_id, "origin": ORIGIN, "tree_name": source, "patchset_files": [
                {"name": p, "url": f"file:///{p}"} for p in patches
            ], "valid": True},
        )  # fmt: skip
        build_id = _id("build", str(kernel.get("key") or cell.id))
        builds.setdefault(
            build_id,
            {
                "id": build_id,
                "checkout_id": checkout_id,
                "origin": ORIGIN,
                "architecture": "x86_64",
                "config_name": str(kernel.get("config_set") or cell.cell.get("config") or "default"),
                "status": "PASS",
                "misc": {"kernel_key": kernel.get("key"), "release": kernel.get("release")},
            },
        )
        for nodeid, outcome in sorted(cell.run.outcomes.items()):
            tests.append(
                {
                    "id": _id("test", cell.id, nodeid),
                    "build_id": build_id,
                    "origin": ORIGIN,
                    "path": path_of(nodeid),
                    "status": STATUS[outcome],
                    "environment": {"comment": f"cell {cell.id}", "misc": {"accel": ",".join(cell.run.accel)}},
                    "misc": {"nodeid": nodeid, "outcome": outcome, "cell": cell.id},
                }
            )
    from kcidb_io.schema import LATEST

    doc = {
        "version": {"major": LATEST.major, "minor": LATEST.minor},
        "checkouts": list(checkouts.values()),
        "builds": list(builds.values()),
        "tests": tests,
    }
    try:
        LATEST.validate(doc)
    except Exception as exc:  # jsonschema's error, shortened
        raise ConfigError(f"the KCIDB document does not validate against schema v{LATEST.major}.{LATEST.minor}: "
                          f"{str(exc)[:1000]}") from None  # fmt: skip
    return doc


def _boots(cell: CellResults) -> list[dict[str, Any]]:
    import json

    doc = json.loads((cell.run.directory / "run.json").read_text())
    return [b.get("kernel") or {} for b in doc.get("boots", [])]
