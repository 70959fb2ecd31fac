"""QMP without QEMU: a fake monitor on a socketpair (or a listening path) stands in for it.

What is checked: the session comes up on a socket handed over (no path, no retry), a peer
that hangs up before its greeting fails at once, run states come back as the enum, refusals
keep QEMU's error class, and Machine passes its end of the pair to the process as `fd=N`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import GuestError, InfraError
from testbed.render import inherited_monitor_args
from testbed.render.runtime import Runtime
from testbed.timeouts import Timeouts
from testbed.vm.machine import Machine
from testbed.vm.process import QemuProcess
from testbed.vm.qmp import QMP, QMPCommandError, RunState

REPO = Path(__file__).resolve().parents[2]
GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}
# qapi/run-state.json of QEMU 7.2
QEMU_7_2_RUN_STATES = (
    "debug inmigrate internal-error io-error paused postmigrate prelaunch finish-migrate restore-vm running "
    "save-vm shutdown suspended watchdog guest-panicked colo"
).split()


def messages(sock: socket.socket) -> Iterator[dict]:
    """JSON objects as they arrive: a QMP client need not end them with a newline."""
    decoder, buffer = json.JSONDecoder(), ""
    while chunk := sock.recv(4096):
        buffer += chunk.decode()
        while buffer.strip():
            try:
                msg, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                break  # the rest is still on its way
            buffer = buffer.lstrip()[end:]
            yield msg


def serve(sock: socket.socket, status: str = "prelaunch") -> None:
    """A minimal QMP server on a connected socket: greeting, capabilities, a few commands."""

    def send(message: dict) -> None:
        sock.sendall(json.dumps(message).encode() + b"\r\n")

    with sock:
        send(GREETING)
        for msg in messages(sock):
            name = msg["execute"]
            reply: dict[str, Any] = {"return": {}}
            if name == "query-status":
                reply = {"return": {"status": status, "running": status == "running", "singlestep": False}}
            elif name == "device_del":
                desc = f"Device '{msg['arguments']['id']}' not found"
                reply = {"error": {"class": "DeviceNotFound", "desc": desc}}
            elif name == "cont":
                status = "running"
                send({"event": "RESUME", "data": {}, "timestamp": {"seconds": 0, "microseconds": 0}})
            if "id" in msg:
                reply["id"] = msg["id"]
            send(reply)
            if name == "quit":
                return


@pytest.fixture
def pair(tmp_path):
    ours, theirs = socket.socketpair()
    qmp = QMP(tmp_path / "events.jsonl", command_timeout=5.0, name="fake")
    yield qmp, ours, theirs
    qmp.close()
    theirs.close()


def test_run_state_mirrors_qemu():
    assert [s.value for s in RunState] == QEMU_7_2_RUN_STATES
    assert RunState("prelaunch") is RunState.PRELAUNCH
    assert RunState.RUNNING == "running"  # a str enum: QMP's own spelling


def test_session_on_a_handed_over_socket(pair):
    qmp, ours, theirs = pair
    server = threading.Thread(target=serve, args=(theirs,), daemon=True)
    server.start()
    qmp.connect(ours, timeout=5.0)
    assert qmp.connected
    assert qmp.run_state() is RunState.PRELAUNCH
    qmp.command("cont")
    assert qmp.wait_event("RESUME", timeout=5.0)["event"] == "RESUME"
    assert qmp.run_state() is RunState.RUNNING
    with pytest.raises(QMPCommandError) as err:
        qmp.command("device_del", {"id": "nvme9"})
    assert (err.value.command, err.value.arguments, err.value.error_class) == (
        "device_del",
        {"id": "nvme9"},
        "DeviceNotFound",
    )
    qmp.command("quit")
    server.join(5.0)
    assert '"RESUME"' in qmp.events_log.read_text()


def test_unknown_run_state_is_an_infra_error(pair):
    qmp, ours, theirs = pair
    threading.Thread(target=serve, args=(theirs, "time-travel"), daemon=True).start()
    qmp.connect(ours, timeout=5.0)
    with pytest.raises(InfraError, match="unknown run state 'time-travel'"):
        qmp.run_state()


def test_a_peer_that_hangs_up_fails_at_once(pair):
    qmp, ours, theirs = pair
    theirs.close()  # QEMU died before its monitor came up
    start = time.monotonic()
    with pytest.raises(InfraError, match="hung up before its greeting"):
        qmp.connect(ours, timeout=30.0)
    assert time.monotonic() - start < 5.0
    assert ours.fileno() == -1  # closed, not leaked
    assert not qmp.connected


def test_a_silent_peer_times_out(pair):
    qmp, ours, _theirs = pair
    with pytest.raises(InfraError, match="no answer within"):
        qmp.connect(ours, timeout=0.3)


def test_attach_by_path_once(tmp_path):
    path = tmp_path / "mon.sock"
    qmp = QMP(tmp_path / "events.jsonl", command_timeout=5.0, name="attach")
    try:
        start = time.monotonic()
        with pytest.raises(InfraError, match="no session"):
            qmp.connect(path, timeout=30.0)  # no socket there: one attempt, no retry loop
        assert time.monotonic() - start < 5.0
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(1)
        threading.Thread(target=lambda: serve(listener.accept()[0], "paused"), daemon=True).start()
        qmp.connect(path, timeout=5.0)
        assert qmp.run_state() is RunState.PAUSED
    finally:
        qmp.close()


def test_inherited_monitor_args():
    assert inherited_monitor_args(7) == [
        "-chardev",
        "socket,id=testbed-qmp,fd=7",
        "-mon",
        "chardev=testbed-qmp,mode=control",
    ]
    with pytest.raises(ValueError):
        inherited_monitor_args(0)


def test_process_passes_only_the_named_descriptor(tmp_path):
    r, w = os.pipe()
    other_r, other_w = os.pipe()
    try:
        code = f"import os; os.write({w}, b'ok'); os.fstat({other_w})"
        proc = QemuProcess([sys.executable, "-c", code], tmp_path / "log", pass_fds=(w,))
        proc.start()
        assert proc.wait(10.0) == 1  # the descriptor not passed does not exist in the child
        assert os.read(r, 2) == b"ok"
        assert "Bad file descriptor" in proc.log_tail()
    finally:
        for fd in (r, w, other_r, other_w):
            os.close(fd)


# A stand-in for qemu-system-x86_64: takes its monitor from `-chardev socket,...,fd=N`.
FAKE_QEMU = textwrap.dedent(
    """
    import socket, sys
    sys.path.insert(0, {repo!r})
    from tests.unit.test_vm_qmp import serve
    spec = sys.argv[sys.argv.index("-chardev") + 1]
    fd = int(spec.split("fd=")[1].split(",")[0])
    if "--die" in sys.argv:
        sys.stderr.write("qemu-system-x86_64: -device nope: 'nope' is not a valid device model name\\n")
        sys.exit(1)
    serve(socket.socket(fileno=fd))
    """
)


def _machine(tmp_path: Path, *extra: str) -> Machine:
    script = tmp_path / "fake_qemu.py"
    script.write_text(FAKE_QEMU.format(repo=str(REPO)))
    rt = Runtime(
        accel="tcg",
        kernel=None,
        disk=tmp_path / "disk",
        qmp_socket=tmp_path / "q.sock",
        console_log=tmp_path / "run" / "console.log",
        backing_dir=tmp_path / "backing",
        ssh_host_port=2222,  # no `info usernet` readback
    )
    return Machine([sys.executable, str(script), *extra], rt, tmp_path / "key", Timeouts.for_accel("tcg"), "fake")


def test_machine_hands_qemu_its_monitor(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with _machine(tmp_path) as vm:
        assert vm.process.argv[: len(vm.argv)] == vm.argv  # the rendered command, then the monitor
        assert vm.process.argv[len(vm.argv)] == "-chardev" and len(vm.process.pass_fds) == 1
        assert vm.qmp.run_state() is RunState.PRELAUNCH
    assert vm.stop_report is not None and vm.stop_report.stage == "quit"


def test_machine_fails_at_once_with_qemus_words(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(InfraError) as err:
        with _machine(tmp_path, "--die"):
            pass
    assert time.monotonic() - start < 10.0  # not the QMP connect timeout
    message = str(err.value)
    assert "hung up before its greeting" in message and "exited with status 1" in message
    assert "'nope' is not a valid device model name" in message


def test_an_event_is_waited_for_from_a_mark_on(pair):
    """The agent's port closing: an older VSERPORT_CHANGE of the same kind is not this one."""
    qmp, ours, theirs = pair
    server = threading.Thread(target=serve, args=(theirs,), daemon=True)
    server.start()
    qmp.connect(ours, timeout=5.0)
    qmp.command("cont")  # RESUME 1, before the mark
    deadline = time.monotonic() + 5.0
    while qmp.event_count < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    mark = qmp.event_count
    qmp.command("cont")  # RESUME 2
    assert qmp.wait_event("RESUME", timeout=5.0, since=mark) is qmp._events[mark]
    assert qmp.wait_event("RESUME", timeout=0.5) is qmp._events[0]  # the older one was left alone
    with pytest.raises(GuestError, match="RESUME"):
        qmp.wait_event("RESUME", timeout=0.2)
    qmp.command("quit")
    server.join(5.0)
