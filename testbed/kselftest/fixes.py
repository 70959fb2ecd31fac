"""Declared build fixes for base trees whose selftests do not build as shipped.

A fix is applied only when its `needed` test holds for the tree under test (a tree that carries
the real fix is built untouched), by force-including a header through the suite Makefile's
EXTRA_CFLAGS: the tree itself is never edited. Every run lists the fixes it applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BuildFix:
    suite: str
    name: str
    needed: Callable[[Path], bool]  # given the suite's directory in the tree
    header: str
    why: str


def _uses_undefined(symbol: str) -> Callable[[Path], bool]:
    used = re.compile(rf"\b{symbol}\s*\(")
    defined = re.compile(rf"\b\w[\w\s\*]*\b{symbol}\s*\([^;)]*\w[^;]*\)\s*(?:\{{|$)", re.MULTILINE)

    def needed(suite_dir: Path) -> bool:
        texts = [p.read_text(errors="replace") for p in suite_dir.rglob("*.[ch]")]
        return any(used.search(t) for t in texts) and not any(defined.search(t) for t in texts)

    return needed


FIXES: tuple[BuildFix, ...] = (
    BuildFix(
        suite="vfio",
        name="vfio-calloc-assert",
        needed=_uses_undefined("calloc_assert"),
        header="#include <stdlib.h>\n\n"
        "static inline void *calloc_assert(size_t nmemb, size_t size)\n{\n"
        "\tvoid *p = calloc(nmemb, size);\n\n\tif (!p)\n\t\tabort();\n\treturn p;\n}\n",
        why="lib/vfio_pci_device.c calls calloc_assert(), which no header of the tree defines "
        "(Debian's 7.2.13 tree: the vfio selftests fail to build with "
        "-Werror=implicit-function-declaration)",
    ),
)


def fixes_for(suite: str, suite_dir: Path) -> tuple[BuildFix, ...]:
    return tuple(f for f in FIXES if f.suite == suite and f.needed(suite_dir))
