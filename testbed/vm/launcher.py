"""One long-lived thread forks every QEMU, so that its parent-death signal means our death.

QEMU asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG): it must never
outlive the testbed. But Linux sends that signal when the *thread* that forked the child
exits, not the process (prctl(2)). A VM started from a worker thread that then ends (a
per-call ThreadPoolExecutor, a thread some plugin or test starts, an executor shut down
while its VM lives on) was SIGKILLed at that moment: no QEMU message, an empty qemu.log, a
console that just stops. So every start is handed to one daemon thread that only ends with
the process (exit, crash or SIGKILL alike): the death signal then comes with our death, only.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

THREAD_NAME = "qemu-launcher"


@dataclass
class _Job(Generic[T]):
    fn: Callable[[], T]
    done: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: BaseException | None = None


class Launcher:
    """`call(fn)` runs `fn` on the launcher thread and returns what it returned (or raises
    what it raised). Started at first use; a forked child process gets a thread of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
                self._thread.start()
            return self._thread

    def call(self, fn: Callable[[], T], undo: Callable[[T], object] = lambda _: None) -> T:
        """`undo(result)` runs if the caller is interrupted (Ctrl-C) while `fn` runs: a QEMU
        started for nobody is stopped, not left to run until the testbed ends."""
        thread = self.thread
        if threading.current_thread() is thread:
            return fn()
        job: _Job[T] = _Job(fn)
        self._jobs.put(job)
        try:
            job.done.wait()
        except BaseException:
            job.done.wait()  # a fork and exec: milliseconds; what it made must not be lost
            if job.result is not None:
                undo(job.result)
            raise
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]  # None only if fn returned None

    def _serve(self) -> None:
        while True:  # never returns: its exit would be every VM's death signal
            job = self._jobs.get()
            try:
                job.result = job.fn()
            except BaseException as exc:  # the caller's, handed back to it
                job.error = exc
            finally:
                job.done.set()
                del job

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a copy of the parent's may be held by a thread that is not here
        self._jobs = queue.SimpleQueue()
        self._thread = None


LAUNCHER = Launcher()
os.register_at_fork(after_in_child=LAUNCHER._after_fork_in_child)
