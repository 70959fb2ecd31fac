"""Before a new agent session on the virtio-serial port, the old one must have let the port go.
QEMU sends at most one VSERPORT_CHANGE a second per port, the last state of that second,
stamped when it happened (seen in a CI run's events: the close of a session and the listener
reopening the port came as one "open"). Events below are as QMP logged them."""

from __future__ import annotations

from testbed.guestvm.guest import port_released

CLOSED_AT = 1796513837.0  # close_agent, on the host's wall clock


def _change(is_open: bool, at: float) -> dict:
    seconds = int(at)
    stamp = {"seconds": seconds, "microseconds": round((at - seconds) * 1e6)}
    return {"event": "VSERPORT_CHANGE", "data": {"id": "agent-port", "open": is_open}, "timestamp": stamp}


def test_a_close_is_the_release():
    assert port_released(_change(False, CLOSED_AT + 0.3), CLOSED_AT)


def test_an_open_after_the_close_means_it_was_closed_and_reopened():
    """The close and the listener's reopening within one second: only the open arrives."""
    assert port_released(_change(True, CLOSED_AT + 0.9), CLOSED_AT)


def test_an_open_from_before_the_close_is_the_sessions_own_start():
    """A session younger than a second when closed: its start was held back and arrives late."""
    assert not port_released(_change(True, CLOSED_AT - 0.4), CLOSED_AT)
