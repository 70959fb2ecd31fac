"""The listener's port: a session starts when the harness's bytes wait, never on a port whose
host side is away. virtio_console polls such a port as hung up and readable (a read says end
of file); a socketpair whose far end closed polls the same way, one whose far end wrote polls
readable only."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "guest-images/rootfs/usr/local/lib/testbed"))
import agent_listen  # noqa: E402  (the guest image's listener module)


@pytest.fixture
def port():
    guest, host = socket.socketpair()
    guest.setblocking(False)
    port = agent_listen.Port()
    port.fd = guest.fileno()
    yield port, host
    guest.close()
    host.close()


def test_a_session_starts_when_the_harness_bytes_wait(port):
    port, host = port
    host.sendall(b"123 /run/testbed/agent\n")
    assert port.ready()
    assert port.retry_at == 0.0


def test_no_session_while_the_host_side_is_away(port):
    port, host = port
    host.close()
    assert not port.ready()
    assert port.retry_at > 0.0  # looked at again after HOST_AWAY_S, still open


def test_no_session_while_nothing_waits(port):
    port, _ = port
    assert not port.ready()


def test_the_warm_up_goes_on_while_the_host_side_is_away(port):
    """Under `testbed boot` nobody is on the port's socket: the listener warms up (and does
    not log that a session came)."""
    port, host = port
    host.close()
    assert agent_listen.warm_up([port.fd]) == "warmed up"


def test_the_warm_up_stops_for_a_waiting_session(port):
    port, host = port
    host.sendall(b"1 x\n")
    assert agent_listen.warm_up([port.fd]) == f"a session came before {agent_listen.WARM_UP[0]}"


def test_a_failed_sessions_last_word_is_a_protocol_line(capfd):
    said = 'Traceback (most recent call last):\n  "x" \u00e9\nValueError: no\n'
    agent_listen.tell_harness(said)
    out = capfd.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    assert json.loads(out) == {"agent": "failed", "error": said}
