"""A child command (the pytest runs of `ab`, `bisect`, `kselftest`, a matrix cell) that ends
with its parent: a SIGTERM sent to `testbed` is passed on, the child tears its VMs down and
writes what it has, and only then does `testbed` stop (Terminated), instead of leaving a
pytest and its QEMUs running. Ctrl-C reaches the whole foreground group by itself: the parent
waits for the child's own teardown."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt (cleanups run; `except Exception` does
    not swallow it); `testbed` exits 143."""

    exit_code = 128 + signal.SIGTERM


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def run_child(argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> int:
    """Run `argv` to its end and return its exit status; a SIGTERM meanwhile is forwarded to it
    and raises Terminated once it has exited."""
    received: list[int] = []
    child: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []  # arrived before the child existed

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if child:
            child[0].send_signal(signum)
        else:
            pending.append(signum)

    # installed first: a SIGTERM while the child starts is forwarded as soon as it exists
    previous = signal.signal(signal.SIGTERM, forward)
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env) if env is not None else None)
        child.append(proc)
        for signum in pending:
            proc.send_signal(signum)
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # the child got the same SIGINT: let it finish its teardown
                log.debug("interrupted: waiting for pid %d to stop", proc.pid)
                received.append(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if signal.SIGTERM in received:
        raise Terminated()
    if signal.SIGINT in received:
        raise KeyboardInterrupt()
    return code


def run_in_session(argv: Sequence[str], cwd: Path, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a session of its own (a tree of processes: `git bisect run` and its steps)
    and return its status and, with `capture`, its stdout; when we are interrupted or terminated
    meanwhile, the whole session gets SIGTERM (SIGKILL after 30 s) before we go on unwinding."""
    out = subprocess.PIPE if capture else None
    proc = subprocess.Popen(list(argv), cwd=cwd, stdout=out, text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate()
    except BaseException:
        stop_session(proc)
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout or "", None)


def stop_session(proc: subprocess.Popen[str] | subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM to the session `proc` leads (its pytest tears its VMs down), SIGKILL after `grace_s`
    to what is left of it; returns once the leader and the rest of its process group are gone
    (a grandchild may take its SIGTERM later than the leader on a busy host)."""
    deadline = time.monotonic() + grace_s
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the session already ended
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _group_alive(pgid: int) -> bool:
    """Whether a live process of the group is left (/proc; an exited one its parent has not
    reaped yet does not count: under an init that never reaps, it would stay forever)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # after the command's closing parenthesis: state, ppid, pgrp, ...
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False
