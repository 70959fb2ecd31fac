"""Running kbuild: out of tree (O=), everything to a log file, a progress line now and then."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import ConfigError

PROGRESS_EVERY = 15.0  # seconds between progress lines during a long make
_COMPILED = ("  CC ", "  AS ", "  LD ", "  AR ")
# what a missing build dependency looks like in the log, and the Debian package to install
_MISSING_TOOLS = {
    "flex: not found": "flex",
    "bison: not found": "bison",
    "bc: not found": "bc",
    "lz4: not found": "lz4",  # the bzImage's compression (kernel-configs/base.config)
    "openssl/": "libssl-dev",
    "gelf.h": "libelf-dev",
    "libelf.h": "libelf-dev",
    "cc: not found": "build-essential",
    "gcc: not found": "build-essential",
}
BUILD_PACKAGES = ("build-essential", "flex", "bison", "bc", "libelf-dev", "libssl-dev", "lz4")


class KernelBuildError(ConfigError):
    """kbuild failed: the tree, its patches or its config are wrong (a retry will not help)."""


def jobs() -> int:
    """One more job than CPUs we may use: keeps the CPUs busy while one job waits on I/O."""
    return len(os.sched_getaffinity(0)) + 1


def make_argv(srctree: Path, builddir: Path, *targets: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["make", "-C", str(srctree), f"O={builddir}", *extra, *targets]


@contextlib.contextmanager
def _stopped_on_the_way_out(proc: subprocess.Popen[str]) -> Iterator[None]:
    """Ctrl-C or SIGTERM (Terminated) while make runs: make is ended and waited for before the
    kernel lock is released, so no other build starts in a directory make still writes."""
    try:
        yield
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def run_make(
    argv: list[str], log: Path, what: str, progress: Callable[[str], None], env: dict[str, str] | None = None
) -> None:
    """Run make, appending its output to `log`; on failure raise with the log's tail."""
    tail: deque[str] = deque(maxlen=25)
    compiled = 0
    start = last_report = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                env={**os.environ, **(env or {})},
            )
        except FileNotFoundError as exc:
            raise KernelBuildError(f"{argv[0]} not found: install {' '.join(BUILD_PACKAGES)}") from exc
        assert proc.stdout is not None
        with proc, _stopped_on_the_way_out(proc):
            for line in proc.stdout:
                out.write(line)
                tail.append(line.rstrip("\n"))
                if line.startswith(_COMPILED):
                    compiled += 1
                now = time.monotonic()
                if now - last_report >= PROGRESS_EVERY:
                    last_report = now
                    done = f", {compiled} objects" if compiled else ""
                    progress(f"kernel: {what}: {now - start:.0f}s{done}; {line.strip()[:80]}")
        if proc.returncode != 0:
            out.flush()
            text = "\n".join(tail)
            missing = sorted({pkg for needle, pkg in _MISSING_TOOLS.items() if needle in text})
            hint = f"\nmissing build dependency? install: {' '.join(missing)}" if missing else ""
            raise KernelBuildError(
                f"{what} failed (make exit {proc.returncode}); full log: {log}\n"
                + "\n".join(f"  | {t}" for t in tail)
                + hint
            )
