"""A function body as the mutation operators see it, and the few C token helpers they share.

Operators match on the code mask (comments, literal contents and preprocessor lines blanked,
see `cfunc.code_mask`) and edit the original text at the same offsets, so nothing inside a
comment, a string or a `#` line is ever matched or changed. An edit becomes a `Mutation`: a
replacement of whole lines [first_line, last_line] by new lines, which is what a patch hunk
needs.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .cfunc import code_mask

_WORD = re.compile(r"[A-Za-z_]\w*")
_LABEL = re.compile(r"\s*(?:case\b[^?]*|[A-Za-z_]\w*)\s*")
_PAIRS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {v: k for k, v in _PAIRS.items()}
# the identifiers that may head a statement and are not a call or a label
KEYWORDS = frozenset(
    "if else for while do switch case default return goto break continue sizeof typeof __typeof__ "
    "_Static_assert static_assert asm __asm__ volatile".split()
)


@dataclass(frozen=True)
class Mutation:
    """One candidate bug: lines [first_line, last_line] of the file (1-based) become `new_lines`."""

    operator: str
    first_line: int
    last_line: int
    old_lines: tuple[str, ...]
    new_lines: tuple[str, ...]
    description: str  # one line, what the bug is: "drop call to fput()"


class Body:
    """The lines of one function, from its `{` to its `}`; `first_line` is the file line of the first."""

    def __init__(self, lines: Sequence[str], first_line: int) -> None:
        self.text = "\n".join(lines)
        code = code_mask(self.text)
        # a head on the line of the `{` (`static void f(void) {`) is no part of the body
        brace = max(0, code.find("{"))
        self.code = " " * brace + code[brace:]
        self.first_line = first_line
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        self._depth = _paren_depths(self.code)

    def line_index(self, pos: int) -> int:
        """0-based index (into the body's lines) of the line holding offset `pos`."""
        return bisect.bisect_right(self._line_starts, pos) - 1

    def paren_depth(self, pos: int) -> int:
        """How many `(` or `[` are open at `pos`: 0 where a statement can start."""
        return self._depth[pos]

    def replace(self, start: int, end: int, new: str, operator: str, description: str) -> Mutation:
        """Replace text[start:end] with `new`; the mutation covers the whole lines the span touches."""
        first = self.line_index(start)
        last = self.line_index(max(start, end - 1))
        line_start = self._line_starts[first]
        line_end = self._line_end(last)
        edited = self.text[line_start:start] + new + self.text[end:line_end]
        return self._mutation(first, last, tuple(edited.split("\n")), operator, description)

    def delete_lines(self, start: int, end: int, operator: str, description: str) -> Mutation:
        """Remove every line the span text[start:end] touches."""
        return self._mutation(self.line_index(start), self.line_index(end - 1), (), operator, description)

    def whole_lines(self, start: int, end: int) -> bool:
        """Whether only blanks (or comments) share the lines of text[start:end] with it."""
        before = self.code[self._line_starts[self.line_index(start)] : start]
        after = self.code[end : self._line_end(self.line_index(max(start, end - 1)))]
        return not before.strip() and not after.strip()

    def _line_end(self, index: int) -> int:
        if index + 1 < len(self._line_starts):
            return self._line_starts[index + 1] - 1
        return len(self.text)

    def _mutation(self, first: int, last: int, new: tuple[str, ...], operator: str, description: str) -> Mutation:
        old = tuple(self.text.split("\n")[first : last + 1])
        # lines the edit leaves as they were are no part of it: the patch shows them as context
        while old and new and old[0] == new[0]:
            old, new, first = old[1:], new[1:], first + 1
        while old and new and old[-1] == new[-1]:
            old, new, last = old[:-1], new[:-1], last - 1
        return Mutation(operator, self.first_line + first, self.first_line + last, old, new, description)


def _paren_depths(code: str) -> list[int]:
    depths = []
    depth = 0
    for c in code:
        if c in ")]":
            depth = max(0, depth - 1)
        depths.append(depth)
        if c in "([":
            depth += 1
    depths.append(depth)
    return depths


def match_forward(code: str, open_pos: int) -> int | None:
    """The offset of the bracket closing the one at `open_pos`, or None if unbalanced."""
    opener = code[open_pos]
    closer = _PAIRS[opener]
    depth = 0
    for i in range(open_pos, len(code)):
        if code[i] == opener:
            depth += 1
        elif code[i] == closer:
            depth -= 1
            if depth == 0:
                return i
    return None


def match_backward(code: str, close_pos: int) -> int | None:
    """The offset of the bracket opening the one at `close_pos`, or None if unbalanced."""
    closer = code[close_pos]
    opener = _CLOSERS[closer]
    depth = 0
    for i in range(close_pos, -1, -1):
        if code[i] == closer:
            depth += 1
        elif code[i] == opener:
            depth -= 1
            if depth == 0:
                return i
    return None


def prev_token(code: str, pos: int) -> tuple[str, int]:
    """The token ending before `pos` (a word or one character) and its offset; ("", -1) at the start."""
    i = pos - 1
    while i >= 0 and code[i].isspace():
        i -= 1
    if i < 0:
        return "", -1
    if code[i].isalnum() or code[i] == "_":
        j = i
        while j > 0 and (code[j - 1].isalnum() or code[j - 1] == "_"):
            j -= 1
        return code[j : i + 1], j
    return code[i], i


def next_token(code: str, pos: int) -> tuple[str, int]:
    """The token starting at or after `pos` (a word or one character) and its offset; ("", len) at the end."""
    i = pos
    while i < len(code) and code[i].isspace():
        i += 1
    if i == len(code):
        return "", i
    m = _WORD.match(code, i)
    return (m.group(0), i) if m else (code[i], i)


def is_label_colon(code: str, colon: int) -> bool:
    """Whether the `:` at `colon` ends a label (`out:`, `case X:`, `default:`) rather than a `?:`."""
    seg_start = max(code.rfind(c, 0, colon) for c in ";{}:") + 1
    seg = code[seg_start:colon]
    if not _LABEL.fullmatch(seg):
        return False
    word = seg.split()[0]
    return word not in KEYWORDS or word in ("case", "default")


def statement_starts_here(code: str, pos: int) -> bool:
    """Whether a statement may start at `pos`: after `;`, `{`, `}` or a label (at paren depth 0)."""
    tok, at = prev_token(code, pos)
    return tok in (";", "{", "}") or (tok == ":" and is_label_colon(code, at))


def is_body_of_control(code: str, pos: int) -> bool:
    """Whether the statement at `pos` is the unbraced body of an if/else/for/while/do or a loop macro."""
    tok, at = prev_token(code, pos)
    if tok in ("else", "do"):
        return True
    if tok != ")":
        return False
    open_pos = match_backward(code, at)
    if open_pos is None:
        return False
    word, word_at = prev_token(code, open_pos)
    if word in ("if", "for", "while", "switch"):
        return True
    # `list_for_each_entry(...)` and friends: a macro name at the start of a statement, not a cast
    if _WORD.fullmatch(word) is None or word in KEYWORDS:
        return False
    return statement_starts_here(code, word_at) or is_body_of_control(code, word_at)


def condensed(text: str, limit: int = 48) -> str:
    """`text` on one ASCII line with runs of blanks squeezed, cut to `limit` characters: a subject line
    in plain ASCII is never RFC 2047-encoded by git."""
    one = " ".join(text.split()).encode("ascii", "replace").decode("ascii")
    return one if len(one) <= limit else one[: limit - 3].rstrip() + "..."
