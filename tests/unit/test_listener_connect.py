"""GuestVM._connect_to_listener: the agent's SSH forward waits while the guest's listener
still starts, and says at once that it died once its log shows it had been listening."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from testbed.errors import GuestError
from testbed.guestvm.guest import LISTENER_CHECK_S, LISTENER_FIRST_CHECK_S, GuestVM
from testbed.timeouts import Timeouts
from testbed.vm.ssh import RunResult

LISTENED = "testbed-agent-listen: listening on 127.0.0.1:5171 (1.2 s)\n"


class FakeSSH:
    """Refuses the forward `refusals` times; the listener's log and whether it runs."""

    def __init__(self, refusals: int, log: str, running: bool):
        self.refusals, self.log, self.running = refusals, log, running
        self.waits: list[float] = []

    def forward(self, port: int, timeout: float):
        self.waits.append(timeout)
        if len(self.waits) <= self.refusals:
            raise GuestError(f"127.0.0.1:{port} refused for {timeout:.1f}s")
        return "writer", "reader", lambda: None

    def run(self, cmd: str) -> RunResult:
        return RunResult(0, self.log + ("" if self.running else "NOT RUNNING\n"), "")


def _connect(ssh: FakeSSH):
    vm = SimpleNamespace(machine=SimpleNamespace(name="two-switch", timeouts=Timeouts()))
    vm._listener_said = lambda s: GuestVM._listener_said(vm, s)  # type: ignore[arg-type]
    return GuestVM._connect_to_listener(vm, ssh)  # type: ignore[arg-type]


def test_a_listener_that_listened_and_is_gone_is_reported_after_the_first_look():
    ssh = FakeSSH(refusals=10, log=LISTENED, running=False)
    with pytest.raises(GuestError, match=r"(?s)does not answer.*listening on 127\.0\.0\.1:5171.*NOT RUNNING"):
        _connect(ssh)
    assert ssh.waits == [LISTENER_FIRST_CHECK_S]


def test_a_listener_not_started_yet_is_waited_for():
    ssh = FakeSSH(refusals=1, log="", running=False)  # init has not started it yet
    assert _connect(ssh)[:2] == ("writer", "reader")
    assert ssh.waits == [LISTENER_FIRST_CHECK_S, LISTENER_CHECK_S]


def test_a_listener_that_never_comes_is_reported_after_the_long_look():
    ssh = FakeSSH(refusals=10, log="", running=False)
    with pytest.raises(GuestError, match="NOT RUNNING"):
        _connect(ssh)
    assert ssh.waits == [LISTENER_FIRST_CHECK_S, LISTENER_CHECK_S]


def test_a_listener_that_runs_but_refuses_is_given_the_whole_deadline():
    ssh = FakeSSH(refusals=3, log=LISTENED, running=True)  # busy, not dead
    assert _connect(ssh)[:2] == ("writer", "reader")
    assert ssh.waits == [LISTENER_FIRST_CHECK_S, LISTENER_CHECK_S, LISTENER_CHECK_S, LISTENER_CHECK_S]
