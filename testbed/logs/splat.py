"""Find kernel splats (KASAN, lockdep, WARN, BUG, Oops, ...) in a serial console log.

Formats follow Linux 7.2: e.g. WARN prints `WARNING: file:line at func, CPU#n: comm/pid`
(kernel/panic.c), KASAN/KFENCE reports are framed by `=====` lines, oopses end with
`---[ end trace ... ]---`. Titles are what a developer would search the log for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .windows import MARKER_RE

# printk's "[   12.345678]" and an optional caller id "[    T1]" / "[   C0]"
PREFIX_RE = re.compile(r"^\s*\[\s*\d+\.\d+\]\s*(?:\[\s*[CT]\d+\]\s*)?")

# (kind, pattern). Order matters: specific before generic (lockdep reports are WARNINGs).
HEADERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (k, re.compile(p))
    for k, p in (
        ("kasan", r"^BUG: KASAN: (?P<title>.+)"),
        ("kfence", r"^BUG: KFENCE: (?P<title>.+)"),
        ("ubsan", r"^UBSAN: (?P<title>.+)"),
        ("lockdep", r"^WARNING: (?P<title>possible circular locking dependency detected)"),
        ("lockdep", r"^WARNING: (?P<title>possible recursive locking detected)"),
        ("lockdep", r"^WARNING: (?P<title>inconsistent lock state)"),
        ("lockdep", r"^WARNING: (?P<title>suspicious RCU usage)"),
        ("lockdep", r"^WARNING: (?P<title>bad unlock balance detected!)"),
        ("lockdep", r"^WARNING: (?P<title>held lock freed!)"),
        ("lockdep", r"^WARNING: (?P<title>lock held when returning to user space!)"),
        ("lockdep", r"^WARNING: (?P<title>.*lock.* detected!?)$"),
        ("lockdep", r"^WARNING: (?P<title>(?:HARDIRQ|SOFTIRQ)-(?:safe|unsafe|READ|irq).*)"),
        ("lockdep", r"^INFO: (?P<title>possible irq lock inversion dependency detected)"),
        ("lockdep-off", r"^(?P<title>INFO: lockdep is turned off\.)"),
        ("lockdep-off", r"^(?P<title>turning off the locking correctness validator\.)"),
        ("rcu-stall", r"^rcu: INFO: (?P<title>\S+ (?:self-)?detected stalls?\b.*)"),
        ("hung-task", r"^INFO: (?P<title>task \S+ blocked for more than \d+ seconds\.)"),
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
        ("bug", r"^BUG: (?P<title>.+)"),
        ("oops", r"^Oops: (?P<title>.+)"),
        ("panic", r"^(?P<title>Kernel panic - not syncing: .+)"),
    )
)

# Headers that continue the splat before them when they come soon after (an Oops line
# after "BUG: kernel NULL pointer dereference", the panic after a fatal oops).
CONTINUATIONS = {"oops", "gpf", "panic", "lockdep-off"}
CONTINUATION_WINDOW = 40
# Reports printed as the message of a WARN()/BUG(): the "WARNING: lib/debugobjects.c:..." or
# "kernel BUG at lib/list_debug.c:..." line right after them is the same splat, not another.
WARN_MESSAGES = {"odebug", "refcount", "dma-api", "list-corruption"}
WARN_BODIES = {"warning", "kernel-bug"}
FOLLOW_UP_LINES = 3
END_RE = re.compile(r"^---\[ end (?:trace [0-9a-f]+|Kernel panic.*) \]---")
FRAME_RE = re.compile(r"^={40,}$")
FRAMED = {"kasan", "kfence"}
MAX_LINES = 150
EXCERPT_LINES = 40


@dataclass(frozen=True)
class Splat:
    kind: str
    title: str
    first_line: int  # 1-based, in the scanned file
    last_line: int
    excerpt: str  # the first EXCERPT_LINES lines, for reports
    body: str = ""  # every line of it (up to MAX_LINES), for matching known splats

    def headline(self) -> str:
        return f"{self.kind}: {self.title} (lines {self.first_line}-{self.last_line})"


def strip_prefix(line: str) -> str:
    return PREFIX_RE.sub("", line.rstrip("\r\n")).rstrip("\r")


def classify(text: str) -> tuple[str, str] | None:
    for kind, pattern in HEADERS:
        match = pattern.match(text)
        if match:
            return kind, match.group("title").strip()
    return None


def scan_lines(lines: list[str], first_line: int = 1) -> list[Splat]:
    """Splats in `lines`; line numbers count from `first_line`."""
    splats: list[Splat] = []
    current: dict | None = None

    def close(last: int) -> None:
        nonlocal current
        if current is not None:
            body = lines[current["start"] : last + 1]
            text = [line.rstrip("\r\n") for line in body]
            splats.append(
                Splat(
                    current["kind"],
                    current["title"],
                    current["start"] + first_line,
                    last + first_line,
                    "\n".join(text[:EXCERPT_LINES]),
                    "\n".join(text),
                )
            )
            current = None

    for i, raw in enumerate(lines):
        text = strip_prefix(raw)
        if MARKER_RE.search(text):
            close(i - 1)
            continue
        header = classify(text)
        if header:
            kind, title = header
            if (
                current is not None
                and kind in CONTINUATIONS
                and i - current["start"] <= CONTINUATION_WINDOW
                and kind != current["kind"]
            ):
                continue
            if (
                current is not None
                and kind in WARN_BODIES
                and current["kind"] in WARN_MESSAGES
                and i - current["start"] <= FOLLOW_UP_LINES
            ):
                continue
            if (
                current is None
                and kind in CONTINUATIONS
                and splats
                and i + first_line - splats[-1].last_line <= FOLLOW_UP_LINES
                and splats[-1].kind != kind
            ):
                # "Kernel panic - not syncing: Fatal exception" right after the oops it ends
                last = splats.pop()
                current = {"kind": last.kind, "title": last.title, "start": last.first_line - first_line}
                continue
            close(i - 1)
            current = {"kind": kind, "title": title, "start": i}
            continue
        if current is None:
            continue
        if END_RE.match(text):
            close(i)
        elif current["kind"] in FRAMED and FRAME_RE.match(text) and i > current["start"]:
            close(i)
        elif i - current["start"] >= MAX_LINES:
            close(i)
    close(len(lines) - 1)
    return splats


def scan_text(text: str) -> list[Splat]:
    return scan_lines(text.splitlines())
