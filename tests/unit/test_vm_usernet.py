import pytest

from testbed.errors import InfraError
from testbed.vm.usernet import Forward, host_port_for, parse_forwards

# Recorded from QEMU 7.2.22 (Debian) with -netdev user,id=n0,hostfwd=tcp:127.0.0.1:0-:22,
# paused at -S: `human-monitor-command` "info usernet".
QEMU72_PAUSED = (
    "Hub -1 (n0):\r\n"
    "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
    "  TCP[HOST_FORWARD]   8       127.0.0.1 45969       10.0.2.15    22     0     0\r\n"
)

# Same shape with a live guest connection and a UDP forward (columns as QEMU prints them).
BUSY = QEMU72_PAUSED + (
    "  TCP[ESTABLISHED]  21       127.0.0.1 45969       10.0.2.15    22     0     0\r\n"
    "  UDP[HOST_FORWARD]  9         0.0.0.0  5555       10.0.2.15  5555     0     0\r\n"
)


def test_recorded_sample():
    assert parse_forwards(QEMU72_PAUSED) == [Forward("TCP", "127.0.0.1", 45969, "10.0.2.15", 22)]
    assert host_port_for(QEMU72_PAUSED) == 45969


def test_only_host_forwards_count():
    assert [f.proto for f in parse_forwards(BUSY)] == ["TCP", "UDP"]
    assert host_port_for(BUSY, 5555, "UDP") == 5555


def test_missing_forward_is_infra_error():
    with pytest.raises(InfraError, match="guest port 22"):
        host_port_for("Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address\r\n")
