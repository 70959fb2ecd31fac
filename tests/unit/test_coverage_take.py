"""testbed.guestvm.coverage.take: a snapshot through the agent, or over SSH when a test stopped
the agent (test_a_dead_agent_listener_is_reported_with_its_log does), so its counters are read."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from testbed.guestvm.coverage import take
from testbed.guestvm.guest import GUEST_AGENT_DIR
from testbed.vm.ssh import RunResult

ANSWER = {"ok": True, "present": True, "files": {"root/b/drivers/pci/p2pdma.gcda": base64.b64encode(b"gcda").decode()}}


@dataclass
class FakeGuest:
    agent_running: bool
    asked: list = field(default_factory=list)
    machine: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(name="two-switch"))

    def agent(self, module: str, command: str) -> dict:
        self.asked.append(("agent", module, command))
        return ANSWER

    def run(self, cmd: str, check: bool = False) -> RunResult:
        self.asked.append(("ssh", cmd))
        return RunResult(0, "a line before it\n" + json.dumps(ANSWER) + "\n", "")


def test_counters_come_through_the_agent_or_over_ssh_without_one(tmp_path: Path):
    for running, how in (
        (True, ("agent", "gcov", "snapshot")),
        (False, ("ssh", f"python3 {GUEST_AGENT_DIR}/gcov.py snapshot")),
    ):
        guest = FakeGuest(running)
        snap = take(guest, tmp_path / str(running), "/root/")  # type: ignore[arg-type]
        assert guest.asked == [how] and snap is not None and snap.files == 1
        assert (tmp_path / str(running) / "b" / "drivers" / "pci" / "p2pdma.gcda").read_bytes() == b"gcda"
