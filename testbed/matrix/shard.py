"""Stable, balanced shards: the longest cells first, each to the shard with the least work
(ties to the lowest shard), cells ordered by id before that. The same cells and durations
always give the same shards, on any machine."""

from __future__ import annotations

from .cells import Cell


def shards(cells: list[Cell], count: int) -> list[list[Cell]]:
    if count < 1:
        raise ValueError("a matrix has at least one shard")
    loads = [0.0] * count
    out: list[list[Cell]] = [[] for _ in range(count)]
    for cell in sorted(sorted(cells, key=lambda c: c.id), key=lambda c: -c.estimate_s):
        i = min(range(count), key=lambda k: (loads[k], k))
        out[i].append(cell)
        loads[i] += cell.estimate_s
    return [sorted(s, key=lambda c: c.id) for s in out]


def parse_shard(text: str) -> tuple[int, int]:
    """ "K/N" (1-based K) -> (K, N)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: write K/N, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text!r}: K must be between 1 and N")
    return k, n
