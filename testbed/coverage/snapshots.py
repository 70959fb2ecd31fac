"""The record of a coverage run: which counters snapshot belongs to which test, VM and kernel.

`<results>/coverage/snapshots/<name>/` holds one snapshot's `.gcda` files (by path relative to
the kernel's build directory); `<results>/coverage/snapshots-<worker>.jsonl` has one line per
snapshot. Written by the pytest plugin, read by the reports (`testbed coverage`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

OUTSIDE = "(outside tests)"  # counters no test window holds: boots, fixtures between tests


@dataclass(frozen=True)
class SnapshotRecord:
    directory: str  # relative to <results>/coverage
    test: str  # a test's node id, or OUTSIDE
    vm: str
    topology: str
    kernel: str  # the bzImage; its cache entry keeps the notes and sources (coverage/)
    gcov_root: str  # the build directory the guest's gcov paths start with
    files: int


def append_record(coverage_dir: Path, worker: str, record: SnapshotRecord) -> None:
    with (coverage_dir / f"snapshots-{worker}.jsonl").open("a") as out:
        out.write(json.dumps(asdict(record)) + "\n")


def load_records(coverage_dir: Path) -> list[SnapshotRecord]:
    """Every worker's snapshot records, in the order each took them."""
    records = []
    for path in sorted(coverage_dir.glob("snapshots-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(SnapshotRecord(**json.loads(line)))
    return records
