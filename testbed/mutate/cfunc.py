"""Find function definitions in kernel C source, without a C parser.

Mutation testing works function by function, so it needs each definition's lines. Kernel
coding style makes that tractable without libclang: a definition is a `{` at file scope whose
head (the text since the previous `;`, `}` or file start) ends in `)`, and its matching `}`
ends it. Braces are only counted in code: `code_mask` blanks comments, the insides of string
and char literals and whole preprocessor lines first, keeping every offset and newline, so a
`{` in a string or a `#if` branch cannot fool the count and the operators can match patterns
on the mask and edit the original text at the same offsets. The dead code of `#if 0` is
blanked as well.

Not handled, being absent from kernel style: K&R parameter lists, functions returning function
pointers written without a typedef, braces that only balance across `#if`/`#else` branches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# comments, string and char literals, and preprocessor lines (with their continuations, and
# comments or strings inside them), leftmost first: what comes first in the text wins
_NOT_CODE = re.compile(
    r"""
      (?P<line>//(?:\\\n|[^\n])*)
    | (?P<block>/\*.*?(?:\*/|\Z))
    | (?P<string>"(?:\\.|[^"\\\n])*"?)
    | (?P<char>'(?:\\.|[^'\\\n])*'?)
    | (?P<pre>^[ \t]*\#(?:\\\n|/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|[^\n])*)
    """,
    re.VERBOSE | re.DOTALL | re.MULTILINE,
)
_DIRECTIVE = re.compile(r"[ \t]*#[ \t]*(\w+)[ \t]*(\w*)")
_IDENT_BEFORE = re.compile(r"([A-Za-z_]\w*)\s*$")
# macros that take parentheses in a declaration head but are not the function's name
ATTRIBUTE_MACROS = frozenset(
    {
        "__attribute__",
        "__printf",
        "__scanf",
        "__acquires",
        "__releases",
        "__must_hold",
        "__cond_acquires",
        "__cond_releases",
        "__section",
        "__aligned",
        "__alloc_size",
        "__diagnose_as",
        "__counted_by",
        "__no_sanitize_address",
        "__nocfi",
    }
)


@dataclass(frozen=True)
class CFunction:
    """One function definition; line numbers are 1-based."""

    name: str
    start_line: int  # where the head starts: `static`, the return type or an attribute
    body_start: int  # the line of the opening `{`
    end_line: int  # the line of the closing `}`

    def body_lines(self, text: str) -> tuple[str, ...]:
        """The lines from the opening `{` to the closing `}`, both included, as written."""
        return tuple(split_lines(text)[self.body_start - 1 : self.end_line])


def split_lines(text: str) -> list[str]:
    """Lines split on "\\n" only: a form feed or a lone "\\r" is no line break to git or the compiler."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def code_mask(text: str) -> str:
    """`text` with comments, literal contents and preprocessor lines turned to spaces (same length, newlines kept)."""
    out: list[str] = []
    done = 0
    for m in _NOT_CODE.finditer(text):
        out.append(text[done : m.start()])
        token = m.group(0)
        if m.lastgroup in ("string", "char") and len(token) >= 2 and token[-1] == token[0]:
            # keep the quotes: the literal stays one token for the operators' patterns
            out.append(token[0] + _blank(token[1:-1]) + token[-1])
        else:
            out.append(_blank(token))
        done = m.end()
    out.append(text[done:])
    return _blank_if0("".join(out), text)


def _blank_if0(mask: str, text: str) -> str:
    """Blank the dead code of `#if 0` blocks too (up to their `#else`, `#elif` or `#endif`)."""
    lines = mask.split("\n")
    depth = 0  # > 0: inside an `#if 0`, counting the conditionals nested in it
    for i, raw in enumerate(text.split("\n")):
        directive = _DIRECTIVE.match(raw) if not lines[i].strip() else None
        word = directive.group(1) if directive else ""
        if depth == 0:
            if word == "if" and directive and directive.group(2) == "0":
                depth = 1
            continue
        if word in ("if", "ifdef", "ifndef"):
            depth += 1
        elif word == "endif" or (depth == 1 and word in ("else", "elif")):
            depth -= 1
        if depth:
            lines[i] = _blank(lines[i])
    return "\n".join(lines)


def _blank(s: str) -> str:
    return re.sub(r"[^\n]", " ", s)


def find_functions(text: str) -> tuple[CFunction, ...]:
    """Every function definition in `text`, in source order."""
    code = code_mask(text)
    found: list[CFunction] = []
    depth = 0
    head_start = 0  # where the current file-scope declaration began
    body_open = 0
    for i, c in enumerate(code):
        if c == "{":
            if depth == 0:
                body_open = i
            depth += 1
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                func = _definition(code, head_start, body_open, i)
                if func is not None:
                    found.append(func)
                head_start = i + 1
        elif c == ";" and depth == 0:
            head_start = i + 1
    return tuple(found)


def find_function(text: str, name: str) -> CFunction | None:
    """The first definition of `name` in `text`, or None."""
    return next((f for f in find_functions(text) if f.name == name), None)


def _definition(code: str, head_start: int, body_open: int, body_close: int) -> CFunction | None:
    """The function whose body is code[body_open:body_close+1], or None for a struct, enum or initializer."""
    head = code[head_start:body_open]
    if not head.rstrip().endswith(")") or "=" in head:
        return None
    name = _name(head)
    if name is None:
        return None
    first = head_start + (len(head) - len(head.lstrip()))
    return CFunction(
        name=name,
        start_line=_line(code, first),
        body_start=_line(code, body_open),
        end_line=_line(code, body_close),
    )


def _name(head: str) -> str | None:
    """The identifier before the first file-scope `(` of `head` that is not an attribute macro."""
    depth = 0
    for i, c in enumerate(head):
        if c == "(":
            if depth == 0:
                m = _IDENT_BEFORE.search(head, 0, i)
                if m is not None and m.group(1) not in ATTRIBUTE_MACROS:
                    return m.group(1)
            depth += 1
        elif c == ")":
            depth -= 1
    return None


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1
