"""The plugin state an xdist worker hands to the controller survives JSON and merges."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.logs import scan_text
from testbed.logs.known import find_known, load_known
from testbed.pytest_plugin.pool import FreshWait, fresh_summary
from testbed.pytest_plugin.report import CensusRow, Row
from testbed.pytest_plugin.state import KnownSeen, Stray, TestbedState
from testbed.runs.record import SplatRecord

LOGS = Path(__file__).resolve().parent.parent / "logs"


def _worker(tmp_path: Path, n: int) -> TestbedState:
    state = TestbedState(tmp_path, ())
    state.verdict_table().rows.append(Row(f"t{n}", "nvme0", "nvme1", "to_p2pmem", "BUS_ADDR", "ok", "ok", "r"))
    state.census_table().rows.append(CensusRow(f"t{n}", "map", "a", "b", "BUS_ADDR 4", "BUS_ADDR 4", "r"))
    log = LOGS / "real" / "debug-pciehp-unplug.log"
    (splat,) = scan_text(log.read_text(errors="replace"))
    entry = find_known(splat, "7.2.13-testbed", load_known())
    assert entry is not None
    state.known_seen.append(KnownSeen.of(f"t{n}::x", log, splat, entry))
    state.record.splats.append(SplatRecord.of(splat, f"t{n}::x", entry, log))
    state.record.vms[f"t{n}::x"] = f"vm{n}"
    state.strays.append(Stray(f"vm{n}", "c.log", 1, 2, "WARNING in f", None))
    state.boot_seconds.append((f"t{n}", 7.5))
    state.fresh_waits.append(FreshWait(f"t{n}", 0.2 * n, "spare"))
    state.boot_retries.append(f"vm{n}: the guest stalled while booting")
    state.kselftest_lines += ["build fixes applied:", f"  fix {n}"]
    state.kselftest_noted.append((f"t{n}::k", "skip", "no IOMMU"))
    state.unchecked.append(f"t{n}::x")
    state.not_applicable[(f"mine{n}", "t::y")] = "an NVMe with a CMB"
    state.vm_tests_declared = n == 2
    return state


def test_two_workers_merge_into_one_state(tmp_path):
    controller = TestbedState(tmp_path, ())
    for n in (1, 2):
        controller.absorb(json.loads(json.dumps(_worker(tmp_path, n).export())))
    controller.absorb(None)  # a worker that crashed before its export
    assert [r.topology for r in controller.verdict_table().rows] == ["t1", "t2"]
    assert len(controller.census_table().rows) == 2
    assert [k.where for k in controller.known_seen] == ["t1::x", "t2::x"]
    assert controller.known_seen[0].entry_kind == "lockdep"
    assert len(controller.record.splats) == 2 and controller.record.vms == {"t1::x": "vm1", "t2::x": "vm2"}
    assert [s.vm for s in controller.strays] == ["vm1", "vm2"]
    assert controller.kselftest_lines == ["build fixes applied:", "  fix 1", "  fix 2"]
    assert controller.unchecked == controller.record.unchecked == ["t1::x", "t2::x"]
    assert controller.not_applicable == {
        ("mine1", "t::y"): "an NVMe with a CMB",
        ("mine2", "t::y"): "an NVMe with a CMB",
    }
    assert controller.vm_tests_declared
    assert controller.boot_retries == ["vm1: the guest stalled while booting", "vm2: the guest stalled while booting"]
    assert fresh_summary(controller.fresh_waits) == (
        "fresh VMs: 2 for destructive tests, 2 of them warm spares; waited median 0.3 s, max 0.4 s, 1 s in all"
    )
