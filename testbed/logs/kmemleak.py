"""kmemleak's report: how the harness asks for it at the end of a VM's life, and one splat per
unreferenced object in it (mm/kmemleak.c print_unreferenced())."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .kinds import SplatKind
from .signature import SKIP_FRAMES, SUFFIX_RE, call_trace
from .splat import EXCERPT_LINES, Splat

KMEMLEAK = "/sys/kernel/debug/kmemleak"
NO_KMEMLEAK = 3
# An object is reported once it is unreferenced and at least 5 s old (MSECS_MIN_AGE, counted
# from the start of a scan), and one whose contents changed since the previous scan (a new one
# has no checksum yet) waits for the next: scan, let the last allocations age, scan again, read
# what is left. Writing "scan" returns when the scan is done; a 2 GiB TCG guest with KASAN takes
# ~6 s for one, which is then most of the wait.
KMEMLEAK_AGE_S = 6  # MSECS_MIN_AGE and a second of /proc/uptime truncation
KMEMLEAK_SCAN = (
    # built in but switched off at boot (the debug profile's kmemleak=off): no leak check, by choice
    f"test -w {KMEMLEAK} || exit {NO_KMEMLEAK}; grep -qw kmemleak=off /proc/cmdline && exit {NO_KMEMLEAK}; "
    f"t0=$(cut -d. -f1 /proc/uptime); echo scan > {KMEMLEAK} || exit 1; "
    f"w=$(({KMEMLEAK_AGE_S} - $(cut -d. -f1 /proc/uptime) + t0)); if [ $w -gt 0 ]; then sleep $w; fi; "
    f"echo scan > {KMEMLEAK} && cat {KMEMLEAK}"
)
KMEMLEAK_TIMEOUT_S = 120.0  # two scans of a 2 GiB TCG guest with KASAN, and the wait
OBJECT_RE = re.compile(r"^unreferenced object(?P<type> \(\w+\))? 0x[0-9a-f]+ \(size (?P<size>\d+)\):")
# the allocator's own frames at the top of every kmemleak backtrace, never the leak's place
ALLOCATOR_FRAME_RE = re.compile(
    r"^_*(?:kmemleak|kmalloc|kmem_cache_alloc|k[vz]?[mz]alloc|kv?calloc|vmalloc|vzalloc|kv?realloc|kmemdup|"
    r"kstrn?dup|kv?asprintf|devm_k|pcpu_alloc|alloc_percpu|alloc_pages|alloc_frozen_pages|folio_alloc|"
    r"mempool_alloc|slab_|do_kmalloc|memblock_|alloc_slab|new_slab)"
)


@dataclass(frozen=True)
class KmemleakScan:
    report: Path  # /sys/kernel/debug/kmemleak as read at the end, beside the console log
    console_mark: int  # console lines before the scan (its summary line comes after)
    splats: tuple[Splat, ...]


def parse_kmemleak(text: str) -> list[Splat]:
    """One splat per object in a /sys/kernel/debug/kmemleak report (mm/kmemleak.c
    print_unreferenced()): "kmemleak: unreferenced object in <where>", where is the first
    frame of its allocation backtrace below the allocator; lines count in `text`."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if OBJECT_RE.match(line)]
    splats = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        block = lines[start:end]
        m = OBJECT_RE.match(block[0])
        assert m is not None
        body = "\n".join(block)
        title = f"unreferenced object{m['type'] or ''} (size {m['size']})"
        where = next(
            (
                SUFFIX_RE.sub("", f)
                for f in call_trace(body)
                if not ALLOCATOR_FRAME_RE.match(f) and not SKIP_FRAMES.search(f)
            ),
            "",
        )
        signature = "kmemleak: unreferenced object" + (f" in {where}" if where else "")
        excerpt = "\n".join(block[:EXCERPT_LINES])
        splats.append(Splat(SplatKind.KMEMLEAK, title, start + 1, end, excerpt, body, signature))
    return splats
