"""Kernel counters to coverage reports, by running gcovr (the maintained gcov front end).

A snapshot directory holds the guest's `.gcda` counters by path relative to the kernel's build
directory (`snapshot/drivers/pci/p2pdma.gcda`); the build directory holds the `.gcno` notes at
the same relative path. gcov needs the two side by side, so `tracefile` copies them into a
private directory laid out like the build directory and runs gcovr on it, once per snapshot,
into gcovr's JSON tracefile. `merge` adds tracefiles up into the report formats.

Where gcov runs matters: it opens the source by the name the compiler recorded in the notes,
relative to its own working directory. kbuild runs the compiler in the build directory and
names sources `$(srctree)/...`: absolute when O= is outside the tree (found anywhere), `../...`
when O= is a child of the tree (and `../src/...` in the tests' layout). So the private directory
is made next to the build directory, at the same depth, where those relative names resolve as
they did for the compiler; gcovr falls back to `--root` (the source tree), where names recorded
kernel-relative (`-fprofile-prefix-map=$(srctree)/=`) resolve. The counters are never parsed
here: gcov reads them, gcovr maps lines to files and functions.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InfraError
from .scope import Scope

# gcovr of this interpreter (pyproject pins it), never one that happens to be on PATH
GCOVR = (sys.executable, "-m", "gcovr")


@dataclass(frozen=True)
class MergedReport:
    """What `merge` wrote."""

    lcov: Path  # coverage.info
    cobertura: Path  # coverage.xml
    html: Path  # html/index.html (one page per file beside it)
    json: Path  # coverage.json: gcovr's JSON of the merged counts
    log: Path  # gcovr's own output


@functools.cache
def gcov_executable(cc: str = "gcc") -> str:
    """The gcov that reads `cc`'s notes: gcov-<major> (Debian installs gcov-12 for gcc 12) if
    present, else plain gcov. A gcov of another major version rejects the notes."""
    try:
        first = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "gcov"
    found = re.search(r"(\d+)\.\d+(\.\d+)?\s*$", first) or re.search(r"\s(\d+)\.\d+", first)
    if found and shutil.which(f"gcov-{found.group(1)}"):
        return f"gcov-{found.group(1)}"
    return "gcov"


def tracefile_argv(workdir: Path, srctree: Path, out_json: Path, gcov: str, filters: Sequence[str] = ()) -> list[str]:
    return [
        *GCOVR,
        "--config",
        os.devnull,  # never a gcovr.cfg or pyproject.toml that happens to be in the source tree
        "--root",
        str(srctree),
        "--gcov-executable",
        gcov,
        "--gcov-object-directory",
        str(workdir),
        # branches gcc attributes to lines holding no code (a lone `}` after inlining, an
        # epilogue) no test can aim at; branches of real statements (WARN_ON, unlikely()) stay
        "--exclude-unreachable-branches",
        *[arg for pattern in filters for arg in ("--filter", pattern)],
        "--json",
        str(out_json),
        str(workdir),
    ]


def tracefile(
    snapshot_dir: Path,
    builddir: Path,
    srctree: Path,
    out_json: Path,
    *,
    scope: Scope | None = None,
    gcov: str | None = None,
) -> Path:
    """gcovr's JSON tracefile of one snapshot's counters, files relative to `srctree`.

    With a scope, only its files count, and a scope file with notes but no counters in the
    snapshot (its module never loaded) is reported with every line unexecuted. gcovr's output
    goes to `<out_json>.log`."""
    for what, path in (
        ("snapshot", snapshot_dir),
        ("kernel build directory", builddir),
        ("kernel source tree", srctree),
    ):
        if not path.is_dir():
            raise ConfigError(f"coverage: the {what} {path} is not a directory")
    objects = _objects(snapshot_dir, builddir, scope)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    log = out_json.with_suffix(".log")
    with _workdir(builddir) as workdir:
        for rel, gcda in objects.items():
            (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(builddir / rel.with_suffix(".gcno"), workdir / rel.with_suffix(".gcno"))
            if gcda is not None:
                shutil.copyfile(gcda, workdir / rel.with_suffix(".gcda"))
        argv = tracefile_argv(workdir, srctree, out_json, gcov or gcov_executable(), _filters(scope, srctree))
        _run(argv, log, f"the counters in {snapshot_dir}")
    if not json.loads(out_json.read_text()).get("files"):
        # gcovr drops sources outside --root without a word: absolute names of another tree
        raise ConfigError(
            f"coverage: none of the sources the notes in {builddir} name is under {srctree} (built from "
            f"another tree? gcovr's log: {log}); pass the tree the kernel was built from, or build with "
            f"-fprofile-prefix-map=$(srctree)/= so the notes name sources kernel-relative"
        )
    return out_json


def merge(tracefiles: Sequence[Path], srctree: Path, outdir: Path, scope: Scope | None = None) -> MergedReport:
    """Add the tracefiles up (counts of one line sum) into coverage.info (lcov), coverage.xml
    (Cobertura), html/index.html and coverage.json under `outdir`, only the scope's files."""
    if not tracefiles:
        raise ConfigError("coverage: no tracefiles to merge (no snapshot was taken?)")
    missing = [str(path) for path in tracefiles if not path.is_file()]
    if missing:
        raise ConfigError(f"coverage: tracefiles missing: {', '.join(missing)}")
    report = MergedReport(
        outdir / "coverage.info",
        outdir / "coverage.xml",
        outdir / "html" / "index.html",
        outdir / "coverage.json",
        outdir / "gcovr.log",
    )
    report.html.parent.mkdir(parents=True, exist_ok=True)
    title = f"Kernel coverage ({scope.file.name})" if scope else "Kernel coverage"
    argv = [*GCOVR, "--config", os.devnull, "--root", str(srctree)]
    argv += [arg for path in tracefiles for arg in ("--json-add-tracefile", str(path))]
    argv += [arg for pattern in _filters(scope, srctree) for arg in ("--filter", pattern)]
    argv += ["--lcov", str(report.lcov), "--cobertura", str(report.cobertura), "--json", str(report.json)]
    argv += ["--html-details", str(report.html), "--html-title", title]
    _run(argv, report.log, f"{len(tracefiles)} tracefile(s)")
    return report


def _objects(snapshot_dir: Path, builddir: Path, scope: Scope | None) -> dict[Path, Path | None]:
    """Object path (relative, no suffix) -> its counters in the snapshot (None: notes only)."""
    wanted = {Path(path).with_suffix("") for path in scope.paths()} if scope else None
    found: dict[Path, Path | None] = {}
    for gcda in sorted(snapshot_dir.rglob("*.gcda")):
        rel = gcda.relative_to(snapshot_dir).with_suffix("")
        if wanted is None or rel in wanted:
            found[rel] = gcda
    no_notes = [str(rel.with_suffix(".gcda")) for rel in found if not (builddir / rel.with_suffix(".gcno")).is_file()]
    if no_notes:
        raise ConfigError(
            f"coverage: {builddir} has no .gcno notes for {len(no_notes)} counter file(s) of {snapshot_dir} "
            f"({', '.join(no_notes[:3])}{', ...' if len(no_notes) > 3 else ''}): the counters come from another build"
        )
    for rel in sorted(wanted or ()):
        if rel not in found and (builddir / rel.with_suffix(".gcno")).is_file():
            found[rel] = None  # compiled, never ran (a module not loaded): every line unexecuted
    if not found:
        raise ConfigError(
            f"coverage: no .gcda counters in {snapshot_dir}" + (f" for the files of {scope.file}" if scope else "")
        )
    return found


def _filters(scope: Scope | None, srctree: Path) -> list[str]:
    # gcovr matches an absolute filter against the real path of each source
    root = srctree.resolve()
    return [re.escape(str(root / path)) + "$" for path in scope.paths()] if scope else []


@contextlib.contextmanager
def _workdir(builddir: Path) -> Iterator[Path]:
    """A private directory beside the build directory (same depth: `../`-relative source names
    resolve from it as from the build directory), or a plain temporary one if that is read-only."""
    try:
        path = Path(tempfile.mkdtemp(prefix=".testbed-gcov-", dir=builddir.resolve().parent))
    except OSError:
        path = Path(tempfile.mkdtemp(prefix="testbed-gcov-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run(argv: list[str], log: Path, what: str) -> None:
    try:
        with log.open("w") as out:
            out.write("$ " + " ".join(argv) + "\n")
            out.flush()
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as exc:
        raise InfraError(f"coverage: cannot run gcovr ({exc}); install it: pip install 'gcovr>=8.0'") from exc
    if proc.returncode == 0:
        return
    text = log.read_text(errors="replace")
    if "No module named gcovr" in text:
        raise InfraError(f"coverage: gcovr is not installed in {sys.prefix}: pip install 'gcovr>=8.0' (see {log})")
    if "stamp mismatch" in text:
        raise ConfigError(
            f"coverage: {what} were written by another build than its .gcno notes (gcov: stamp mismatch); see {log}"
        )
    if "Cannot open source file" in text or "could not infer a working directory" in text:
        raise ConfigError(
            f"coverage: gcov cannot find the sources the notes of {what} name (a tree that moved? the notes "
            f"record paths as the compiler saw them; build with -fprofile-prefix-map=$(srctree)/= to record "
            f"them kernel-relative); see {log}"
        )
    raise InfraError(f"coverage: gcovr failed on {what} (exit {proc.returncode}); see {log}")
