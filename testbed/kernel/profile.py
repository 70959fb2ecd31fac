"""Coverage builds: gcov profiling for the coverage scope's files only, and what a report of
their counters needs kept with the built kernel.

`GCOV_PROFILE_<obj>.o := y` is appended to the kbuild Makefile of each scope file's directory in
the testbed's own worktree (never the user's tree). After the build, the scope's `.gcno` notes
and sources are copied into the kernel's cache entry (`coverage/`), so its counters can be
reported later even after the worktree and build directory have moved on to another build.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..coverage.scope import Scope, profile_lines
from ..errors import ConfigError

log = logging.getLogger(__name__)

COVERAGE_DIR = "coverage"  # in a kernel's cache entry: gcno/ and src/, by kernel-relative path
MARK = "# testbed coverage: profile only the coverage scope's files (added in the testbed's worktree)"


def add_profiling(worktree: Path, scope: Scope) -> tuple[str, ...]:
    """Append the GCOV_PROFILE lines to the worktree's Makefiles; the Makefiles changed."""
    changed = []
    for directory, lines in sorted(profile_lines(scope).items()):
        makefile = worktree / directory / "Makefile"
        if not makefile.is_file():
            raise ConfigError(
                f"coverage scope {scope.file}: {directory}/ has no kbuild Makefile in {worktree}; "
                f"is {directory} a directory of this kernel tree?"
            )
        text = makefile.read_text()
        if MARK in text:  # already there: the worktree was not reset since
            continue
        makefile.write_text(text.rstrip("\n") + "\n\n" + MARK + "\n" + "\n".join(lines) + "\n")
        changed.append(f"{directory}/Makefile")
    return tuple(changed)


def missing_sources(worktree: Path, scope: Scope) -> tuple[str, ...]:
    return tuple(path for path in scope.paths() if not (worktree / path).is_file())


def keep_for_reports(scope: Scope, srctree: Path, builddir: Path, dest: Path) -> tuple[str, ...]:
    """Copy each scope file's source and .gcno into dest/src and dest/gcno; the files that were
    not compiled (no .gcno: not built under this config) are returned."""
    not_built = []
    for path in scope.paths():
        gcno = builddir / Path(path).with_suffix(".gcno")
        if not gcno.is_file():
            not_built.append(path)
            continue
        for src, kept in (
            (gcno, dest / "gcno" / Path(path).with_suffix(".gcno")),
            (srctree / path, dest / "src" / path),
        ):
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, kept)
    if not_built:
        log.info("coverage scope files not compiled in this config: %s", ", ".join(not_built))
    return tuple(not_built)
