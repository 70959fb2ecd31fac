"""printk's line prefix, which every console line carries and no report text includes."""

from __future__ import annotations

import re

# printk's "[   12.345678]" and an optional caller id "[    T1]" / "[   C0]", after whatever
# a serial console interleaved before it ("login: [   16.3] INFO: ...")
PREFIX_RE = re.compile(r"^[^\[]*?\[\s*\d+\.\d+\]\s*(?:\[\s*[CT]\d+\]\s*)?")


def strip_prefix(line: str) -> str:
    return PREFIX_RE.sub("", line.rstrip("\r\n")).rstrip("\r")
