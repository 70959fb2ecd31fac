"""A booted topology as tests see it: the Machine plus the model, addresses and agent calls."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import GuestError
from ..guest.ssh import RunResult
from ..render import backing_files
from ..render.qdev import endpoint_spec
from ..topology import Layout, Topology, Verdict, build_layout, verdicts
from ..topology.model import EndpointKind
from ..vm import Machine, hotplug
from ..vm.hotplug import UnplugResult
from ..vm.launch import LaunchPlan

if TYPE_CHECKING:
    from .fingerprint import Fingerprint

AGENT_DIR = Path(__file__).resolve().parent.parent / "guest" / "agent"
GUEST_AGENT_DIR = "/run/testbed/agent"


@dataclass
class GuestVM:
    topology: Topology
    plan: LaunchPlan
    machine: Machine
    layout: Layout = field(init=False)
    dirty: bool = False  # a test changed the device tree: do not share this VM any more
    probe_loaded: bool = False  # the probe module is in this guest's kernel (it is never unloaded)
    fingerprint: Fingerprint | None = None  # what the guest saw after boot (fingerprint.json)
    _release: str | None = field(default=None, init=False, repr=False)  # "" once read and absent

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

    def verdicts(self) -> list[Verdict]:
        return verdicts(self.topology, self.layout)

    # -- hotplug, by device id: the layout knows the addresses ---------------------------

    def unplug(self, device_id: str, timeout: float | None = None) -> UnplugResult:
        """Remove an endpoint the way its slot does (pciehp button, ACPI, device_del) and wait
        until the guest has let go of it. The VM is not shared afterwards."""
        self.dirty = True
        parent = self.layout[device_id].upstream
        port = self.layout[parent].bdf if parent else None
        return hotplug.unplug(self.machine, device_id, self.bdf(device_id), port, timeout)

    def plug(self, device_id: str, timeout: float | None = None) -> float:
        """Put an endpoint (back) into its slot and wait for its driver; seconds it took."""
        endpoint = self.topology.endpoint(device_id)
        driver = "nvme" if endpoint.kind is EndpointKind.NVME else None
        spec = endpoint_spec(self.layout, endpoint)
        return hotplug.plug(self.machine, spec, self.bdf(device_id), driver, timeout)

    # -- guest --------------------------------------------------------------------------

    def run(self, cmd: str | list[str], timeout: float | None = None, check: bool = False) -> RunResult:
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

    def edu_dma_bits(self) -> int:
        """The narrowest dma_mask of the topology's edu devices, in bits (QEMU's default: 28)."""
        masks = [
            ep.dma_mask for ep in self.topology.endpoints if ep.kind is EndpointKind.EDU and ep.dma_mask is not None
        ]
        return min(masks, default=(1 << 28) - 1).bit_length()

    def load_probe(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Build (or reuse) the probe module for this VM's kernel and load it, once per VM."""
        if self.probe_loaded:
            return
        from ..probe import ensure_probe

        if self.plan.runtime.kernel is None:
            raise GuestError("this VM boots no kernel the testbed knows (no -kernel): cannot build the probe for it")
        module = ensure_probe(self.plan.runtime.kernel, progress)
        dest = f"/run/testbed/{module.ko.name}"
        self.machine.wait_ssh().put(module.ko, dest)
        loaded = self.agent("probe", "load", {"ko": dest, "params": {"edu_dma_bits": self.edu_dma_bits()}})
        if not loaded.get("ok"):
            raise GuestError(f"loading {module.ko} failed: {loaded}")
        self.probe_loaded = True

    def kernel_release(self) -> str | None:
        """The release in the boot banner of this VM's console ("7.2.13-testbed"), read once."""
        if self._release is None:
            from ..logs.known import kernel_release

            with self.machine.console_log.open(errors="replace") as console:
                head = [line for _, line in zip(range(200), console, strict=False)]
            self._release = kernel_release(head) or ""
        return self._release or None

    def kmsg_cursor(self) -> int:
        """The sequence number the kernel's next log record will get (/dev/kmsg)."""
        return int(self.agent("kmsg", "cursor")["next"])

    def kmsg_since(self, seq: int) -> list[str]:
        """The kernel log records from `seq` on; a GuestError if the ring buffer already dropped
        some of them (a wrap must not hide a message)."""
        out = self.agent("kmsg", "since", {"seq": seq})
        if out.get("lost"):
            raise GuestError(f"the kernel log wrapped: records from {seq} on are gone (read them sooner)")
        return list(out["lines"])

    def kmsg(self, line: str) -> None:
        self.machine.run(f"echo {shlex.quote(line)} > /dev/kmsg", check=True)

    def dmesg(self) -> str:
        return self.machine.run("dmesg", timeout=30).stdout


@dataclass(frozen=True)
class Background:
    """A guest helper running in the background; its JSON lines land in `out`."""

    vm: GuestVM
    name: str

    @property
    def out(self) -> str:
        return f"/run/testbed/{self.name}.out"

    @property
    def rc(self) -> str:
        return f"/run/testbed/{self.name}.rc"

    @property
    def flag(self) -> str:
        """The file the helper waits for (hold: go; stream: stop)."""
        return f"/run/testbed/{self.name}.flag"

    def lines(self) -> list[dict]:
        text = self.vm.run(f"cat {self.out} 2>/dev/null").stdout
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"text": line})
        return out

    def signal(self) -> None:
        self.vm.run(f"touch {self.flag}", check=True)

    def wait_started(self, key: str, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if key in line:
                    return line
            time.sleep(0.3)
        raise GuestError(f"background helper {self.name} never reported {key!r}: {self.lines()}")

    def wait_exit(self, timeout: float = 120.0) -> int:
        """The helper's exit status as the shell saw it (128+N: killed by signal N)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.vm.run(f"cat {self.rc} 2>/dev/null")
            if result.stdout.strip():
                return int(result.stdout.strip())
            time.sleep(0.3)
        raise GuestError(f"background helper {self.name} did not exit within {timeout:.0f}s: {self.lines()}")


def start_background(vm: GuestVM, name: str, module: str, command: str, args: dict) -> Background:
    bg = Background(vm, name)
    args = {**args, "go": bg.flag, "stop": bg.flag}
    inner = (
        f"python3 {GUEST_AGENT_DIR}/{module}.py {command} {shlex.quote(json.dumps(args))} "
        f"> {bg.out} 2>&1; echo $? > {bg.rc}"
    )
    vm.run(f"rm -f {bg.out} {bg.rc} {bg.flag}; nohup sh -c {shlex.quote(inner)} > /dev/null 2>&1 &", check=True)
    return bg
