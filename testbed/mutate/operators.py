"""Mutation operators: each plants one small bug of a kind a real patch series could contain.

A mutant is worth building only if a test could catch it, so every operator models a mistake
that review misses and a run would show. The operators, by name:

- `drop-call`: a call statement whose result is unused is deleted, all its lines: a missing
  unlock, put, free, invalidate, wait or flush. Assertions (`WARN*`, `BUG*`, `*assert*`,
  `might_sleep`) are left alone: no correct run can tell them missing. A call that is the whole
  body of an `if`, `else` or loop becomes `{ }`, so the statement keeps its body.
- `negate-if`: `if (X)` becomes `if (!(X))`, and `if (!X)` becomes `if (X)` for a plain X: a
  check turned the wrong way round.
- `drop-if`: `if (X)` becomes `if (0)`: a check, and what it guards, that never runs (its
  `else`, if any, always does).
- `return-zero`: `return -EXXX;` becomes `return 0;`, `return ERR_PTR(-EXXX);` becomes
  `return NULL;`, and `err = -EXXX;` just before a `goto` becomes `err = 0;`: an error path
  that reports success.
- `bound`: `<` and `<=`, `>` and `>=` swap in an `if` or `while` condition or a `for` loop's
  condition: an off-by-one at a bound.
- `swap-sibling`: a constant becomes its sibling (`SIBLINGS` below): the wrong DMA direction,
  P2P mapping type, attribute, IOMMU permission or boolean. Never on a `case` label (a
  duplicate case does not compile).
- `drop-early-return`: an `if` whose whole body is one `return`, `goto`, `continue` or `break`
  is deleted: a missing check or bail-out.

Operators match code only, never comments, strings or preprocessor lines, and every mutation
keeps parentheses and braces balanced (checked, a mutation that does not is dropped). They are
textual: a mutant may still fail to build (an unused label or variable warns), or be
equivalent to the original; the build and the test run tell.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from ..errors import ConfigError
from .cfunc import code_mask
from .scan import (
    KEYWORDS,
    Body,
    Mutation,
    condensed,
    is_body_of_control,
    match_forward,
    next_token,
    prev_token,
    statement_starts_here,
)

Operator = Callable[[Body], Iterator[Mutation]]

# constant -> the sibling a slip of the keyboard (or of the mind) puts in its place
SIBLINGS: dict[str, str] = {
    "DMA_TO_DEVICE": "DMA_FROM_DEVICE",
    "DMA_FROM_DEVICE": "DMA_TO_DEVICE",
    "DMA_BIDIRECTIONAL": "DMA_TO_DEVICE",
    "PCI_P2PDMA_MAP_BUS_ADDR": "PCI_P2PDMA_MAP_THRU_HOST_BRIDGE",
    "PCI_P2PDMA_MAP_THRU_HOST_BRIDGE": "PCI_P2PDMA_MAP_BUS_ADDR",
    "PCI_P2PDMA_MAP_NOT_SUPPORTED": "PCI_P2PDMA_MAP_THRU_HOST_BRIDGE",
    "DMA_ATTR_MMIO": "0",
    "IOMMU_READ": "IOMMU_WRITE",
    "IOMMU_WRITE": "IOMMU_READ",
    "true": "false",
    "false": "true",
}

_WORD = re.compile(r"[A-Za-z_]\w*")
_CONTROL = re.compile(r"\b(if|while|for)\s*\(")
_CALL = re.compile(r"\b([A-Za-z_]\w*(?:\s*(?:->|\.)\s*[A-Za-z_]\w*)*)\s*\(")
_ASSERTION = re.compile(r"^(?:WARN|BUG|BUILD_BUG|VM_WARN|VM_BUG)|assert|^might_(?:sleep|lock|fault)")
# declarations that look like calls: `DEFINE_MUTEX(m);`, `LIST_HEAD(list);`
_DECLARATION = re.compile(r"^(?:DEFINE|DECLARE)_|^(?:H|LL)?LIST_HEAD$")
_ERRNO = r"-\s*E[A-Z0-9_]+"
_RETURN_ERR = re.compile(rf"\breturn\s+({_ERRNO}|ERR_PTR\s*\(\s*{_ERRNO}\s*\))\s*;")
_SET_ERR = re.compile(rf"\b([A-Za-z_]\w*)\s*=\s*({_ERRNO})\s*;")
_RELATIONAL = re.compile(r"<<=|>>=|<<|>>|->|<=|>=|<|>")  # longest first: `->`, `<<` are no comparison
_FLIP = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}
_SIBLING = re.compile(r"\b(" + "|".join(sorted(SIBLINGS, key=len, reverse=True)) + r")\b")
_BAIL = re.compile(r"\s*(?:return\b[^;{}]*|goto\s+[A-Za-z_]\w*|continue|break)\s*;\s*")


def _conditions(body: Body, keywords: tuple[str, ...]) -> Iterator[tuple[int, int, int]]:
    """(keyword offset, `(` offset, `)` offset) of each if/while/for header among `keywords`."""
    for m in _CONTROL.finditer(body.code):
        if m.group(1) in keywords:
            close = match_forward(body.code, m.end() - 1)
            if close is not None:
                yield m.start(), m.end() - 1, close


def drop_call(body: Body) -> Iterator[Mutation]:
    code = body.code
    for m in _CALL.finditer(code):
        start = m.start()
        callee = re.sub(r"\s+", "", m.group(1))
        last_name = re.split(r"->|\.", callee)[-1]
        if callee in KEYWORDS or body.paren_depth(start) or _ASSERTION.search(last_name) or _DECLARATION.search(callee):
            continue
        sole = is_body_of_control(code, start)
        if not sole and not statement_starts_here(code, start):
            continue
        close = match_forward(code, m.end() - 1)
        semi, semi_at = next_token(code, close + 1) if close is not None else ("", 0)
        if semi != ";":
            continue  # an assignment target, a condition, a macro loop head: no call statement
        end = semi_at + 1
        # a label must be followed by a statement: `out: }` does not compile
        label_at_end = prev_token(code, start)[0] == ":" and next_token(code, end)[0] == "}"
        description = f"drop call to {callee}()"
        if sole or label_at_end:
            yield body.replace(start, end, "{ }", "drop-call", description)
        elif body.whole_lines(start, end):
            yield body.delete_lines(start, end, "drop-call", description)
        else:
            yield body.replace(start, end, "", "drop-call", description)


def negate_if(body: Body) -> Iterator[Mutation]:
    for _, open_, close in _conditions(body, ("if",)):
        cond = body.text[open_ + 1 : close]
        plain = _unnegated(body.code[open_ + 1 : close])
        new = cond[plain[0] : plain[1]] if plain else f"!({cond})"
        yield body.replace(open_ + 1, close, new, "negate-if", f'negate "{condensed(cond)}"')


def _unnegated(cond: str) -> tuple[int, int] | None:
    """Where X is in a condition `!X` whose X is a name, a parenthesized group, or one followed by
    member accesses, calls and indexes, else None (and `!(...)` is wrapped around it instead)."""
    i = len(cond) - len(cond.lstrip())
    if cond[i : i + 1] != "!":
        return None
    operand = start = next_token(cond, i + 1)[1]
    while cond[start : start + 1] == "*":  # `!*p` is `!(*p)`: the dereference stays
        start = next_token(cond, start + 1)[1]
    word = _WORD.match(cond, start)
    end = word.end() if word else _after_group(cond, start)
    while end is not None:
        tok, at = next_token(cond, end)
        if tok == "." or cond.startswith("->", at):
            member = _WORD.match(cond, next_token(cond, at + (1 if tok == "." else 2))[1])
            if member is None:
                return None
            end = member.end()
        elif tok in ("(", "["):
            end = _after_group(cond, at)
        elif tok == "":
            return operand, end
        else:
            return None  # an operator follows: `!a && b` is no plain X
    return None


def _after_group(code: str, at: int) -> int | None:
    if code[at : at + 1] not in ("(", "["):
        return None
    close = match_forward(code, at)
    return None if close is None else close + 1


def drop_if(body: Body) -> Iterator[Mutation]:
    for _, open_, close in _conditions(body, ("if",)):
        cond = body.text[open_ + 1 : close]
        yield body.replace(open_ + 1, close, "0", "drop-if", f'never take "if ({condensed(cond)})"')


def return_zero(body: Body) -> Iterator[Mutation]:
    code = body.code
    for m in _RETURN_ERR.finditer(code):
        value = m.group(1)
        new = "NULL" if value.startswith("ERR_PTR") else "0"
        yield body.replace(m.start(1), m.end(1), new, "return-zero", f"return {new} instead of {condensed(value)}")
    for m in _SET_ERR.finditer(code):
        if next_token(code, m.end())[0] != "goto" or not statement_starts_here(code, m.start()):
            continue
        description = f"{m.group(1)} = 0 instead of {condensed(m.group(2))} before goto"
        yield body.replace(m.start(2), m.end(2), "0", "return-zero", description)


def bound(body: Body) -> Iterator[Mutation]:
    code = body.code
    for start, open_, close in _conditions(body, ("if", "while", "for")):
        lo, hi = open_ + 1, close
        if code.startswith("for", start):
            # only the condition clause of `for (init; cond; step)`
            depth = body.paren_depth(lo)
            semis = [i for i in range(lo, hi) if code[i] == ";" and body.paren_depth(i) == depth]
            if len(semis) != 2:
                continue
            lo, hi = semis[0] + 1, semis[1]
        for m in _RELATIONAL.finditer(code, lo, hi):
            op = m.group(0)
            if op in _FLIP:
                description = f'"{op}" -> "{_FLIP[op]}" in "{condensed(body.text[lo:hi])}"'
                yield body.replace(m.start(), m.end(), _FLIP[op], "bound", description)


def swap_sibling(body: Body) -> Iterator[Mutation]:
    for m in _SIBLING.finditer(body.code):
        if prev_token(body.code, m.start())[0] == "case":
            continue
        name = m.group(1)
        yield body.replace(m.start(), m.end(), SIBLINGS[name], "swap-sibling", f"{name} -> {SIBLINGS[name]}")


def drop_early_return(body: Body) -> Iterator[Mutation]:
    code = body.code
    for start, open_, close in _conditions(body, ("if",)):
        if body.paren_depth(start) or not statement_starts_here(code, start):
            continue  # `else if`, or the body of another if: deleting would re-attach what follows
        span = _bail_body(code, close)
        if span is None:
            continue
        stmt_lo, stmt_hi, end = span
        after = next_token(code, end)[0]
        if after == "else" or (prev_token(code, start)[0] == ":" and after == "}"):
            continue
        if body.whole_lines(start, end):
            what = f"if ({condensed(body.text[open_ + 1 : close], 40)}) {condensed(code[stmt_lo:stmt_hi], 24)}"
            yield body.delete_lines(start, end, "drop-early-return", f'drop "{what}"')


def _bail_body(code: str, close: int) -> tuple[int, int, int] | None:
    """Where the if's body (after its `)` at `close`) holds one bail-out statement, and where the if ends."""
    tok, at = next_token(code, close + 1)
    if tok == "{":
        brace = match_forward(code, at)
        if brace is None:
            return None
        lo, hi, end = at + 1, brace, brace + 1
    else:
        semi = code.find(";", at)
        if semi < 0:
            return None
        lo, hi, end = at, semi + 1, semi + 1
    return (lo, hi, end) if _BAIL.fullmatch(code, lo, hi) else None


OPERATORS: dict[str, Operator] = {
    "drop-call": drop_call,
    "negate-if": negate_if,
    "drop-if": drop_if,
    "return-zero": return_zero,
    "bound": bound,
    "swap-sibling": swap_sibling,
    "drop-early-return": drop_early_return,
}


def mutations(lines: Sequence[str], first_line: int, operators: Iterable[str] | None = None) -> tuple[Mutation, ...]:
    """Every mutation of a function's lines (from its `{` to its `}`, the first being file line
    `first_line`), in source order, operators in `OPERATORS` order on the same line."""
    names = list(OPERATORS) if operators is None else list(operators)
    unknown = [n for n in names if n not in OPERATORS]
    if unknown:
        raise ConfigError(f"unknown mutation operator {', '.join(unknown)}; known: {', '.join(OPERATORS)}")
    body = Body(lines, first_line)
    found = [
        mu
        for name in names
        for mu in OPERATORS[name](body)
        if mu.old_lines != mu.new_lines and _balanced(lines, first_line, mu)
    ]
    rank = {name: i for i, name in enumerate(OPERATORS)}
    return tuple(sorted(found, key=lambda mu: (mu.first_line, rank[mu.operator])))


def _balanced(lines: Sequence[str], first_line: int, mu: Mutation) -> bool:
    """Whether the function still has balanced brackets with `mu` applied (a guard, not a parser)."""
    i, j = mu.first_line - first_line, mu.last_line - first_line + 1
    code = code_mask("\n".join([*lines[:i], *mu.new_lines, *lines[j:]]))
    depth = {"(": 0, "[": 0, "{": 0}
    for c in code:
        if c in depth:
            depth[c] += 1
        elif c in ")]}":
            key = {")": "(", "]": "[", "}": "{"}[c]
            depth[key] -= 1
            if depth[key] < 0:
                return False
    return not any(depth.values())
