import socket
import threading
import time

import pytest

from testbed.errors import InfraError
from testbed.guest.ssh import SSH, RunResult, _command_line, ssh_client_argv


def test_command_line_quotes_lists():
    assert _command_line("dmesg | tail") == "dmesg | tail"
    assert _command_line(["echo", "a b", "$x"]) == "echo 'a b' '$x'"


def test_client_argv_is_a_list_with_the_key_and_port(tmp_path):
    argv = ssh_client_argv(2222, tmp_path / "k", command=["uname", "-r"])
    assert argv[0] == "ssh" and argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == str(tmp_path / "k")
    assert argv[-4:] == ["root@127.0.0.1", "--", "uname", "-r"]


def test_run_result():
    assert RunResult(0, "", "").ok and not RunResult(1, "", "").ok


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_is_retried_until_the_deadline(tmp_path):
    key = tmp_path / "id"
    key.write_text("not used: nothing listens")
    start = time.monotonic()
    with pytest.raises(InfraError, match=r"not ready after 1s and ([2-9]|\d\d+) attempts"):
        SSH(_free_port(), key).connect(1.0, attempt_timeout=0.5, interval=0.1)
    assert time.monotonic() - start < 5


def test_banner_errors_are_retried(tmp_path):
    # what slirp does before sshd listens: accept the TCP connection, then close it
    key = tmp_path / "id"
    key.write_text("x")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []

    def serve():
        server.settimeout(5)
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(InfraError, match="attempts"):
            SSH(server.getsockname()[1], key).connect(1.5, attempt_timeout=0.5, interval=0.1)
    finally:
        server.close()
    assert len(accepted) >= 2


def test_check_hook_stops_the_wait_early(tmp_path):
    key = tmp_path / "id"
    key.write_text("x")

    def check():
        raise RuntimeError("kernel panicked")

    with pytest.raises(RuntimeError, match="panicked"):
        SSH(_free_port(), key).connect(60.0, check=check)


def test_missing_key_fails_at_once(tmp_path):
    with pytest.raises(InfraError, match="does not exist"):
        SSH(_free_port(), tmp_path / "nope").connect(60.0)
