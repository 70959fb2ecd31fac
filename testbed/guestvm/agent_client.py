"""The host end of the guest agent (testbed/in_guest/agent.py): one long-lived process per
VM on one SSH channel (a direct-tcpip one to the interpreter testbed-init started), JSON
lines tagged with request ids, answers and events matched to their requests by a reader
thread. Calls and spawned helpers share the channel; every wait has a deadline from
vm/timeouts.py and fails with what the guest said."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import GuestError, GuestHung, InfraError
from ..timeouts import Deadline

log = logging.getLogger(__name__)  # DEBUG: every request and its answer, with seconds
HUNG_LOOK_S = 10.0  # a wait for an answer asks this often whether the guest still runs


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None


class Spawned:
    """A helper the agent runs as its child: its JSON lines arrive as events."""

    def __init__(self, agent: Agent, rid: int, what: str) -> None:
        self.agent = agent
        self.rid = rid
        self.what = what
        self.pid: int | None = None
        self.status: int | None = None
        self.stderr = ""
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    # fed by the agent's reader thread
    def _feed(self, msg: dict[str, Any]) -> None:
        with self._cond:
            if "started" in msg:
                self.pid = msg["started"]
            elif "event" in msg:
                self._events.append(msg["event"])
            elif "exit" in msg:
                self.status = int(msg["exit"])
                self.stderr = msg.get("stderr", "")
            elif "error" in msg:
                self.status, self.stderr = -1, str(msg["error"])
            self._cond.notify_all()

    def lines(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events)

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str = "") -> dict:
        """The first event `predicate` accepts; a GuestError if the helper exits or time runs out."""
        deadline = Deadline(timeout)
        with self._cond:
            while True:
                found = next((e for e in self._events if predicate(e)), None)
                if found is not None:
                    return found
                if self.status is not None:
                    raise GuestError(
                        f"guest helper {self.what} exited {self.status} before {what or 'the event'}: "
                        f"{self._events[-5:]}\n{self.stderr}"
                    )
                if deadline.expired or self.agent.dead is not None:
                    raise GuestError(
                        f"guest helper {self.what}: no {what or 'event'} within {timeout:.0f}s "
                        f"({self.agent.dead or 'still running'}): {self._events[-5:]}"
                    )
                self._cond.wait(min(deadline.remaining(), 1.0))

    def wait_exit(self, timeout: float) -> int:
        deadline = Deadline(timeout)
        with self._cond:
            while self.status is None:
                if deadline.expired or self.agent.dead is not None:
                    raise GuestError(
                        f"guest helper {self.what} did not exit within {timeout:.0f}s: {self._events[-5:]}"
                    )
                self._cond.wait(min(deadline.remaining(), 1.0))
            return self.status

    def send(self, line: dict[str, Any], timeout: float) -> None:
        """One JSON line on the helper's stdin (a go, a stop, an operation)."""
        self.agent.request({"op": "send", "to": self.rid, "line": line}, timeout)

    def kill(self, sig: int, timeout: float) -> None:
        self.agent.request({"op": "kill", "to": self.rid, "signal": sig}, timeout)


class Agent:
    """Speaks to `agent.py` over `writer`/`reader` (a paramiko channel's files, or a pipe)."""

    def __init__(
        self,
        writer: IO[bytes],
        reader: IO[bytes],
        name: str,
        on_close: Callable[[], None] | None = None,
        hung: Callable[[], str | None] = lambda: None,
    ):
        self.name = name
        self._hung = hung  # why the guest is taken for stopped (Machine.hung), looked at in long waits
        self._writer = writer
        self._reader = reader
        self._on_close = on_close
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._spawned: dict[int, Spawned] = {}
        self.dead: str | None = None  # why the channel is gone
        self.ready = threading.Event()  # the agent said it runs
        self._settled = threading.Event()  # it said so, or its channel closed first
        self._thread = threading.Thread(target=self._read, name=f"agent-{name}", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> None:
        """Until the agent says it runs; at once a GuestError if its channel closes first."""
        if not self._settled.wait(timeout):
            raise GuestError(f"{self.name}: the guest agent did not start within {timeout:.0f}s")
        if not self.ready.is_set():
            raise GuestError(f"{self.name}: the guest agent did not start: {self.dead}")

    # -- reader thread ------------------------------------------------------------------

    def _read(self) -> None:
        try:
            for raw in self._reader:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.debug("%s: agent printed %r", self.name, raw[:200])
                    continue
                self._dispatch(msg)
            self._die("the agent's channel closed")
        except Exception as exc:  # the channel broke; every waiter is told
            self._die(f"the agent's channel broke: {exc}")

    def _die(self, why: str) -> None:
        """The agent is gone (the first reason stands): every waiter is told."""
        if self.dead is None:
            self.dead = why
        self._settled.set()
        with self._lock:
            pending = list(self._pending.values())
            spawned = list(self._spawned.values())
        for p in pending:
            p.done.set()
        for s in spawned:
            with s._cond:
                s._cond.notify_all()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("agent") == "failed":  # the listener's word for a session that died
            self._die(f"its session failed in the guest:\n{msg.get('error', '')}".rstrip())
            return
        if "agent" in msg:
            self.ready.set()
            self._settled.set()
            return
        rid = msg.get("id")
        with self._lock:
            spawned = self._spawned.get(rid) if isinstance(rid, int) else None
            pending = self._pending.get(rid) if isinstance(rid, int) else None
        if spawned is not None:
            spawned._feed(msg)
            if "exit" in msg or "error" in msg:
                with self._lock:
                    self._spawned.pop(spawned.rid, None)
        elif pending is not None:
            pending.answer = msg
            pending.done.set()
        else:
            log.debug("%s: unmatched agent message %s", self.name, msg)

    # -- requests -------------------------------------------------------------------------

    def _send(self, req: dict[str, Any]) -> None:
        if self.dead is not None:
            raise InfraError(f"{self.name}: {self.dead}")
        data = (json.dumps(req) + "\n").encode()
        with self._lock:
            self._writer.write(data)
            self._writer.flush()

    def request(self, req: dict[str, Any], timeout: float) -> Any:
        rid = next(self._ids)
        pending = _Pending()
        with self._lock:
            self._pending[rid] = pending
        started = time.monotonic()
        try:
            self._send({**req, "id": rid})
            deadline = Deadline(timeout)
            while not pending.done.wait(min(HUNG_LOOK_S, deadline.remaining())):
                if deadline.expired:
                    raise GuestError(f"{self.name}: no answer to {_describe(req)} within {timeout:.0f}s")
                why = self._hung()
                if why is not None:
                    raise GuestHung(f"no answer to {_describe(req)} after {timeout - deadline.remaining():.0f}s: {why}")
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        answer = pending.answer
        log.debug("%s: %s -> %.2fs %s", self.name, _describe(req), time.monotonic() - started, str(answer)[:300])
        if answer is None:
            raise InfraError(f"{self.name}: {self.dead} while waiting for {_describe(req)}")
        if "error" in answer:
            raise GuestError(f"guest helper {_describe(req)} exited {answer.get('status')}:\n{answer['error']}")
        return answer.get("result")

    def call(self, module: str, argv: list[str], timeout: float) -> Any:
        return self.request({"op": "call", "module": module, "argv": argv}, timeout)

    def spawn(self, module: str, argv: list[str]) -> Spawned:
        rid = next(self._ids)
        spawned = Spawned(self, rid, f"{module} {' '.join(argv)[:120]}")
        with self._lock:
            self._spawned[rid] = spawned
        self._send({"op": "spawn", "module": module, "argv": argv, "id": rid})
        return spawned

    def close(self) -> None:
        try:
            self._writer.close()  # a pipe's EOF; over SSH the channel's close (on_close) is the EOF
        except (OSError, ValueError):  # the channel went first (QEMU gone)
            pass
        if self._on_close is not None:
            self._on_close()


def _describe(req: dict[str, Any]) -> str:
    if req.get("op") in ("call", "spawn"):
        return f"{req['module']} {' '.join(req.get('argv', []))[:200]}"
    return f"{req.get('op')} to helper {req.get('to')}"
