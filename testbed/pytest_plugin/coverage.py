"""`pytest --coverage`: the kernel's gcov counters, per test and per VM.

Each VM test's counters are its own: at its begin marker the counters are taken (what ran since
the last snapshot: the boot, fixtures between tests) and zeroed, at its end they are taken again,
as the test's. Before any VM shuts down (shared, destructive, warm spare) the rest is taken. Every
snapshot is a directory of `.gcda` files under `<results>/coverage/snapshots/` with one JSON line
in `snapshots-<worker>.jsonl` saying whose it is; the end of the run (the xdist controller)
hands them to testbed.coverage for the merged reports and the line -> tests index.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..coverage.snapshots import OUTSIDE, SnapshotRecord, append_record
from ..guestvm import GuestVM
from ..guestvm.coverage import coverage_manifest, take

log = logging.getLogger(__name__)


class CoverageCollector:
    """Takes snapshots for one pytest process (a worker under xdist); thread-safe, since warm
    spares are released from the pool's thread too."""

    def __init__(self, results: Path, worker: str) -> None:
        self.root = results / "coverage"
        self.worker = worker
        self._count = 0
        self._lock = threading.Lock()

    def take(self, guest: GuestVM, test: str = OUTSIDE) -> SnapshotRecord | None:
        kernel = guest.plan.runtime.kernel
        manifest = coverage_manifest(kernel)
        if manifest is None:  # only coverage kernels boot under --coverage: say it, do not hide it
            log.warning("%s: its kernel %s is no coverage build: no counters taken", guest.machine.name, kernel)
            return None
        with self._lock:
            self._count += 1
            name = f"{self.worker}-{self._count:05d}"
        snap = take(guest, self.root / "snapshots" / name, str(manifest["gcov_root"]))
        if snap is None:
            log.warning("%s: no /sys/kernel/debug/gcov in the guest: no counters taken", guest.machine.name)
            return None
        record = SnapshotRecord(
            f"snapshots/{name}", test, guest.machine.name, guest.topology.name, str(kernel),
            str(manifest["gcov_root"]), snap.files,
        )  # fmt: skip
        with self._lock:
            append_record(self.root, self.worker, record)
        return record
