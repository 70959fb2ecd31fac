"""A synchronous QMP client with deadlines, recording every event QEMU sends.

qemu.qmp is asyncio; it runs here on a private event loop in a daemon thread, so events are
recorded (to memory and a JSON-lines file) as they arrive, even while the caller is busy, and
every call has a real timeout.

The testbed's own connection is not dialled: QEMU inherits one end of a socketpair as a QMP
monitor (`-chardev socket,fd=N -mon`, the way QEMU's python/qemu/machine does it) and we speak
over the other end. Nothing to wait for, nothing to retry; and QEMU exiting first closes its end,
so the greeting read ends at once with EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

from qemu.qmp import ConnectError, ExecuteError, QMPClient, Runstate

from ..errors import GuestError, InfraError
from ..timeouts import Deadline, Timeouts

log = logging.getLogger(__name__)  # DEBUG: commands, their answers and every event


class RunState(str, Enum):
    """QEMU's RunState (qapi/run-state.json, QEMU 7.2): `query-status`'s "status"."""

    DEBUG = "debug"
    INMIGRATE = "inmigrate"
    INTERNAL_ERROR = "internal-error"
    IO_ERROR = "io-error"
    PAUSED = "paused"  # `stop`
    POSTMIGRATE = "postmigrate"
    PRELAUNCH = "prelaunch"  # -S: nothing has run yet; `cont` starts the firmware
    FINISH_MIGRATE = "finish-migrate"
    RESTORE_VM = "restore-vm"
    RUNNING = "running"
    SAVE_VM = "save-vm"
    SHUTDOWN = "shutdown"  # the guest shut down (with -no-shutdown; else QEMU exits)
    SUSPENDED = "suspended"
    WATCHDOG = "watchdog"
    GUEST_PANICKED = "guest-panicked"
    COLO = "colo"


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
    """`name` names the VM in errors and the loop thread; `connect` gives it a monitor."""

    def __init__(
        self,
        events_log: Path,
        command_timeout: float,
        name: str = "qmp",
        event_timeout: float = Timeouts.event,
    ) -> None:
        self.name = name
        self.events_log = events_log
        self.command_timeout = command_timeout
        self.event_timeout = event_timeout
        self.peer = "(not connected)"  # what we talk to, for error messages
        self._client: QMPClient | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"qmp-{name}")
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()  # indexes already returned by wait_event
        self._pump_task: asyncio.Task[None] | None = None
        self._log_file: TextIO | None = None
        # why QEMU ended, if it has (waiting up to the given seconds for an end under way):
        # the machine's, so that an error caused by QEMU's end says what ended it
        self.gone: Callable[[float], str | None] | None = None

    # -- plumbing -------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float, what: str) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise InfraError(f"QMP {what}: no answer within {timeout:.0f}s ({self.peer})") from None

    def _why(self, message: str, grace: float) -> str:
        why = self.gone(grace) if self.gone is not None else None
        return f"{message}\n{self.name}: {why}" if why else message

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

    def connect(self, monitor: socket.socket | Path, timeout: float) -> None:
        """Take the QMP greeting and negotiate capabilities, once, within `timeout`.

        `monitor` is either our end of a socketpair whose other end QEMU inherited as a monitor
        (the testbed's own connection, made while QEMU starts: QEMU exiting closes its end and
        this fails at once), or the path of a running VM's listening monitor socket (attaching
        later, from another process: the socket exists by then). No retries either way; a
        failure is an InfraError and the socket is closed.
        """
        if self._client is not None:
            raise InfraError(f"QMP {self.name}: already connected to {self.peer}")
        address: socket.socket | str
        if isinstance(monitor, socket.socket):
            address, self.peer = monitor, f"{self.name}'s inherited monitor"
        else:
            address = self.peer = str(monitor)
        self.events_log.parent.mkdir(parents=True, exist_ok=True)
        if self._log_file is None:
            self._log_file = open(self.events_log, "a", encoding="utf-8")
        if not self._thread.is_alive():
            self._thread.start()
        client = QMPClient(self.name)
        try:
            # qemu.qmp logs a failed connect as an ERROR of its own; ours, raised below, says more
            with _quiet("qemu.qmp"):
                self._run(client.connect(address), timeout, "connect")
        except Exception as exc:  # ConnectError: EOF (QEMU gone), refused, no such path; timeout
            if isinstance(monitor, socket.socket):
                monitor.close()  # qemu.qmp has already reset its side to IDLE
            if isinstance(exc, InfraError):
                raise
            if isinstance(exc, ConnectError) and isinstance(exc.exc, EOFError):
                raise InfraError(f"QMP {self.peer}: QEMU hung up before its greeting") from None
            raise InfraError(f"QMP {self.peer}: no session: {exc}") from None
        self._client = client
        self._run(self._start_pump(client), 5.0, "event pump")

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.runstate is Runstate.RUNNING

    def close(self) -> None:
        """Disconnect and stop the loop thread; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            try:
                self._run(client.disconnect(), 5.0, "disconnect")
            except Exception:  # QEMU may already be gone
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
            raise InfraError(self._why(f"QMP {name}: not connected", 0.0))
        timeout = self.command_timeout if timeout is None else timeout
        log.debug("qmp -> %s %s", name, dict(args or {}))
        try:
            result = self._run(self._client.execute(name, dict(args) if args else None), timeout, name)
        except InfraError as exc:  # no answer in time
            raise InfraError(self._why(str(exc), 0.0)) from None
        except ExecuteError as exc:  # QEMU said no: keep what it said
            log.debug("qmp <- %s: %s: %s", name, exc.error_class, exc)
            raise QMPCommandError(name, args, exc.error_class, str(exc)) from None
        except Exception as exc:  # disconnects, protocol errors
            raise InfraError(self._why(f"QMP {name} {args}: {exc}", 1.0)) from None
        log.debug("qmp <- %s: %s", name, str(result)[:300])
        return result

    def hmp(self, cmdline: str, timeout: float | None = None) -> str:
        return str(self.command("human-monitor-command", {"command-line": cmdline}, timeout=timeout))

    def run_state(self, timeout: float | None = None) -> RunState:
        """QEMU's run state (`query-status`)."""
        status = self.command("query-status", timeout=timeout)["status"]
        try:
            return RunState(status)
        except ValueError:
            raise InfraError(f"QMP query-status: unknown run state {status!r} (a newer QEMU?)") from None

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events)

    @property
    def event_count(self) -> int:
        """How many events came so far: a mark for wait_event(since=...)."""
        with self._cond:
            return len(self._events)

    def wait_event(
        self, name: str, match: Mapping[str, Any] | None = None, timeout: float | None = None, since: int = 0
    ) -> dict[str, Any]:
        """The first event `name` whose data contains `match` that no earlier wait_event
        returned — including events that arrived before this call (no race with the command
        that causes them); `since`: only from the event_count taken then on."""
        timeout = self.event_timeout if timeout is None else timeout
        deadline = Deadline(timeout)
        with self._cond:
            while True:
                for index, event in enumerate(self._events):
                    if index < since or index in self._consumed or event.get("event") != name:
                        continue
                    if matches(event.get("data") or {}, match):
                        self._consumed.add(index)
                        return event
                if deadline.expired:
                    # Events that depend on QEMU alone come at once; a late one (DEVICE_DELETED,
                    # a guest SHUTDOWN) means the guest did not do its part.
                    raise GuestError(
                        self._why(
                            f"QMP event {name} {dict(match or {})} not seen within "
                            f"{timeout:.0f}s; events so far in {self.events_log}",
                            0.0,
                        )
                    )
                self._cond.wait(min(deadline.remaining(), 1.0))
