"""A booted topology as tests see it: the Machine plus the model, addresses and agent calls."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GuestError
from ..render import backing_files
from ..topology import Layout, Topology, build_layout, verdicts
from ..vm import Machine
from ..vm.launch import LaunchPlan

AGENT_DIR = Path(__file__).resolve().parent.parent / "guest" / "agent"
GUEST_AGENT_DIR = "/run/testbed/agent"


@dataclass
class GuestVM:
    topology: Topology
    plan: LaunchPlan
    machine: Machine
    layout: Layout = field(init=False)
    dirty: bool = False  # a test changed the device tree: do not share this VM any more

    def __post_init__(self) -> None:
        self.layout = build_layout(self.topology)

    # -- addresses ----------------------------------------------------------------------

    def bdf(self, device_id: str) -> str:
        return self.layout[device_id].bdf

    def backing_file(self, endpoint_id: str) -> Path:
        for bf in backing_files(self.topology, self.plan.runtime.backing_dir):
            if bf.endpoint == endpoint_id:
                return bf.path
        raise KeyError(f"{endpoint_id} has no host backing file")

    def verdicts(self):
        return verdicts(self.topology, self.layout)

    # -- guest --------------------------------------------------------------------------

    def run(self, cmd: str | list[str], timeout: float | None = None, check: bool = False):
        return self.machine.run(cmd, timeout=timeout, check=check)

    def install_agent(self) -> None:
        """Copy the in-guest helper modules (changing one needs no image rebuild)."""
        self.machine.run(["mkdir", "-p", GUEST_AGENT_DIR], check=True)
        for path in sorted(AGENT_DIR.glob("*.py")):
            self.machine.wait_ssh().put(path, f"{GUEST_AGENT_DIR}/{path.name}")

    def agent(self, module: str, *args: Any, timeout: float | None = None) -> Any:
        """Run `python3 <module>.py args...` in the guest; its stdout is one JSON document."""
        words = [a if isinstance(a, str) else json.dumps(a) for a in args]
        cmd = f"python3 {GUEST_AGENT_DIR}/{module}.py " + " ".join(shlex.quote(w) for w in words)
        result = self.machine.run(cmd, timeout=timeout)
        if result.status != 0:
            raise GuestError(f"guest helper {module} {words} exited {result.status}:\n{result.stderr.strip()}")
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            raise GuestError(f"guest helper {module} printed no JSON:\n{result.stdout[-2000:]}") from None

    def kmsg(self, line: str) -> None:
        self.machine.run(f"echo {shlex.quote(line)} > /dev/kmsg", check=True)

    def dmesg(self) -> str:
        return self.machine.run("dmesg", timeout=30).stdout
