"""Fast paths through gcc's own tools, for runs with hundreds of snapshots.

gcovr costs ~1 s a snapshot (a Python start, gcov, its own line model); a run of the four VM
suites takes ~550 snapshots (every test's own, and what ran between tests). So:

- the run's total: `gcov-tool merge` adds the snapshots' counters up (gcc's tool, milliseconds a
  merge), and gcovr runs once on the sum, for the report formats;
- each test's lines, for the index: one `gcov --json-format --stdout` process reads all of a
  snapshot's counters (gcov's documented JSON output; the counters are never parsed here).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InfraError
from .gcovr import gcov_executable
from .scope import Scope


@functools.cache
def gcov_tool() -> str:
    """gcov-tool of the gcov that reads the notes (gcov-12 -> gcov-tool-12)."""
    gcov = gcov_executable()
    versioned = re.sub(r"^gcov", "gcov-tool", gcov)
    return versioned if shutil.which(versioned) else "gcov-tool"


def _run(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise InfraError(f"coverage: cannot run {argv[0]} ({exc}); it comes with gcc") from exc
    if proc.returncode != 0:
        raise InfraError(f"coverage: {what} failed ({' '.join(argv[:3])} ...): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def merge_snapshots(snapshots: Sequence[Path], out: Path) -> Path:
    """The sum of the snapshots' counters in `out` (laid out like each snapshot)."""
    if out.exists():
        shutil.rmtree(out)
    if not snapshots:
        raise InfraError("coverage: no snapshot to merge")
    with tempfile.TemporaryDirectory(prefix="testbed-gcov-merge-") as tmp:
        acc = Path(tmp) / "acc0"
        shutil.copytree(snapshots[0], acc)
        for n, snapshot in enumerate(snapshots[1:], 1):
            nxt = Path(tmp) / f"acc{n}"
            _run([gcov_tool(), "merge", "-o", str(nxt), str(acc), str(snapshot)], f"merging {snapshot}")
            shutil.rmtree(acc)
            acc = nxt
        shutil.copytree(acc, out)
    return out


def _documents(text: str) -> list[dict[str, Any]]:
    """gcov --stdout prints one JSON document per counters file, one after the other."""
    decoder, i = json.JSONDecoder(), 0
    docs: list[dict[str, Any]] = []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)


def lines_of(snapshot: Path, gcno_dir: Path, srctree: Path, scope: Scope) -> dict[str, Any]:
    """The snapshot's line counts of the scope's files, as gcovr's JSON has them
    (`{"files": [{"file": kernel-relative, "lines": [{"line_number", "count", ...}]}]}`)."""
    gcdas = sorted(snapshot.rglob("*.gcda"))
    if not gcdas:
        return {"files": []}
    root = str(srctree.resolve()) + "/"
    with tempfile.TemporaryDirectory(prefix="testbed-gcov-") as tmp:
        paths = []
        for gcda in gcdas:  # gcov wants the notes beside the counters: links, nothing copied
            rel = gcda.relative_to(snapshot)
            notes = gcno_dir / rel.with_suffix(".gcno")
            if not notes.is_file():
                continue
            link = Path(tmp) / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(gcda.resolve())
            link.with_suffix(".gcno").symlink_to(notes.resolve())
            paths.append(str(link))
        out = _run([gcov_executable(), "--json-format", "--stdout", *paths], f"gcov on {snapshot}")
    files = []
    for doc in _documents(out):
        for file in doc.get("files", []):
            name = str(file.get("file", ""))
            source = name[len(root) :] if name.startswith(root) else name
            if scope.in_scope(source):
                files.append({**file, "file": source})
    return {"files": files}
