"""Parse HMP `info usernet`: which host port QEMU bound for a `hostfwd=...:0-:22` rule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InfraError

# QEMU 7.2 (slirp 4.7):
#   TCP[HOST_FORWARD]   8       127.0.0.1 45969       10.0.2.15    22     0     0
_ROW = re.compile(
    r"^\s*(?P<proto>TCP|UDP)\[(?P<state>[A-Z_]+)\]\s+(?P<fd>-?\d+)\s+"
    r"(?P<src>\S*)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)"
)


@dataclass(frozen=True)
class Forward:
    proto: str  # "TCP" | "UDP"
    host_addr: str
    host_port: int
    guest_addr: str
    guest_port: int


def parse_forwards(text: str) -> list[Forward]:
    forwards = []
    for line in text.replace("\r", "").splitlines():
        m = _ROW.match(line)
        if m and m.group("state") == "HOST_FORWARD":
            forwards.append(
                Forward(m.group("proto"), m.group("src"), int(m.group("sport")), m.group("dst"), int(m.group("dport")))
            )
    return forwards


def host_port_for(text: str, guest_port: int = 22, proto: str = "TCP") -> int:
    for fwd in parse_forwards(text):
        if fwd.proto == proto and fwd.guest_port == guest_port and fwd.host_port != 0:
            return fwd.host_port
    raise InfraError(f"no {proto} host forward to guest port {guest_port} in `info usernet`:\n" + text.strip())
