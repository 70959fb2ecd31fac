"""The kernel log by sequence number (/dev/kmsg), so a reader never counts lines.

    kmsg.py cursor                  {"ok", "next"}: the sequence number the next record will get
    kmsg.py since '{"seq": N}'      {"ok", "lines", "next", "lost"}: records N.. in order; lost
                                    is true when the ring buffer has already dropped record N
    kmsg.py wait '{"seq": N, "pattern": RE, "timeout": S}'
                                    {"ok", "line", "lines"}: blocks (select on /dev/kmsg, no
                                    polling) until a record from N on matches RE; "ok" false
                                    with "timeout" when none did within S seconds
    kmsg.py mark '{"text": T}'      {"ok", "debug_locks"}: T written to /dev/kmsg as a record of
                                    its own (the harness's per-test markers), then lockdep's
                                    debug_locks (null without lockdep); in the agent's process,
                                    so a marker costs no shell and no SSH exec
    kmsg.py uses '{"text": T, "seconds": S, "pattern": RE, "twice": RE2}'
                                    {"ok", "ages"}: T written as a record of its own (its printk
                                    timestamp is the kernel's "now"), then one age (seconds before
                                    it, oldest first) per use of a printk rate limit by the records
                                    of the last S seconds that match RE; those matching RE2 count
                                    twice (intel's dmar_fault() takes one more, unprinted, per
                                    interrupt). How the harness knows a fault report has room.
    kmsg.py kmemleak                {"ok", "scan"}: whether kmemleak can be asked for its report
                                    (its debugfs file writable, not kmemleak=off): the harness's
                                    end-of-life leak scan, skipped without an SSH login if not

A record's text is its first line (continuation lines of a multi-line record are dropped, as
dmesg shows them indented under it anyway).
"""

import os
import select
import sys
import time

import jsonlite
from common import emit, error_of, kmsg_records, kmsg_stamped, late_import


def _records():
    """(seq, text) of every record still in the ring buffer, oldest first."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        # a gap (None) means records were overwritten while we read; `since` sees it as lost
        return [(seq, text) for seq, text in kmsg_records(fd) if seq is not None]
    finally:
        os.close(fd)


def cursor(args: dict) -> dict:
    records = _records()
    return {"ok": True, "next": records[-1][0] + 1 if records else 0}


def since(args: dict) -> dict:
    seq = int(args["seq"])
    records = _records()
    lost = bool(records) and records[0][0] > seq
    lines = [text for n, text in records if n >= seq]
    return {"ok": True, "lines": lines, "next": records[-1][0] + 1 if records else seq, "lost": lost}


def wait(args: dict) -> dict:
    seq, pattern = int(args["seq"]), late_import("re").compile(args["pattern"])
    deadline = time.monotonic() + float(args.get("timeout", 30))
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    seen = []
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        while True:
            for n, text in kmsg_records(fd):
                if n is None or n < seq:
                    continue
                seen.append(text)
                if pattern.search(text):
                    return {"ok": True, "line": text, "lines": seen}
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return {"ok": False, "timeout": True, "lines": seen}
    finally:
        os.close(fd)


def _debug_locks():
    """lockdep's debug_locks (1: still checking), or None on a kernel without lockdep."""
    try:
        with open("/proc/lockdep_stats") as stats:
            for line in stats:
                key, _, value = line.partition(":")
                if key.strip() == "debug_locks":
                    return int(value)
    except (OSError, ValueError):
        pass
    return None


def mark(args: dict) -> dict:
    fd = os.open("/dev/kmsg", os.O_WRONLY)
    try:
        os.write(fd, args["text"].encode() + b"\n")  # one write is one record
    finally:
        os.close(fd)
    return {"ok": True, "debug_locks": _debug_locks()}


def rate_limit_uses(records, now_us: int, seconds: float, pattern, twice) -> list:
    """Ages in seconds (oldest first) of the uses of a rate limit by (usec, text) records of the
    `seconds` up to now_us: one per record matching `pattern`, two if it also matches `twice`."""
    ages = []
    for usec, text in records:
        age = (now_us - usec) / 1e6
        if age <= seconds and pattern.search(text):  # one after now_us is a use as of now
            ages += [max(age, 0.0)] * (2 if twice.search(text) else 1)
    return sorted(ages, reverse=True)


def uses(args: dict) -> dict:
    mark({"text": args["text"]})
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        records = [(usec, text) for seq, usec, text in kmsg_stamped(fd) if seq is not None]
    finally:
        os.close(fd)
    now = next((usec for usec, text in reversed(records) if text == args["text"]), None)
    if now is None:
        return {"ok": False, "error": "the record just written is not in the kernel log"}
    re = late_import("re")
    pattern, twice = re.compile(args["pattern"]), re.compile(args["twice"])
    return {"ok": True, "ages": rate_limit_uses(records, now, float(args["seconds"]), pattern, twice)}


KMEMLEAK = "/sys/kernel/debug/kmemleak"
PROC_CMDLINE = "/proc/cmdline"


def kmemleak(_args: dict) -> dict:
    """What testbed/logs/kmemleak.py KMEMLEAK_SCAN checks before it scans, without a shell."""
    with open(PROC_CMDLINE) as f:
        off = "kmemleak=off" in f.read().split()
    return {"ok": True, "scan": os.access(KMEMLEAK, os.W_OK) and not off}


# an OSError is a result, {"ok": false, "errno": ...}, as this module's CLI prints it
OSERROR_IS_RESULT = True
COMMANDS = {"cursor": cursor, "since": since, "wait": wait, "mark": mark, "uses": uses, "kmemleak": kmemleak}

if __name__ == "__main__":
    try:
        emit(COMMANDS[sys.argv[1]](jsonlite.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
    except OSError as exc:
        emit(error_of(exc))
