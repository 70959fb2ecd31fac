"""How QEMU's TCG runs a VM's vCPUs: a host thread each (MTTCG, the default), or one thread for
all of them in turn (round robin, $TESTBED_TCG_THREAD=single). Only under TCG; KVM always has a
thread per vCPU.

MTTCG runs the guest's CPUs in parallel, as hardware does: races between them (a revoke
against a map on the other CPU) happen at the granularity of instructions. Round robin runs
one vCPU until it halts or 100 ms pass, so such races interleave far more coarsely. On a host
with fewer CPUs than the busy vCPUs (`make test -n 2` of 2-vCPU VMs on 2 CPUs) round robin
can be faster, since MTTCG's threads then wait for each other on cross-vCPU TLB flushes and
exclusive sections: `make test` here took 452 and 483 s of test time with it, 502 and 529 s
without, within this machine's run-to-run noise. Not worth coarser races by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigError

TCG_THREAD_ENV = "TESTBED_TCG_THREAD"
CHOICES = ("multi", "single")


@dataclass(frozen=True)
class TcgThreads:
    mode: str  # "multi" | "single": QEMU's -accel tcg,thread=MODE
    reason: str  # one line, for the user


def choose_tcg_threads(requested: str | None = None) -> TcgThreads:
    """multi, unless $TESTBED_TCG_THREAD (or `requested`) says single."""
    value = requested or os.environ.get(TCG_THREAD_ENV) or "multi"
    if value not in CHOICES:
        raise ConfigError(f"${TCG_THREAD_ENV}={value!r}: not one of {', '.join(CHOICES)}")
    if value == "single":
        return TcgThreads(value, f"TCG thread=single (${TCG_THREAD_ENV}): one host thread runs the vCPUs in turn")
    return TcgThreads(value, "TCG thread=multi: a host thread per vCPU")
