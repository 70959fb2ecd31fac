"""Where a run's time went, for the end of the run: test time per test file (setup, call and
teardown of every test, summed over the workers: a VM booted for a test counts in its setup),
the VM boots to ready (the guest agent answering), and the waits of destructive tests for a VM of their own."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from .pool import FreshWait


def _suite(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def time_lines(
    durations: dict[str, float], boots: Iterable[tuple[str, float]], waits: Iterable[FreshWait], top: int = 8
) -> list[str]:
    """A line per test file, longest first (`top` of them, the rest summed), then the boots and
    the fresh-VM waits."""
    per_file: dict[str, list[float]] = {}
    for nodeid, seconds in durations.items():
        per_file.setdefault(_suite(nodeid), []).append(seconds)
    ranked = sorted(per_file.items(), key=lambda kv: -sum(kv[1]))
    total = sum(sum(v) for v in per_file.values())
    lines = [f"test time, all workers: {total:.0f} s in {len(durations)} tests"] if durations else []
    for name, times in ranked[:top]:
        share = 100 * sum(times) / total if total else 0.0
        lines.append(f"  {sum(times):7.1f} s {share:4.0f} %  {len(times):5d} tests  {name}")
    rest = ranked[top:]
    if rest:
        lines.append(f"  {sum(sum(v) for _, v in rest):7.1f} s        {sum(len(v) for _, v in rest):5d} tests  "
                     f"{len(rest)} other files")  # fmt: skip
    boot_s = [s for _, s in boots]
    if boot_s:
        lines.append(
            f"VM boots to ready: {len(boot_s)}, {sum(boot_s):.0f} s in all, median {statistics.median(boot_s):.1f} s "
            "(inside the tests' setup time)"
        )
    wait_s = [w.seconds for w in waits]
    if wait_s:
        lines.append(f"destructive tests waited {sum(wait_s):.0f} s for VMs of their own ({len(wait_s)} tests)")
    return lines
