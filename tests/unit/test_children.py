"""A SIGTERM to `testbed` reaches the pytest it runs (ab, bisect, kselftest, a matrix cell):
the child tears down before the parent ends, and the parent exits 143."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

CHILD = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
def stop(signum, frame):
    time.sleep(0.3)  # a teardown that takes a while: the parent must wait for it
    (out / "torn-down").write_text("yes")
    sys.exit(1)
signal.signal(signal.SIGTERM, stop)
(out / "ready").write_text("yes")
time.sleep(60)
"""

PARENT = """
import signal, sys
from pathlib import Path
from testbed.children import Terminated, raise_terminated, run_child
signal.signal(signal.SIGTERM, raise_terminated)
try:
    run_child([sys.executable, sys.argv[1], sys.argv[2]], Path(sys.argv[2]))
except Terminated:
    (Path(sys.argv[2]) / "parent-saw").write_text("terminated")
    sys.exit(Terminated.exit_code)
sys.exit(0)
"""


def _wait_ready(tmp_path: Path, proc: subprocess.Popen) -> None:
    """Until the process under test wrote tmp_path/ready (it must not end before)."""
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)


def test_sigterm_is_passed_on_and_waited_for(tmp_path: Path):
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(CHILD))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(child), str(tmp_path)])
    _wait_ready(tmp_path, parent)
    parent.terminate()
    assert parent.wait(timeout=20) == 143
    assert (tmp_path / "torn-down").read_text() == "yes"  # before the parent ended
    assert (tmp_path / "parent-saw").read_text() == "terminated"


def test_a_child_that_ends_gives_its_status(tmp_path: Path):
    from testbed.children import run_child

    assert run_child([sys.executable, "-c", "raise SystemExit(5)"], tmp_path) == 5


def test_a_sigterm_to_pytest_tears_the_session_down_and_writes_results(tmp_path: Path):
    """The plugin turns SIGTERM into pytest's interruption: session fixtures (the VM pool) are
    finalized and the JUnit file written, where Python's default would just end the process."""
    (tmp_path / "test_slow.py").write_text(
        textwrap.dedent(
            """
            import time
            from pathlib import Path
            import pytest

            @pytest.fixture(scope="session")
            def pool():
                yield
                Path("torn-down").write_text("yes")

            def test_slow(pool):
                Path("ready").write_text("yes")
                time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=junit.xml", "test_slow.py"],
        cwd=tmp_path,
        env={**os.environ, "TESTBED_RESULTS": str(tmp_path / "results")},
    )
    _wait_ready(tmp_path, proc)
    proc.terminate()
    assert proc.wait(timeout=30) == 2  # pytest's "interrupted"
    assert (tmp_path / "torn-down").read_text() == "yes"
    assert (tmp_path / "junit.xml").is_file()


def test_a_sigterm_to_the_whole_group_does_not_cut_the_teardown_short(tmp_path: Path):
    """timeout(1), systemd and CI runners signal the process group: pytest gets SIGTERM twice
    (directly, and forwarded by testbed); the second must not interrupt the teardown."""
    (tmp_path / "test_slow.py").write_text(
        textwrap.dedent(
            """
            import os, signal, time
            from pathlib import Path
            import pytest

            @pytest.fixture(scope="session")
            def pool():
                yield
                os.kill(os.getpid(), signal.SIGTERM)  # the forwarded copy, during the teardown
                time.sleep(0.3)
                Path("torn-down").write_text("yes")

            def test_slow(pool):
                Path("ready").write_text("yes")
                time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_slow.py"],
        cwd=tmp_path,
        env={**os.environ, "TESTBED_RESULTS": str(tmp_path / "results")},
    )
    _wait_ready(tmp_path, proc)
    proc.terminate()
    assert proc.wait(timeout=30) == 2
    assert (tmp_path / "torn-down").read_text() == "yes"


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command (state first, start time at index 19), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def test_a_session_of_processes_is_stopped_whole_when_we_are_terminated(tmp_path: Path):
    """`git bisect run` and its steps, a mutant's pytest: a session of their own, so a SIGTERM
    to testbed reaches them only because it stops the session, grandchildren included."""
    parent = textwrap.dedent(
        """
        import signal, sys
        from pathlib import Path
        from testbed.children import Terminated, raise_terminated, run_in_session
        signal.signal(signal.SIGTERM, raise_terminated)
        out = Path(sys.argv[1])
        try:
            run_in_session(["sh", "-c", "sleep 60 & echo $! > grandchild; touch ready; wait"], out)
        except Terminated:
            sys.exit(143)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent, str(tmp_path)])
    _wait_ready(tmp_path, proc)
    grandchild = int((tmp_path / "grandchild").read_text())
    born = _stat(grandchild)[19]  # its start time: a busy host (pid_max 32768) reuses pids fast
    proc.terminate()
    assert proc.wait(timeout=40) == 143  # stop_session returned: the whole group is gone
    after = _stat(grandchild)
    assert after is None or after[19] != born or after[0] == "Z", f"the grandchild still runs: {after}"


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`testbed coverage scope | head -1` when head has gone before the output comes: exit 141
    (SIGPIPE, as a shell tool's) without a traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.cli", "coverage", "scope"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    proc.stdout.close()  # before the interpreter has started: its first write finds no reader
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err


def test_a_group_of_unreaped_exits_only_is_not_alive():
    """stop_session waits for a group's live processes; an exited one whose parent never reaps
    it (an init that does not) must not keep it waiting."""
    from testbed.children import _group_alive

    keeper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.setpgid(0, 0)\n"
            "    os._exit(0)\n"
            "print(pid, flush=True)\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert keeper.stdout is not None
        zombie = int(keeper.stdout.readline())
        deadline = time.monotonic() + 10
        while "Z" not in Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not _group_alive(zombie)
        assert _group_alive(keeper.pid)  # the keeper's own session and group: it sleeps
    finally:
        keeper.kill()
        keeper.wait()
