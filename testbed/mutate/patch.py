"""A mutation as a one-commit patch in `git format-patch --full-index` form, written without git.

The mutant's kernel is built from the tree plus this patch (`git am` or `git apply`), and the
patch is what a report shows, so it must apply exactly and read like any other series: the
mbox postmark, author, a fixed date (same source, same bytes), the subject folded at 78
columns the way git folds it, the body, `---`, then one file's diff with one hunk of three
context lines and the `@@` heading git's default (no diff driver) function-name rule picks,
and the `-- ` signature. Only the diffstat git would add after `---` is left out: `git am`
skips it and its column scaling is git's business.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

CONTEXT = 3
POSTMARK = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001"
AUTHOR = "testbed mutate <testbed@localhost>"
DATE = "Thu, 1 Jan 2026 00:00:00 +0000"  # fixed: the patch of a mutant depends on nothing but the source
SIGNATURE = "2.0"
_SUBJECT_WIDTH = 78  # git format-patch folds the Subject header at this column
_HEADING_BYTES = 80  # git's xdiff cuts the hunk heading (the function line) here


def format_patch(
    path: str,
    lines: Sequence[str],
    ends_with_newline: bool,
    span: tuple[int, int],
    new_lines: Sequence[str],
    subject: str,
    body: str,
) -> str:
    """The mail for replacing lines span[0]..span[1] (1-based) of `lines` by `new_lines` in file `path`."""
    first, last = span
    if not ends_with_newline and last >= len(lines):
        raise ValueError("a mutation of the last line of a file without a final newline")
    after = [*lines[: first - 1], *new_lines, *lines[last:]]
    old_blob, new_blob = _blob(lines, ends_with_newline), _blob(after, ends_with_newline)
    return "".join(
        [
            f"{POSTMARK}\nFrom: {AUTHOR}\nDate: {DATE}\n",
            _folded("Subject: [PATCH] ", subject),
            f"\n{body.rstrip()}\n---\n",
            f"diff --git a/{path} b/{path}\nindex {old_blob}..{new_blob} 100644\n--- a/{path}\n+++ b/{path}\n",
            _hunk(lines, ends_with_newline, first, last, new_lines),
            f"-- \n{SIGNATURE}\n\n",
        ]
    )


def _blob(lines: Sequence[str], ends_with_newline: bool) -> str:
    """git's object id of the file: non-UTF-8 bytes come back through surrogateescape."""
    data = "\n".join(lines).encode("utf-8", "surrogateescape") + (b"\n" if ends_with_newline and lines else b"")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _hunk(lines: Sequence[str], ends_with_newline: bool, first: int, last: int, new_lines: Sequence[str]) -> str:
    lo = max(1, first - CONTEXT)
    hi = min(len(lines), last + CONTEXT)
    before, old, after = lines[lo - 1 : first - 1], lines[first - 1 : last], lines[last:hi]
    old_count = len(before) + len(old) + len(after)
    new_count = len(before) + len(new_lines) + len(after)
    out = [f"@@ -{_range(lo, old_count)} +{_range(lo, new_count)} @@{_heading(lines, lo)}\n"]
    out += [f" {line}\n" for line in before]
    out += _changes(old, new_lines)
    out += [f" {line}\n" for line in after]
    if not ends_with_newline and hi == len(lines):
        out.append("\\ No newline at end of file\n")
    return "".join(out)


def _changes(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """The -/+ lines; an edit that keeps the line count (a condition spread over lines) keeps the
    lines it did not touch as context between its -/+ groups, as git shows it."""
    if len(old) != len(new):
        return [f"-{line}\n" for line in old] + [f"+{line}\n" for line in new]
    out: list[str] = []
    group: list[int] = []
    for i in range(len(old) + 1):
        if i < len(old) and old[i] != new[i]:
            group.append(i)
            continue
        out += [f"-{old[j]}\n" for j in group] + [f"+{new[j]}\n" for j in group]
        group = []
        if i < len(old):
            out.append(f" {old[i]}\n")
    return out


def _range(start: int, count: int) -> str:
    # unified diff: a count of 1 is left out, an empty range names the line before it
    if count == 1:
        return str(start)
    return f"{start if count else start - 1},{count}"


def _heading(lines: Sequence[str], lo: int) -> str:
    """xdiff's default function line: the nearest line above the hunk starting with a letter, `_` or `$`."""
    for line in reversed(lines[: lo - 1]):
        c = line[:1]
        if c and c.isascii() and (c.isalpha() or c in "_$"):
            cut = line.encode("utf-8", "surrogateescape")[:_HEADING_BYTES].decode("utf-8", "ignore")
            return " " + cut.rstrip()
    return ""


def _folded(prefix: str, title: str) -> str:
    """`prefix` + `title` wrapped like git's strbuf_add_wrapped_text(): at spaces, continuation lines
    indented by one space, no line longer than 78 columns unless a single word is."""
    words = title.split(" ")
    lines: list[str] = []
    line = prefix + words[0]
    if len(line) > _SUBJECT_WIDTH and title:
        # git moves even the first word down when it does not fit after the prefix
        lines.append(prefix)
        line = " " + words[0]
    for word in words[1:]:
        if len(line) + 1 + len(word) <= _SUBJECT_WIDTH:
            line += " " + word
        else:
            lines.append(line)
            line = " " + word
    lines.append(line)
    return "\n".join(lines) + "\n"
