"""Whether a guest still runs, from its vCPU threads' CPU time on the host.

Under TCG (QEMU 7.2, one host thread per vCPU) a guest has been seen to stop for good in the
middle of a run: its console silent, both vCPU threads asleep in QEMU and never woken again
(CI: a selftest VM during a vfio-pci reset; the harness then waited out a 660 s deadline and
every later case of that VM failed the same way). A live Linux guest runs its vCPUs every few
seconds even when idle (timers, the clocksource watchdog), so vCPU threads that have not run
for a minute while QEMU says the guest runs mean the guest is gone, not slow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

GUEST_STILL_S = 60.0  # no vCPU ran this long: the guest stopped


def vcpu_time_ns(pid: int, tids: tuple[int, ...]) -> int | None:
    """The CPU time the threads have had, in ns (schedstat's first field), or None when the
    host does not say (no schedstat, or a thread gone)."""
    total = 0
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
    return total


class VcpuClock:
    """Since when the vCPU threads' CPU time has not moved, from look to look."""

    def __init__(self, read: Callable[[], int | None], now: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._now = now
        self._last: int | None = None
        self._since = now()

    def still_for(self) -> float | None:
        """Seconds since the vCPUs last ran, as far as the looks saw (0 when they ran since the
        last look); None when the host does not say."""
        spent, now = self._read(), self._now()
        if spent is None:
            return None
        if spent != self._last:
            self._last, self._since = spent, now
        return now - self._since
