import socket
import threading
import time

import pytest

from testbed.errors import InfraError
from testbed.vm.ssh import SSH, RunResult, _command_line, ssh_client_argv


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


def _pub(key, path):
    path.write_text(f"{key.get_name()} {key.get_base64()} testbed-guest-host\n")
    return path


def test_pinned_host_key_accepts_the_images_key_and_refuses_another(tmp_path):
    import paramiko

    from testbed.vm.ssh import HOST_KEY_PUB, HostKeyMismatch, _PinnedHostKey, host_key_of

    guest, other = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    login = tmp_path / "id_ed25519"
    login.write_text("private")
    assert host_key_of(login) is None  # an image from before pinning: nothing to pin
    pub = _pub(guest, tmp_path / HOST_KEY_PUB)
    assert host_key_of(login) == pub
    policy = _PinnedHostKey(pub)
    policy.missing_host_key(None, "[127.0.0.1]:2222", guest)  # the image's own key: accepted
    with pytest.raises(HostKeyMismatch, match="something else answers on this port"):
        policy.missing_host_key(None, "[127.0.0.1]:2222", other)


def test_system_client_pins_through_a_known_hosts_alias(tmp_path):
    import paramiko

    from testbed.vm.ssh import HOST_KEY_ALIAS, known_hosts_file

    key = paramiko.ECDSAKey.generate()
    (tmp_path / "img").mkdir()
    known = known_hosts_file(_pub(key, tmp_path / "img" / "host.pub"), tmp_path)
    assert known.read_text() == f"{HOST_KEY_ALIAS} {key.get_name()} {key.get_base64()}\n"
    argv = ssh_client_argv(2222, tmp_path / "k", known_hosts=known)
    assert "StrictHostKeyChecking=yes" in argv and f"UserKnownHostsFile={known}" in argv
    assert f"HostKeyAlias={HOST_KEY_ALIAS}" in argv and "StrictHostKeyChecking=no" not in argv
