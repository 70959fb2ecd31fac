"""A synchronous QMP client with deadlines, recording every event QEMU sends.

qemu.qmp is asyncio; it runs here on a private event loop in a daemon thread, so events are
recorded (to memory and a JSON-lines file) as they arrive, even while the caller is busy, and
every call has a real timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from qemu.qmp import ExecuteError, QMPClient

from ..errors import GuestError, InfraError
from .timeouts import Deadline

log = logging.getLogger(__name__)  # DEBUG: commands, their answers and every event


class QMPCommandError(InfraError):
    """QEMU refused a command: keeps the command, its arguments and QEMU's error class."""

    def __init__(self, command: str, args: Mapping[str, Any] | None, error_class: str, desc: str) -> None:
        super().__init__(f"QMP {command} {dict(args or {})}: {error_class}: {desc}")
        self.command = command
        self.arguments = dict(args or {})
        self.error_class = error_class
        self.desc = desc


def matches(data: Mapping[str, Any], match: Mapping[str, Any] | None) -> bool:
    """Every key of `match` is in `data` with an equal value (nested dicts match recursively)."""
    if not match:
        return True
    for key, want in match.items():
        if key not in data:
            return False
        have = data[key]
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            if not matches(have, want):
                return False
        elif have != want:
            return False
    return True


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


class QMP:
    def __init__(
        self,
        socket_path: Path,
        events_log: Path,
        command_timeout: float,
        name: str = "qmp",
        event_timeout: float = 30.0,
    ) -> None:
        self.socket_path = socket_path
        self.events_log = events_log
        self.command_timeout = command_timeout
        self.event_timeout = event_timeout
        self._client: QMPClient | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"qmp-{name}")
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()  # indexes already returned by wait_event
        self._pump_task: asyncio.Task[None] | None = None
        self._log_file: TextIO | None = None

    # -- plumbing -------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float, what: str) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise InfraError(f"QMP {what}: no answer within {timeout:.0f}s ({self.socket_path})") from None

    def _record(self, message: Mapping[str, Any]) -> None:
        event = json.loads(json.dumps(dict(message), default=str))  # a plain, copyable dict
        event.setdefault("data", {})
        event["host_time"] = time.time()
        log.debug("qmp event %s %s", event.get("event"), event.get("data"))
        with self._cond:
            self._events.append(event)
            if self._log_file is not None:
                self._log_file.write(json.dumps(event, sort_keys=True) + "\n")
                self._log_file.flush()
            self._cond.notify_all()

    async def _pump(self, client: QMPClient) -> None:
        async for message in client.events:
            self._record(message)

    async def _start_pump(self, client: QMPClient) -> None:
        self._pump_task = asyncio.ensure_future(self._pump(client))

    async def _stop_pump(self) -> None:
        task, self._pump_task = self._pump_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- connection -----------------------------------------------------------------------

    def connect(self, timeout: float, alive: Callable[[], bool]) -> None:
        """Connect, retrying while QEMU has not created its socket yet; fail fast if it died."""
        self.events_log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.events_log, "a", encoding="utf-8")
        if not self._thread.is_alive():
            self._thread.start()
        deadline = Deadline(timeout)
        # qemu.qmp logs each refused attempt as an ERROR; until QEMU has made its socket those
        # are expected, and the final failure is raised below anyway
        with _quiet("qemu.qmp"):
            self._connect_loop(deadline, timeout, alive)

    def _connect_loop(self, deadline: Deadline, timeout: float, alive: Callable[[], bool]) -> None:
        last: Exception | None = None
        while not deadline.expired:
            if not alive():
                raise InfraError(f"QEMU exited before its QMP socket {self.socket_path} accepted a connection")
            client = QMPClient("testbed")
            try:
                self._run(client.connect(str(self.socket_path)), max(0.5, min(5.0, deadline.remaining())), "connect")
            except (InfraError, OSError, Exception) as exc:  # ConnectError, refused, missing
                last = exc
                time.sleep(0.05)
                continue
            self._client = client
            self._run(self._start_pump(client), 5.0, "event pump")
            return
        raise InfraError(f"QMP socket {self.socket_path}: no connection within {timeout:.0f}s ({last})")

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.runstate.name == "RUNNING"

    def close(self) -> None:
        """Disconnect and stop the loop thread; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            try:
                self._run(client.disconnect(), 5.0, "disconnect")
            except Exception:  # noqa: BLE001 - QEMU may already be gone
                pass
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._run(self._stop_pump(), 5.0, "event pump stop")
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
        with self._cond:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    # -- API ------------------------------------------------------------------------------

    def command(self, name: str, args: Mapping[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Execute a QMP command; its `return` value (a dict, a list, ...).

        The arguments are one mapping, as QMP has them: `qmp.command("device_del", {"id": "x"})`,
        `qmp.command("human-monitor-command", {"command-line": "info qtree"})`; a device
        property named `timeout` stays a device property.
        """
        if self._client is None:
            raise InfraError(f"QMP {name}: not connected")
        timeout = self.command_timeout if timeout is None else timeout
        log.debug("qmp -> %s %s", name, dict(args or {}))
        try:
            result = self._run(self._client.execute(name, dict(args) if args else None), timeout, name)
        except InfraError:
            raise
        except ExecuteError as exc:  # QEMU said no: keep what it said
            log.debug("qmp <- %s: %s: %s", name, exc.error_class, exc)
            raise QMPCommandError(name, args, exc.error_class, str(exc)) from None
        except Exception as exc:  # disconnects, protocol errors
            raise InfraError(f"QMP {name} {args}: {exc}") from None
        log.debug("qmp <- %s: %s", name, str(result)[:300])
        return result

    def hmp(self, cmdline: str, timeout: float | None = None) -> str:
        return str(self.command("human-monitor-command", {"command-line": cmdline}, timeout=timeout))

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events)

    def wait_event(
        self, name: str, match: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """The first event `name` whose data contains `match` that no earlier wait_event
        returned — including events that arrived before this call (no race with the command
        that causes them)."""
        timeout = self.event_timeout if timeout is None else timeout
        deadline = Deadline(timeout)
        with self._cond:
            while True:
                for index, event in enumerate(self._events):
                    if index in self._consumed or event.get("event") != name:
                        continue
                    if matches(event.get("data") or {}, match):
                        self._consumed.add(index)
                        return event
                if deadline.expired:
                    # Events that depend on QEMU alone come at once; a late one (DEVICE_DELETED,
                    # a guest SHUTDOWN) means the guest did not do its part.
                    raise GuestError(
                        f"QMP event {name} {dict(match or {})} not seen within "
                        f"{timeout:.0f}s; events so far in {self.events_log}"
                    )
                self._cond.wait(min(deadline.remaining(), 1.0))
