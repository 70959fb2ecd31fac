"""The kinds of kernel report the console scan tells apart (logs/splat.py's HEADERS)."""

from __future__ import annotations

from enum import Enum


class SplatKind(str, Enum):
    """What kind of report a splat is, by its header (HEADERS); known-splats.yaml names these."""

    KASAN = "kasan"
    KFENCE = "kfence"
    KMSAN = "kmsan"
    KCSAN = "kcsan"
    UBSAN = "ubsan"
    SLUB = "slub"
    LOCKDEP = "lockdep"
    LOCKDEP_OFF = "lockdep-off"
    RCU_STALL = "rcu-stall"
    HUNG_TASK = "hung-task"
    SOFT_LOCKUP = "soft-lockup"
    HARD_LOCKUP = "hard-lockup"
    WARNING = "warning"
    KERNEL_BUG = "kernel-bug"
    REFCOUNT = "refcount"
    LIST_CORRUPTION = "list-corruption"
    ODEBUG = "odebug"
    DMA_API = "dma-api"
    KMEMLEAK = "kmemleak"
    GPF = "gpf"
    OOPS = "oops"
    PANIC = "panic"
    BUG = "bug"
    INFO = "info"

    def __str__(self) -> str:  # reports and signatures print the word
        return self.value
