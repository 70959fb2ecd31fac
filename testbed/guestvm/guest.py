"""A booted topology as tests see it: the Machine plus the model, addresses and agent calls."""

from __future__ import annotations

import functools
import json
import py_compile
import shlex
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import GuestError, GuestHung, InfraError, TestbedError
from ..render import backing_files
from ..render.qdev import AGENT_PORT_ID, endpoint_spec
from ..timeouts import Deadline
from ..topology import Layout, Topology, Verdict, verdicts
from ..topology.model import EndpointKind, HotplugMode
from ..vm import Machine, hotplug
from ..vm.console import ConsoleLines
from ..vm.hotplug import UnplugResult
from ..vm.launch import LaunchPlan
from ..vm.ssh import SSH, RunResult
from . import machine_fingerprint as fingerprints
from .agent_client import Agent, Spawned

if TYPE_CHECKING:
    from .fingerprint import Fingerprint

AGENT_DIR = Path(__file__).resolve().parent.parent / "in_guest"
GUEST_AGENT_DIR = "/run/testbed/agent"
# the guest image's agent listener, which testbed-init starts
LISTENER = "/usr/local/sbin/testbed-agent-listen"  # guest-images/rootfs/: a stub of usr/local/lib/testbed/
LISTENER_LOG = "/var/log/testbed-agent-listen.log"
AGENT_PORT = 5171
KMEMLEAK_ASK_S = 10.0  # the agent's answer whether kmemleak can scan (in its process: instant)
CONFIRM_MARGIN_S = 30.0  # past the guest's own deadline for a pciehp unplug's confirmation
LISTENER_CHECK_S = 5.0  # refused this long: is it still starting, or did it die?
# refused this long, a look: a listener that said it listens and is gone died (no 5 s wait)
LISTENER_FIRST_CHECK_S = 0.5
LISTENING = "listening on 127.0.0.1:"  # what the listener logs once it listens (LISTENER's log())
# The listener's pid, if it runs. Its forked sessions keep its command line but lead sessions
# of their own (pid = sid), and outlive it as children of init; the pattern's first character
# is bracketed so that it does not match this command line itself.
LISTENER_PS = "ps -eo pid=,sid=,args= | awk '$1 != $2 && /[/]" + LISTENER[1:].replace("/", "\\/") + "/ { print $1 }'"


@dataclass
class GuestVM:
    topology: Topology
    plan: LaunchPlan
    machine: Machine
    layout: Layout = field(init=False)
    dirty: bool = False  # a test changed the device tree: do not share this VM any more
    probe_loaded: bool = False  # the probe module is in this guest's kernel (it is never unloaded)
    fingerprint: Fingerprint | None = None  # what the guest saw after boot (fingerprint.json)
    model_problems: list[str] = field(default_factory=list)  # where the guest differs from the model
    model_reported: bool = False  # the first test on this VM failed with them
    agent_ready_at: float | None = None  # time.monotonic() when boot() had the agent answering
    _release: str | None = field(default=None, init=False, repr=False)  # "" once read and absent
    _agent: Agent | None = field(default=None, init=False, repr=False)
    # when close_agent closed the port's host side: (QMP's event count, the host's wall clock)
    _port_closed_at: tuple[int, float] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.layout = self.plan.layout  # built once, with the argv

    @classmethod
    def boot(cls, plan: LaunchPlan, machine: Machine, fingerprint: bool = True) -> GuestVM:
        """The guest of a started `machine` brought up the one way everyone uses: SSH, the
        agent, then (`fingerprint`) what the guest sees, checked against the model. Raises as the
        steps do; stopping the machine on failure is the caller's (the pool judges what it left)."""
        if plan.runtime.agent_socket is None:  # the agent only through SSH: log in first
            machine.wait_ssh()
        vm = cls(plan.topology, plan, machine)
        vm.install_agent()
        vm.agent_ready_at = time.monotonic()
        if machine.started_at is not None:
            machine.ready_seconds = vm.agent_ready_at - machine.started_at
        if fingerprint:
            vm.fingerprint = fingerprints.take(vm)
            vm.model_problems = fingerprints.model_mismatches(
                fingerprints.load(vm.fingerprint.path), plan.topology, plan.layout
            )
        return vm

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

    def unplug(self, device_id: str, timeout: float | None = None, button_timer: bool = False) -> UnplugResult:
        """Remove an endpoint the way its slot does (pciehp button, ACPI, device_del) and wait
        until the guest has let go of it. The VM is not shared afterwards. A pciehp slot is
        powered off by the guest once pciehp has taken the button press (the removal pciehp's
        5 s timer would start, without the 5 s); `button_timer`: wait for the timer instead."""
        self.dirty = True
        parent = self.layout[device_id].upstream
        port = self.layout[parent].bdf if parent else None
        confirm = None if button_timer else self._confirm_unplug()
        return hotplug.unplug(self.machine, device_id, self.bdf(device_id), port, timeout, self._guest_wait(), confirm)

    def plug(self, device_id: str, timeout: float | None = None) -> float:
        """Put an endpoint (back) into its slot and wait for its driver; seconds it took."""
        spec = endpoint_spec(self.layout, self.topology.endpoint(device_id))
        return hotplug.plug(
            self.machine, spec, self.bdf(device_id), self._driver(device_id), timeout, self._guest_wait()
        )

    def wait_ready(self, device_id: str, timeout: float | None = None) -> None:
        """Wait until an endpoint is bound to its driver and ready (an nvme's controller live)."""
        hotplug.wait_ready(
            self.machine, self.bdf(device_id), self._driver(device_id), timeout, device_id, self._guest_wait()
        )

    def _driver(self, device_id: str) -> str | None:
        """The driver a plugged endpoint must be bound to before it is ready (None: listed will do)."""
        return "nvme" if self.topology.endpoint(device_id).kind is EndpointKind.NVME else None

    def lists(self, bdf: str) -> bool:
        """Whether the guest lists the PCI function bdf now."""
        wait = self._guest_wait() or hotplug.ssh_wait(self.machine)
        return not wait(bdf, "gone", None, 0.0)

    def _confirm_unplug(self) -> hotplug.Confirm | None:
        """The agent's confirmation of a pciehp unplug; None for ACPI hotplug (the guest ejects
        at once) or without an agent (pciehp's timer then)."""
        if self.topology.hotplug is not HotplugMode.NATIVE or not self.agent_running:
            return None

        def confirm(port: str, bdf: str, timeout: float) -> dict:
            args = {"port": port, "bdf": bdf, "timeout": timeout}
            # the guest answers by `timeout` whatever the removal does (a blocked write included)
            said = self.agent("pci", "confirm_unplug", args, timeout=timeout + CONFIRM_MARGIN_S)
            return dict(said)

        return confirm

    def _guest_wait(self) -> hotplug.GuestWait | None:
        """A hot-plug's guest side waited for in the guest by the agent, a look every 20 ms
        (over SSH each look is an exec, and the looks were 0.5 s apart); None without one."""
        if not self.agent_running:
            return None

        def wait(bdf: str, until: str, driver: str | None, timeout: float) -> bool:
            args = {"bdf": bdf, "until": until, "driver": driver, "timeout": timeout}
            said = self.agent("pci", "wait", args, timeout=timeout + self.machine.timeouts.guest_command)
            return bool(said["reached"])

        return wait

    # -- guest --------------------------------------------------------------------------

    def run(self, cmd: str | list[str], timeout: float | None = None, check: bool = False) -> RunResult:
        return self.machine.run(cmd, timeout=timeout, check=check)

    def install_agent(self) -> None:
        """Copy the in-guest helper modules (changing one needs no image rebuild) and start the
        agent that runs them: one process, one channel, for every call of this VM. The channel
        is the virtio-serial port when the launch has one (no SSH login before the agent
        answers), else a forward through SSH."""
        if self.plan.runtime.agent_socket is not None:
            self._install_agent_on_port(self.plan.runtime.agent_socket)
            return
        ssh = self.machine.wait_ssh()
        # The interpreter is testbed-init's agent listener, started while sshd was: sshd
        # connects this channel to it (no exec), it forks, and the bootstrap sent here unpacks
        # the helpers from the head of the stream and runs the agent in that process.
        writer, reader, close = self._connect_to_listener(ssh)
        writer.write(listener_preamble(AGENT_BOOTSTRAP, [GUEST_AGENT_DIR]))
        writer.write(agent_bundle(sorted(AGENT_DIR.glob("*.py"))))
        writer.flush()
        self._agent = Agent(writer, reader, self.machine.name, close, hung=self.machine.hung)
        try:
            self._agent.wait_ready(self.machine.timeouts.guest_command)
        except GuestError as exc:  # the session failed: the listener's log says why
            raise GuestError(f"{exc}\n{self._listener_said(ssh)}") from None

    def _install_agent_on_port(self, path: Path) -> None:
        """The agent on the virtio-serial port: the bootstrap and the helpers are written into
        QEMU's socket at once (they wait there until the guest's listener opens the port), then
        the boot is watched until the agent answers: a panic, a stall or QEMU's end stops the
        wait as they stop the SSH wait. Past LISTENER_CHECK_S without an answer (an agent
        installed again: LISTENER_FIRST_CHECK_S), SSH asks the guest whether its listener still
        runs, so a dead one is reported with its log."""
        self._wait_port_released()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            raise self.machine.explain(
                InfraError(f"{self.machine.name}: cannot connect to the agent's port {path}: {exc}")
            ) from None
        writer, reader = sock.makefile("wb"), sock.makefile("rb")

        def shutdown() -> None:
            try:  # wakes a thread blocked in a read or a write (a close alone would not)
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def close() -> None:
            shutdown()
            for part in (writer, reader, sock):
                try:
                    part.close()
                except OSError:
                    pass

        agent = Agent(writer, reader, self.machine.name, close, hung=self.machine.hung)
        # From a thread: QEMU reads the socket only while the guest holds the port open, so the
        # write blocks until the listener opens it (a boot away), or for good if none does.
        payload = listener_preamble(AGENT_BOOTSTRAP, [GUEST_AGENT_DIR]) + agent_bundle(sorted(AGENT_DIR.glob("*.py")))
        failed: list[BaseException] = []
        sender = threading.Thread(
            target=_send_all, args=(writer, payload, failed), name=f"agent-send-{self.machine.name}", daemon=True
        )
        sender.start()
        try:
            self._wait_agent_on_port(agent)
            sender.join(LISTENER_CHECK_S)  # it answered after reading the last byte: the write is done
            if failed or sender.is_alive():
                raise InfraError(f"{self.machine.name}: writing the agent's bootstrap: {failed or 'still blocked'}")
        except BaseException:
            shutdown()  # first: a write blocked in the sender holds the writer's lock
            agent.close()
            raise
        self._agent = agent

    def _wait_port_released(self) -> None:
        """Before a new session on the port: the last one gone from the guest's end. The port
        has one end; a session reads EOF only if the host side is still closed when it reads,
        so a new connection made at once could be read by the old agent as its own input."""
        if self._agent is not None:
            self.close_agent()
        if self._port_closed_at is None:
            return
        (since, closed_at), self._port_closed_at = self._port_closed_at, None
        deadline = Deadline(LISTENER_CHECK_S)
        try:
            qmp, ours = self.machine.qmp, {"id": AGENT_PORT_ID}
            while not port_released(qmp.wait_event("VSERPORT_CHANGE", ours, deadline.remaining(), since), closed_at):
                pass  # the session's own open, held back by QEMU's limit: the next one says
        except GuestError as exc:
            said = self._listener_said(self.machine.wait_ssh())
            why = f"the last agent session still holds its port: {exc}"
            raise GuestError(f"{self.machine.name}: {why}\n{said}") from None

    def _wait_agent_on_port(self, agent: Agent) -> None:
        deadline = Deadline(self.machine.timeouts.boot_to_ssh)
        settled = lambda: agent.ready.is_set() or agent.dead is not None  # noqa: E731
        # at a boot the listener is a boot away, and a look is an SSH login: the long wait first
        again = self.agent_ready_at is not None
        looked_after = LISTENER_FIRST_CHECK_S if again else LISTENER_CHECK_S
        check = Deadline(looked_after)
        lines = ConsoleLines(self.machine.console_log)  # one reader for the whole wait
        if again:  # an agent again, not a boot: what was printed is judged
            lines.new()
        while not self.machine.watch_boot(min(check, deadline, key=Deadline.remaining), lines, done=settled):
            if deadline.expired:
                raise GuestError(
                    f"{self.machine.name}: the guest agent did not answer on its port within "
                    f"{self.machine.timeouts.boot_to_ssh:.0f}s\n{self._listener_said(self.machine.wait_ssh())}"
                )
            said = self._listener_said(self.machine.wait_ssh())
            if _listener_gone(said, looked_after):
                raise GuestError(f"{self.machine.name}: the guest's agent listener does not answer\n{said}")
            looked_after = LISTENER_CHECK_S
            check = Deadline(looked_after)
        try:
            agent.wait_ready(0)
        except GuestError as exc:
            raise self.machine.explain(exc) from None

    def _connect_to_listener(self, ssh: SSH) -> tuple[IO[bytes], IO[bytes], Callable[[], None]]:
        """The forwarded channel to the agent listener, waiting while it still starts (a debug
        kernel can log sshd ready first); if it died, a GuestError with what it logged: after
        the first short look if it had said it listens, else after LISTENER_CHECK_S."""
        deadline = Deadline(self.machine.timeouts.guest_command)
        refused_for = LISTENER_FIRST_CHECK_S
        while True:
            try:
                return ssh.forward(AGENT_PORT, min(refused_for, max(deadline.remaining(), 0.0)))
            except GuestError as exc:
                said = self._listener_said(ssh)
                gone = _listener_gone(said, refused_for)
                refused_for = LISTENER_CHECK_S
                if gone or deadline.expired:
                    raise GuestError(
                        f"{self.machine.name}: the guest's agent listener does not answer: {exc}\n{said}"
                    ) from None

    def _listener_said(self, ssh: SSH) -> str:
        """The tail of the listener's log, and NOT RUNNING if no listener is left."""
        said = ssh.run(f"tail -n 50 {LISTENER_LOG} 2>&1; {LISTENER_PS} | grep -q . || echo NOT RUNNING")
        return f"--- {LISTENER_LOG} (last 50 lines) ---\n{said.stdout.strip()}"

    @property
    def channel(self) -> Agent:
        if self._agent is None or self._agent.dead is not None:
            raise GuestError(f"{self.machine.name}: the guest agent is not running (install_agent() first)")
        return self._agent

    def agent(self, module: str, *args: Any, timeout: float | None = None) -> Any:
        """`<module>.py args...` in the guest, through the agent; its JSON answer."""
        words = [a if isinstance(a, str) else json.dumps(a) for a in args]
        try:
            return self.channel.call(module, words, self.machine.timeouts.guest_command if timeout is None else timeout)
        except TestbedError as exc:  # a closed channel: say why, if QEMU is what ended
            if isinstance(exc, GuestHung):
                self.dirty = True  # the pool boots another for the tests after this one
            raise self.machine.explain(exc) from None

    def spawn(self, module: str, *args: Any) -> Spawned:
        """`<module>.py args...` as a helper that runs on (its lines arrive as events)."""
        try:
            return self.channel.spawn(module, [a if isinstance(a, str) else json.dumps(a) for a in args])
        except TestbedError as exc:
            raise self.machine.explain(exc) from None

    def close_agent(self) -> None:
        if self._agent is not None:
            if self.plan.runtime.agent_socket is not None:  # the guest closes its end after this
                self._port_closed_at = (self.machine.qmp.event_count, time.time())
            self._agent.close()
            self._agent = None

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

    def kmsg_wait(self, seq: int, pattern: str, timeout: float) -> list[str]:
        """The kernel log records from `seq` up to the first matching `pattern` (a regex); a
        GuestError with what was logged if none matched within `timeout` seconds."""
        out = self.agent("kmsg", "wait", {"seq": seq, "pattern": pattern, "timeout": timeout}, timeout=timeout + 30)
        if not out.get("ok"):
            raise GuestError(
                f"no kernel message matching {pattern!r} within {timeout:.0f} s; logged: {out['lines'][-20:]}"
            )
        return list(out["lines"])

    @property
    def agent_running(self) -> bool:
        """Whether this VM's agent answers (a test may have stopped it)."""
        return self._agent is not None and self._agent.dead is None

    def kmemleak_scannable(self) -> bool | None:
        """Whether kmemleak can be asked for a leak report (None: no agent to ask; over SSH that
        costs a login, ~0.4 s, for every VM of a kernel without kmemleak)."""
        if not self.agent_running:
            return None
        # not the guest command deadline (minutes under TCG): a stuck guest is asked over SSH next
        said = self.agent("kmsg", "kmemleak", timeout=KMEMLEAK_ASK_S)
        return bool(said.get("scan")) if said.get("ok") else None

    def mark(self, line: str) -> int | None:
        """Write `line` to the kernel log (a record of its own), then read lockdep's debug_locks
        (None on kernels without lockdep). Through the agent: an SSH exec of a shell costs
        ~0.1 s under TCG, and every VM test writes two markers. Over SSH if the agent is gone
        (a test may have stopped it), so a window still closes."""
        if self.agent_running:
            out = self.agent("kmsg", "mark", {"text": line})
            return out.get("debug_locks")
        said = self.machine.run(
            f"echo {shlex.quote(line)} > /dev/kmsg || exit 1; grep -s debug_locks: /proc/lockdep_stats; exit 0",
            check=True,
        ).stdout.split()
        return int(said[-1]) if said and said[-1].isdigit() else None

    def dmesg(self) -> str:
        return self.machine.run("dmesg").stdout


def _send_all(writer: IO[bytes], payload: bytes, failed: list[BaseException]) -> None:
    try:
        writer.write(payload)
        writer.flush()
    except (OSError, ValueError) as exc:  # closed under it: the wait says why
        failed.append(exc)


# python3 -c AGENT_BOOTSTRAP DIR: stdin starts with the helpers, each as "<name> <size>\n" and
# its bytes, then "-\n"; read unbuffered, so every byte after them is left for the agent's own
# reader. No tarfile: importing it costs 0.2 s under TCG.
AGENT_BOOTSTRAP = """\
import os, sys
where = sys.argv[1]
def line():
    out = b""
    while not out.endswith(b"\\n"):
        byte = os.read(0, 1)
        if not byte:
            sys.exit("agent bootstrap: stdin ended early")
        out += byte
    return out[:-1].decode()
os.makedirs(where + "/__pycache__", exist_ok=True)
while (head := line()) != "-":
    name, size = head.rsplit(" ", 1)
    left = int(size)
    with open(os.path.join(where, name), "wb") as f:
        while left:
            chunk = os.read(0, min(left, 1 << 16))
            if not chunk:
                sys.exit("agent bootstrap: stdin ended inside " + name)
            f.write(chunk)
            left -= len(chunk)
sys.path.insert(0, where)
import agent
agent.main()
"""


def port_released(event: dict[str, Any], closed_at: float) -> bool:
    """Whether a VSERPORT_CHANGE of the agent's port, after close_agent closed the host side at
    `closed_at` (the host's wall clock), says the guest's session let the port go: a close, or
    an open made after then (the listener reopening it). QEMU sends at most one VSERPORT_CHANGE
    a second per port, the last state of that second, stamped when it happened: a close and the
    reopening within one second arrive as one "open". An open stamped earlier was the session's
    own start, held back by that limit."""
    if not event["data"]["open"]:
        return True
    stamp = event.get("timestamp") or {}
    return stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6 >= closed_at


def listener_preamble(source: str, args: list[str]) -> bytes:
    """What testbed-agent-listen reads first: "<size> <arg>...\\n" and the source it runs
    as `python3 -c SOURCE ARG...` would."""
    if any(not a or " " in a or "\n" in a for a in args):
        raise ValueError(f"listener arguments must be single words: {args!r}")
    data = source.encode()
    return " ".join([str(len(data)), *args]).encode() + b"\n" + data


def _listener_gone(said: str, looked_after: float) -> bool:
    """Whether the listener died, from its log and ps (GuestVM._listener_said) after it did not
    answer for `looked_after` seconds: gone, and it had said it listens or had the long wait to
    start (else it may not have been started yet)."""
    return "NOT RUNNING" in said and (LISTENING in said or looked_after >= LISTENER_CHECK_S)


def agent_bundle(paths: list[Path]) -> bytes:
    """The helpers as AGENT_BOOTSTRAP reads them, with their bytecode: compiled here for this
    Python's cache tag as unchecked-hash .pyc (a guest Python of another version ignores a
    tag not its own and compiles the source; Debian bookworm's is 3.11, so is the venv's).
    Built once per process while the files stay the same (~25 ms a boot otherwise)."""
    return _bundle(tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in paths))


@functools.lru_cache(maxsize=4)
def _bundle(files: tuple[tuple[Path, int, int], ...]) -> bytes:
    out = bytearray()
    for path, _, _ in files:
        data = path.read_bytes()
        out += f"{path.name} {len(data)}\n".encode() + data
        pyc = _bytecode(path)
        if pyc is not None:
            out += f"__pycache__/{pyc[0]} {len(pyc[1])}\n".encode() + pyc[1]
    return bytes(out + b"-\n")


def _bytecode(path: Path) -> tuple[str, bytes] | None:
    tag = sys.implementation.cache_tag
    if tag is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.pyc"
        py_compile.compile(
            str(path), cfile=str(target), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
        )
        return f"{path.stem}.{tag}.pyc", target.read_bytes()


class Background:
    """A guest helper running on beside the test (a held mapping, an I/O stream, a session):
    its JSON lines, a signal on its stdin and its exit status, over the VM's agent channel."""

    def __init__(self, vm: GuestVM, name: str, spawned: Spawned) -> None:
        self.vm = vm
        self.name = name
        self.spawned = spawned

    def lines(self) -> list[dict]:
        return self.spawned.lines()

    def signal(self) -> None:
        """Tell the helper to go on (hold) or to stop (stream, dmaloop)."""
        try:
            self.spawned.send({"signal": "go"}, self.vm.machine.timeouts.guest_command)
        except GuestError:
            pass  # it has exited already (an I/O failed): wait_exit() tells

    def wait_started(self, key: str, timeout: float | None = None) -> dict:
        timeout = self.vm.machine.timeouts.guest_command if timeout is None else timeout
        return self.spawned.wait_event(lambda line: key in line, timeout, what=repr(key))

    def wait_exit(self, timeout: float | None = None) -> int:
        """The helper's exit status (128+N: killed by signal N)."""
        return self.spawned.wait_exit(self.vm.machine.timeouts.guest_command if timeout is None else timeout)


def start_background(vm: GuestVM, name: str, module: str, command: str, args: dict) -> Background:
    return Background(vm, name, vm.spawn(module, command, args))
