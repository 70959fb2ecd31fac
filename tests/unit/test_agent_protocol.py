"""The one host-guest protocol, end to end on this host: the real agent.py in a child process
(as the guest runs it), the real host client, helper modules written for the test."""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.errors import GuestError
from testbed.guestvm.agent_client import Agent
from testbed.guestvm.guest import AGENT_BOOTSTRAP, agent_bundle, listener_preamble

AGENT = Path(__file__).resolve().parents[2] / "testbed" / "in_guest" / "agent.py"
# the agent and what it imports at its start
AGENT_CORE = [AGENT, AGENT.parent / "common.py", AGENT.parent / "jsonlite.py"]

HELPER = """
import json, os, signal, sys, time

def echo(args):
    return {"echo": args}

def boom(args):
    raise ValueError("boom")

def pid(args):
    return os.getpid()

def child_sigign(args):
    import subprocess
    status = subprocess.run(["grep", "^SigIgn", "/proc/self/status"], capture_output=True, text=True).stdout
    return int(status.split()[1], 16)

def env(args):
    return {"environ": dict(os.environ), "cwd": os.getcwd()}

def oserror(args):
    raise FileNotFoundError(2, "No such file or directory", "/sys/bus/pci/devices/0000:09:00.0")

def exits(args):
    raise SystemExit("a command that exits")

def noisy(args):
    print("a stray print")
    return {"quiet": False}

def child_reads_stdin(args):
    import subprocess
    return {"read": subprocess.run(["cat"], stdout=subprocess.PIPE, timeout=10, text=True).stdout}

COMMANDS = {
    "echo": echo,
    "pid": pid,
    "env": env,
    "child_sigign": child_sigign,
    "boom": boom,
    "noisy": noisy,
    "oserror": oserror,
    "exits": exits,
    "child_reads_stdin": child_reads_stdin,
}

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "argv":
        print(json.dumps({"argv": sys.argv[2:]}))
    elif cmd == "fail":
        sys.exit("helper failed on purpose")
    elif cmd == "hold":
        print(json.dumps({"mapped": True}), flush=True)
        line = sys.stdin.readline()
        print(json.dumps({"got": json.loads(line)}), flush=True)
    elif cmd == "crash":
        print(json.dumps({"about": "to die"}), flush=True)
        os.kill(os.getpid(), signal.SIGBUS)
    elif cmd == "sleep":
        time.sleep(60)
    elif cmd == "whoami":
        print(json.dumps({"ppid": os.getppid(), "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
                          "argv": sys.argv, "main": __name__, "file": os.path.basename(__file__)}), flush=True)
    elif cmd == "unflushed":
        print("no flush, no newline at the end", end="")
"""


LISTENER = Path(__file__).resolve().parents[2] / "guest-images" / "rootfs" / "usr" / "local" / "sbin"
LISTENER = LISTENER / "testbed-agent-listen"


def _start_by_exec(tmp_path: Path, bundle: bytes):
    """As `python3 -c AGENT_BOOTSTRAP DIR` started over an SSH exec channel would."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", AGENT_BOOTSTRAP, str(tmp_path / "agent")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(bundle)
    proc.stdin.flush()
    return proc, proc.stdin, proc.stdout, lambda: None


def _as_a_background_job() -> None:
    """How testbed-init's shell starts the listener (`... &`): SIGINT and SIGQUIT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def _listener(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """The image's testbed-agent-listen (testbed-init starts it in the guest) on a free port,
    with what the kernel puts in init's environment, and init's word that it has mounted."""
    init_env = {**os.environ, "HOME": "/", "TERM": "linux", "no_timer_check": "1"}
    mounted = tmp_path / "testbed-init.mounted"
    mounted.touch()
    proc = subprocess.Popen(
        [sys.executable, "-u", str(LISTENER), "--port", "0", "--mounted", str(mounted)],
        stderr=subprocess.PIPE,
        text=True,
        env=init_env,
        preexec_fn=_as_a_background_job,
    )
    assert proc.stderr is not None
    said = proc.stderr.readline()
    port = re.search(r"listening on 127\.0\.0\.1:(\d+)", said)
    assert port, f"the listener said {said!r}"
    return proc, int(port.group(1))


def _connect(port: int, where: Path, bundle: bytes):
    """As sshd's direct-tcpip connection in the guest: the bootstrap, then the bundle."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.settimeout(None)
    writer, reader = conn.makefile("wb"), conn.makefile("rb")
    writer.write(listener_preamble(AGENT_BOOTSTRAP, [str(where)]) + bundle)
    writer.flush()

    def close() -> None:
        try:
            conn.shutdown(socket.SHUT_RDWR)  # its files hold the descriptor open: end it for both
        except OSError:
            pass  # a second close (the test closed the agent, then the fixture): ENOTCONN once the far end is gone
        conn.close()

    return writer, reader, close


def _start_by_listener(tmp_path: Path, bundle: bytes):
    """As the guest starts it: a connection to the listener gets a forked session that runs
    the bootstrap sent ahead of the bundle."""
    proc, port = _listener(tmp_path)
    return (proc, *_connect(port, tmp_path / "agent", bundle))


@pytest.fixture(params=["exec", "listener"])
def agent(request, tmp_path):
    """The real agent, its helpers (this test's among them) unpacked by the bootstrap from the
    head of its stream, started each way the harness can start it."""
    sources = tmp_path / "sources"
    sources.mkdir()
    for src in AGENT.parent.glob("*.py"):
        (sources / src.name).write_text(src.read_text())
    (sources / "helper.py").write_text(HELPER)
    bundle = agent_bundle(sorted(sources.glob("*.py")))
    start = _start_by_exec if request.param == "exec" else _start_by_listener
    proc, writer, reader, close = start(tmp_path, bundle)
    a = Agent(writer, reader, "local", close)
    try:
        a.wait_ready(10)
        yield a
    finally:
        try:
            a.close()
        finally:  # a listener left behind would outlive the test run
            if request.param != "exec":
                proc.terminate()
            proc.wait(10)


def test_the_bootstrap_wrote_every_helper_and_its_bytecode(agent, tmp_path):
    where = tmp_path / "agent"
    assert (where / "helper.py").read_text() == HELPER
    tag = sys.implementation.cache_tag
    assert (where / "__pycache__" / f"agent.{tag}.pyc").is_file()
    assert {p.name for p in where.glob("*.py")} == {p.name for p in AGENT.parent.glob("*.py")} | {"helper.py"}


def test_call_in_process_and_as_a_child(agent):
    assert agent.call("helper", ["echo", '{"x": 1}'], timeout=10) == {"echo": {"x": 1}}
    assert agent.call("helper", ["argv", "a", "b c"], timeout=10) == {"argv": ["a", "b c"]}


def test_a_stray_print_does_not_corrupt_the_channel(agent):
    assert agent.call("helper", ["noisy", "{}"], timeout=10) == {"quiet": False}
    assert agent.call("helper", ["echo", "1"], timeout=10) == {"echo": 1}


def test_a_program_an_in_process_command_runs_cannot_read_the_requests(agent):
    assert agent.call("helper", ["child_reads_stdin", "{}"], timeout=20) == {"read": ""}
    assert agent.call("helper", ["echo", "2"], timeout=10) == {"echo": 2}


def test_errors_keep_what_the_guest_said(agent):
    with pytest.raises(GuestError, match="ValueError: boom"):
        agent.call("helper", ["boom", "{}"], timeout=10)
    with pytest.raises(GuestError, match="exited 1:\nhelper failed on purpose"):
        agent.call("helper", ["fail"], timeout=10)


def test_an_in_process_failure_is_an_error_unless_the_module_makes_oserrors_results(agent):
    """A module's OSError is a result ({"ok": false, ...}) only where its own CLI prints it so
    (OSERROR_IS_RESULT: kmsg, probe, gcov, kselftest); elsewhere (p2pmem, pci, fingerprint) it
    is the error it was when the call ran as a child. A SystemExit is answered too, at once."""
    with pytest.raises(GuestError, match="FileNotFoundError"):
        agent.call("helper", ["oserror", "{}"], timeout=10)
    started = time.monotonic()
    with pytest.raises(GuestError, match="a command that exits"):
        agent.call("helper", ["exits", "{}"], timeout=30)
    assert time.monotonic() - started < 10
    assert agent.call("helper", ["echo", "3"], timeout=10) == {"echo": 3}


def test_spawned_helper_events_stdin_and_exit(agent):
    hold = agent.spawn("helper", ["hold"])
    assert hold.wait_event(lambda e: "mapped" in e, timeout=10)["mapped"] is True
    assert agent.call("helper", ["echo", "{}"], timeout=10) == {"echo": {}}  # the channel is not blocked
    hold.send({"go": 1}, timeout=10)
    assert hold.wait_event(lambda e: "got" in e, timeout=10) == {"got": {"go": 1}}
    assert hold.wait_exit(timeout=10) == 0


def test_a_spawned_helper_is_a_fork_of_the_agent_with_only_its_own_pipes(agent):
    """No interpreter start per helper (~0.3 s under TCG): the agent forks and runs the module
    as __main__, and the child keeps none of the agent's descriptors (the host's channel, the
    virtio-serial port: a helper outliving the session must not hold them open)."""
    agent_pid = agent.call("helper", ["pid", "{}"], timeout=10)
    who = agent.spawn("helper", ["whoami", "x y"])
    assert who.wait_exit(timeout=10) == 0
    (seen,) = who.lines()
    assert seen["ppid"] == agent_pid
    assert seen["fds"][:3] == [0, 1, 2] and len(seen["fds"]) == 4  # and the one listing /proc/self/fd
    assert seen["argv"][1:] == ["whoami", "x y"] and seen["main"] == "__main__" and seen["file"] == "helper.py"
    tail = agent.spawn("helper", ["unflushed"])
    assert tail.wait_exit(timeout=10) == 0
    assert tail.lines() == [{"text": "no flush, no newline at the end"}]


def test_a_helper_killed_by_a_signal_does_not_take_the_agent_down(agent):
    crash = agent.spawn("helper", ["crash"])
    assert crash.wait_exit(timeout=10) == 128 + signal.SIGBUS
    assert crash.lines() == [{"about": "to die"}]
    assert agent.call("helper", ["echo", '"still here"'], timeout=10) == {"echo": "still here"}


def test_waits_have_deadlines_and_kill_works(agent):
    sleeper = agent.spawn("helper", ["sleep"])
    started = time.monotonic()
    with pytest.raises(GuestError, match="no ready within 1s"):
        sleeper.wait_event(lambda e: "ready" in e, timeout=1, what="ready")
    assert time.monotonic() - started < 5
    sleeper.kill(signal.SIGKILL, timeout=10)
    assert sleeper.wait_exit(timeout=10) == 128 + signal.SIGKILL


def test_closing_the_channel_ends_helpers_and_waits(agent):
    sleeper = agent.spawn("helper", ["sleep"])
    agent.close()  # the agent kills its helpers when its stdin closes
    started = time.monotonic()
    try:
        status = sleeper.wait_exit(timeout=30)
    except GuestError:
        status = None  # the channel went first: the waiter is told at once
    assert status in (None, 128 + signal.SIGKILL)
    assert time.monotonic() - started < 10


def test_the_listener_serves_one_session_per_connection(tmp_path):
    """A second connection (the agent installed again on the same VM) gets a session of its
    own, and a session that ends leaves the listener listening."""
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "helper.py").write_text(HELPER)
    bundle = agent_bundle([*AGENT_CORE, sources / "helper.py"])
    proc, port = _listener(tmp_path)
    try:
        pids = []
        for n in range(2):
            writer, reader, close = _connect(port, tmp_path / f"agent{n}", bundle)
            a = Agent(writer, reader, f"session{n}", close)
            a.wait_ready(10)
            assert a.call("helper", ["echo", str(n)], timeout=10) == {"echo": n}
            pids.append(a.call("helper", ["pid", "{}"], timeout=10))
            a.close()
        assert proc.poll() is None, "the listener exited with its first session"
        assert len(set(pids)) == 2 and proc.pid not in pids, pids
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_listener_session_has_a_login_environment_not_inits(tmp_path):
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "helper.py").write_text(HELPER)
    proc, port = _listener(tmp_path)
    try:
        writer, reader, close = _connect(port, tmp_path / "agent", agent_bundle([*AGENT_CORE, sources / "helper.py"]))
        a = Agent(writer, reader, "session", close)
        a.wait_ready(10)
        got = a.call("helper", ["env", "{}"], timeout=10)
        a.close()
    finally:
        proc.terminate()
        proc.wait(10)
    home = pwd.getpwuid(os.getuid()).pw_dir
    assert got["cwd"] == home
    assert got["environ"]["HOME"] == home and got["environ"]["USER"] == pwd.getpwuid(os.getuid()).pw_name
    assert "TERM" not in got["environ"] and "no_timer_check" not in got["environ"]


def test_helpers_get_sigint_and_sigquit_back(agent):
    """Started from init's shell as a background job, the listener ignores SIGINT and SIGQUIT;
    what the agent runs must not inherit that (under sshd it did not)."""
    mask = agent.call("helper", ["child_sigign", "{}"], timeout=10)
    assert not mask & (1 << (signal.SIGINT - 1)) and not mask & (1 << (signal.SIGQUIT - 1)), hex(mask)


def test_a_session_that_fails_is_reported_at_once_with_its_traceback_in_the_log(tmp_path):
    proc, port = _listener(tmp_path)
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.settimeout(None)
        conn.sendall(b"not-a-size /tmp/x\n")
        a = Agent(conn.makefile("wb"), conn.makefile("rb"), "session", conn.close)
        started = time.monotonic()
        # the session's last word, before its connection closes
        with pytest.raises(
            GuestError, match=r"(?s)did not start: its session failed in the guest:\nTraceback.*ValueError"
        ):
            a.wait_ready(30)
        assert time.monotonic() - started < 5
        a.close()
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.stderr is not None
    said = proc.stderr.read()
    assert "session failed:\nTraceback" in said and "ValueError" in said, said


def test_a_failed_session_is_heard_on_a_channel_that_stays_open():
    """On the port the host's socket stays connected after the guest's session died: the
    listener's last word is what ends the wait, and waiting requests are told too."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader, os.fdopen(os.dup(write_end), "wb") as unused_writer:
        a = Agent(unused_writer, reader, "port")
        os.write(write_end, b'{"agent": "failed", "error": "Traceback ...\\nOSError: gone\\n"}\n')
        started = time.monotonic()
        with pytest.raises(
            GuestError, match=r"did not start: its session failed in the guest:\nTraceback ...\nOSError: gone$"
        ):
            a.wait_ready(30)
        assert time.monotonic() - started < 5
        assert a.dead is not None and not a.ready.is_set()
        os.close(write_end)


def test_request_threads_are_kept_for_later_requests_and_never_waited_for():
    """agent.Workers: a thread done with its request takes the next (a thread start costs
    ~1-3 ms under TCG, and every request had one); a request that blocks does not hold up
    the next, which gets a thread of its own."""
    import threading

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "in_guest"))
    import agent as guest_agent

    workers = guest_agent.Workers()
    ran: list[str] = []
    done = threading.Semaphore(0)

    def record(n: int) -> None:
        ran.append(threading.current_thread().name)  # "Thread-N": never reused, unlike an ident
        done.release()

    for n in range(50):
        workers.submit(record, n)
        assert done.acquire(timeout=10)
    assert len(set(ran)) <= 2, f"{len(set(ran))} threads for 50 requests one after the other"

    release = threading.Event()
    workers.submit(lambda _: release.wait(10), None)
    workers.submit(record, 50)
    assert done.acquire(timeout=10), "a request waited for a blocked one"
    release.set()
