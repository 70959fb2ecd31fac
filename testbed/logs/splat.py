"""Find kernel splats (KASAN, lockdep, WARN, BUG, Oops, ...) in a serial console log.

Formats follow Linux 7.2: e.g. WARN prints `WARNING: file:line at func, CPU#n: comm/pid`
(kernel/panic.c), KASAN/KFENCE reports are framed by `=====` lines, oopses end with
`---[ end trace ... ]---`. Titles are what a developer would search the log for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .kinds import SplatKind
from .printk import PREFIX_RE, strip_prefix
from .windows import MARKER_RE

__all__ = [
    "HEADERS",
    "PREFIX_RE",
    "Splat",
    "SplatGroup",
    "classify",
    "group",
    "scan_lines",
    "scan_text",
    "strip_prefix",
]


# (kind, pattern). Order matters: specific before generic (lockdep reports are WARNINGs), and
# the generic BUG:/WARNING:/INFO: patterns last, so a format nobody listed is still a splat.
HEADERS: tuple[tuple[SplatKind, re.Pattern[str]], ...] = tuple(
    (SplatKind(k), re.compile(p))
    for k, p in (
        ("kasan", r"^BUG: KASAN: (?P<title>.+)"),
        ("kfence", r"^BUG: KFENCE: (?P<title>.+)"),
        ("kmsan", r"^BUG: KMSAN: (?P<title>.+)"),
        ("kcsan", r"^BUG: KCSAN: (?P<title>.+)"),
        ("ubsan", r"^UBSAN: (?P<title>.+)"),
        # SLUB's consistency checks: "BUG kmalloc-128 (Not tainted): Redzone overwritten"
        ("slub", r"^BUG (?P<title>[\w.:-]+ \((?:Not tainted|Tainted: [^)]*)\): .+)"),
        ("lockdep", r"^WARNING: (?P<title>possible circular locking dependency detected)"),
        ("lockdep", r"^WARNING: (?P<title>possible recursive locking detected)"),
        ("lockdep", r"^WARNING: (?P<title>inconsistent lock state)"),
        ("lockdep", r"^WARNING: (?P<title>suspicious RCU usage)"),
        ("lockdep", r"^WARNING: (?P<title>bad unlock balance detected!)"),
        ("lockdep", r"^WARNING: (?P<title>bad contention detected!)"),
        ("lockdep", r"^WARNING: (?P<title>held lock freed!)"),
        ("lockdep", r"^WARNING: (?P<title>Nested lock was not taken)"),
        ("lockdep", r"^WARNING: (?P<title>lock held when returning to user space!)"),
        ("lockdep", r"^WARNING: (?P<title>.*still has locks held!)"),
        ("lockdep", r"^WARNING: (?P<title>.*lock.* detected!?)$"),
        ("lockdep", r"^WARNING: (?P<title>(?:HARDIRQ|SOFTIRQ)-(?:safe|unsafe|READ|irq).*)"),
        ("lockdep", r"^(?:INFO|WARNING): (?P<title>possible irq lock inversion dependency detected)"),
        ("lockdep", r"^\[ BUG: (?P<title>Invalid wait context) \]"),
        ("lockdep", r"^INFO: (?P<title>trying to register non-static key\.)"),
        ("lockdep", r"^\[ (?:BUG|INFO): (?P<title>.+?) \]$"),  # lockdep before 4.15
        ("lockdep-off", r"^(?P<title>INFO: lockdep is turned off\.)"),
        ("lockdep-off", r"^(?P<title>turning off the locking correctness validator\.)"),
        ("rcu-stall", r"^rcu: INFO: (?P<title>\S+ (?:self-)?detected (?:expedited )?stalls?\b.*)"),
        ("rcu-stall", r"^INFO: (?P<title>rcu_\w+ (?:self-)?detected (?:expedited )?stalls?\b.*)"),
        ("hung-task", r"^INFO: (?P<title>task \S+ blocked (?:in I/O wait )?for more than \d+ seconds\.)"),
        ("soft-lockup", r"^watchdog: (?P<title>BUG: soft lockup - CPU#\d+ stuck for \d+s!.*)"),
        ("hard-lockup", r"^watchdog: (?P<title>Watchdog detected hard LOCKUP on cpu \d+)"),
        ("warning", r"^WARNING: (?P<title>\S+:\d+ at [^,]+), CPU#\d+: .+"),
        ("warning", r"^WARNING: (?P<title>at [^,]+), CPU#\d+: .+"),
        ("warning", r"^WARNING: CPU: \d+ PID: \d+ at (?P<title>.+)"),  # before 7.1
        ("kernel-bug", r"^(?P<title>kernel BUG at .+)"),
        ("refcount", r"^(?P<title>refcount_t: .+)"),
        ("list-corruption", r"^(?P<title>list_(?:add|del)(?:_rcu)? corruption.*)"),
        ("list-corruption", r"^(?P<title>.*list(?:_\w+)? corruption\..*)"),
        ("odebug", r"^ODEBUG: (?P<title>.+)"),
        # "DMA-API: <driver> <device>: ..." is a report; the boot banner lines are not
        ("dma-api", r"^DMA-API: (?P<title>(?!preallocated \d+ debug entries|debugging enabled by kernel config).+)"),
        ("kmemleak", r"^kmemleak: (?P<title>\d+ new suspected memory leaks.*)"),
        ("gpf", r"^(?:Oops: )?(?P<title>general protection fault.*)"),
        ("oops", r"^(?:Oops: )?(?P<title>(?:divide error|invalid opcode|stack segment|double fault): .+)"),
        ("panic", r"^PANIC: (?P<title>double fault.*)"),
        ("bug", r"^BUG: (?P<title>.+)"),
        ("oops", r"^Oops: (?P<title>.+)"),
        ("panic", r"^(?P<title>Kernel panic - not syncing: .+)"),
        # two words at least: "INFO: t" is a line cut short by a replayed printk
        ("warning", r"^WARNING: (?P<title>\S+ \S.*)"),
        ("info", r"^INFO: (?P<title>\S+ \S.*)"),
    )
)

# Which report a header right after (or inside) another one belongs to, instead of starting
# its own: the Oops a page fault or a KASAN report ends in, the panic a fatal oops ends in,
# lockdep's "turned off" line. Nothing else folds in: a GPF printed inside a lockdep report
# is a splat of its own.
FAULTING_BUG_RE = re.compile(
    r"NULL pointer dereference|unable to handle|paging request|stack guard page|stack overflow"
)
CONTINUATION_WINDOW = 40
# Reports printed as the message of a WARN()/BUG(): the "WARNING: lib/debugobjects.c:..." or
# "kernel BUG at lib/list_debug.c:..." line right after them is the same splat, not another.
WARN_MESSAGES = {SplatKind.ODEBUG, SplatKind.REFCOUNT, SplatKind.DMA_API, SplatKind.LIST_CORRUPTION}
WARN_BODIES = {SplatKind.WARNING, SplatKind.KERNEL_BUG}
FOLLOW_UP_LINES = 3
END_RE = re.compile(r"^---\[ end (?:trace [0-9a-f]+|Kernel panic.*) \]---")
FRAME_RE = re.compile(r"^={40,}$")
FRAMED = {SplatKind.KASAN, SplatKind.KFENCE, SplatKind.KMSAN, SplatKind.KCSAN, SplatKind.UBSAN}
MAX_LINES = 150
EXCERPT_LINES = 40


@dataclass(frozen=True)
class Splat:
    kind: SplatKind
    title: str
    first_line: int  # 1-based, in the scanned file
    last_line: int
    excerpt: str  # the first EXCERPT_LINES lines, for reports
    body: str = ""  # every line of it (up to MAX_LINES), for matching known splats
    signature: str = ""  # kind + what + where, stable across runs and builds (signature.py)


@dataclass(frozen=True)
class SplatGroup:
    """Every report with one signature: a hung task reported six times is one entry, count 6."""

    signature: str
    kind: SplatKind
    count: int
    first: Splat


def group(splats: list[Splat]) -> list[SplatGroup]:
    """One entry per signature, in order of first appearance."""
    by_sig: dict[str, list[Splat]] = {}
    for splat in splats:
        by_sig.setdefault(splat.signature, []).append(splat)
    return [SplatGroup(sig, found[0].kind, len(found), found[0]) for sig, found in by_sig.items()]


def classify(text: str) -> tuple[SplatKind, str] | None:
    for kind, pattern in HEADERS:
        match = pattern.match(text)
        if match:
            return kind, match.group("title").strip()
    return None


def joins(kind: SplatKind, title: str, current_kind: SplatKind, current_title: str, distance: int) -> bool:
    """Does a header of `kind` belong to the open report before it (`distance` lines in)?"""
    if distance > CONTINUATION_WINDOW or kind == current_kind:
        return False
    if kind in {SplatKind.OOPS, SplatKind.GPF}:
        return current_kind in {SplatKind.KASAN, SplatKind.KFENCE, SplatKind.KERNEL_BUG, SplatKind.LIST_CORRUPTION} or (
            current_kind == SplatKind.BUG and bool(FAULTING_BUG_RE.search(current_title))
        )
    if kind == SplatKind.PANIC:  # the panic a fatal report (or panic_on_warn) ends in
        return current_kind not in {SplatKind.LOCKDEP, SplatKind.ODEBUG, SplatKind.LOCKDEP_OFF, SplatKind.KMEMLEAK}
    if kind == SplatKind.LOCKDEP_OFF:
        return current_kind in {SplatKind.LOCKDEP, SplatKind.BUG, SplatKind.HUNG_TASK}
    if kind in WARN_BODIES and current_kind in WARN_MESSAGES:
        return distance <= FOLLOW_UP_LINES
    return False


@dataclass
class _Open:
    kind: SplatKind
    title: str
    start: int  # index in the scanned lines


def scan_lines(lines: list[str], first_line: int = 1) -> list[Splat]:
    """Splats in `lines`; line numbers count from `first_line`."""
    from .signature import signature  # signature.py reads bodies with this module's helpers

    splats: list[Splat] = []
    current: _Open | None = None
    # in a log with printk timestamps, a line without one is user space on the console
    # ("WARNING: Unsupported flag value ..." from a program), never a report's header
    stamped = sum(1 for line in lines if PREFIX_RE.match(line)) * 2 > len(lines)

    def close(last: int) -> None:
        nonlocal current
        if current is not None:
            text = [line.rstrip("\r\n") for line in lines[current.start : last + 1]]
            body = "\n".join(text)
            splats.append(
                Splat(
                    current.kind,
                    current.title,
                    current.start + first_line,
                    last + first_line,
                    "\n".join(text[:EXCERPT_LINES]),
                    body,
                    signature(current.kind, current.title, body),
                )
            )
            current = None

    for i, raw in enumerate(lines):
        text = strip_prefix(raw)
        if MARKER_RE.search(text):
            close(i - 1)
            continue
        header = classify(text) if not stamped or PREFIX_RE.match(raw) else None
        if header:
            kind, title = header
            if current is not None and joins(kind, title, current.kind, current.title, i - current.start):
                continue
            if (
                current is None
                and kind in {SplatKind.PANIC, SplatKind.OOPS, SplatKind.GPF}
                and splats
                and i + first_line - splats[-1].last_line <= FOLLOW_UP_LINES
                and joins(kind, title, splats[-1].kind, splats[-1].title, 0)
            ):
                # "Kernel panic - not syncing: Fatal exception" right after the oops it ends,
                # the Oops right after the KASAN report's closing frame
                last = splats.pop()
                current = _Open(last.kind, last.title, last.first_line - first_line)
                continue
            close(i - 1)
            current = _Open(kind, title, i)
            continue
        if current is None:
            continue
        if END_RE.match(text):
            close(i)
        elif current.kind in FRAMED and FRAME_RE.match(text) and i > current.start:
            close(i)
        elif i - current.start >= MAX_LINES:
            close(i)
    close(len(lines) - 1)
    return splats


def scan_text(text: str) -> list[Splat]:
    return scan_lines(text.splitlines())
