"""SSH into the guest with paramiko: retry until sshd answers, run commands with deadlines.

Files move over plain exec channels (`cat`), so the guest image needs no sftp-server.
"""

from __future__ import annotations

import logging
import select
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paramiko

from ..errors import GuestError, InfraError
from ..timeouts import Deadline, Timeouts

log = logging.getLogger(__name__)  # DEBUG: every command, its status and seconds

USER = "root"
HOST = "127.0.0.1"

# paramiko's transport thread logs every failed banner read as an ERROR with a traceback;
# while the guest boots those are expected, and the final failure is raised anyway.
_QUIET = "testbed.ssh.transport"
_quiet_log = logging.getLogger(_QUIET)
_quiet_log.addHandler(logging.NullHandler())
_quiet_log.propagate = False
_quiet_log.setLevel(logging.CRITICAL)  # pytest's capture handler would still record them


@dataclass(frozen=True)
class RunResult:
    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


HOST_KEY_PUB = "ssh_host_ed25519_key.pub"  # written beside the login key when the image is built
HOST_KEY_ALIAS = "testbed-guest"  # the name the pinned key is known under, whatever the port


class HostKeyMismatch(InfraError):
    pass


def host_key_of(login_key: Path) -> Path | None:
    """The guest's host public key, pinned by the image build beside root's login key."""
    path = Path(login_key).parent / HOST_KEY_PUB
    return path if path.is_file() else None


class _PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Accept exactly the host key the image was built with: whatever listens on the forwarded
    port (another user's process, another VM) is refused."""

    def __init__(self, pub: Path) -> None:
        fields = pub.read_text().split()
        if len(fields) < 2:
            raise InfraError(f"{pub} is not an OpenSSH public key line")
        self.pub, self.type, self.base64 = pub, fields[0], fields[1]

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if key.get_name() != self.type or key.get_base64() != self.base64:
            raise HostKeyMismatch(
                f"ssh {hostname}: the server's {key.get_name()} host key is not the guest image's ({self.pub}): "
                "something else answers on this port"
            )


class _AcceptAnyHostKey(paramiko.MissingHostKeyPolicy):
    """For an image without a recorded host key (built before keys were pinned): logged."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning("ssh %s: no pinned host key for this image; accepting %s", hostname, key.get_name())


def known_hosts_file(pub: Path, directory: Path) -> Path:
    """A known_hosts with the pinned key under HOST_KEY_ALIAS, for the system ssh client."""
    fields = pub.read_text().split()
    path = directory / f"known_hosts-{pub.parent.name}"
    path.write_text(f"{HOST_KEY_ALIAS} {fields[0]} {fields[1]}\n")
    return path


def _command_line(cmd: str | Sequence[str]) -> str:
    return cmd if isinstance(cmd, str) else shlex.join(list(cmd))


def ssh_client_argv(
    port: int,
    key: Path,
    user: str = USER,
    host: str = HOST,
    command: Sequence[str] = (),
    known_hosts: Path | None = None,
) -> list[str]:
    """The system ssh client's command line for this VM (for humans: a real pty); with the pinned
    host key when `known_hosts` (known_hosts_file()) is given."""
    if known_hosts is not None:
        checking = [
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            f"HostKeyAlias={HOST_KEY_ALIAS}",
        ]
    else:
        checking = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    argv = [
        "ssh",
        "-i",
        str(key),
        "-p",
        str(port),
        *checking,
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        f"{user}@{host}",
    ]
    if command:
        argv += ["--", *command]
    return argv


# What "sshd is not up yet" looks like from the host side of slirp: the forward accepts the
# TCP connection and then closes it, or sshd has not loaded its keys yet.
_RETRYABLE = (
    paramiko.ssh_exception.NoValidConnectionsError,
    paramiko.SSHException,  # banner errors, "Error reading SSH protocol banner", auth
    EOFError,
    ConnectionError,
    socket.timeout,
    OSError,
)


class SSH:
    def __init__(
        self, port: int, key: Path, user: str = USER, host: str = HOST, command_timeout: float = Timeouts.guest_command
    ) -> None:
        self.port = port
        self.key = key
        self.user = user
        self.host = host
        self.command_timeout = command_timeout
        self._client: paramiko.SSHClient | None = None

    # -- connection -----------------------------------------------------------------------

    def connect_once(self, timeout: float) -> None:
        client = paramiko.SSHClient()
        client.set_log_channel(_QUIET)
        pub = host_key_of(self.key)
        client.set_missing_host_key_policy(_PinnedHostKey(pub) if pub is not None else _AcceptAnyHostKey())
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=str(self.key),
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._client = client

    def connect(
        self,
        timeout: float,
        attempt_timeout: float = Timeouts.ssh_attempt,
        interval: float = 0.5,
        check: Callable[[], None] | None = None,
    ) -> int:
        """Retry until connected or `timeout`; `check()` runs between attempts and raises to
        stop early (QEMU died, the kernel panicked). Returns the number of attempts.
        Raises InfraError (with the last failure) at the deadline."""
        if not Path(self.key).is_file():
            raise InfraError(f"ssh key {self.key} does not exist")
        deadline = Deadline(timeout)
        attempts = 0
        last: BaseException | None = None
        while True:
            if check is not None:
                check()
            remaining = deadline.remaining()
            if remaining <= 0:
                raise InfraError(
                    f"ssh {self.user}@{self.host}:{self.port}: not ready after "
                    f"{timeout:.0f}s and {attempts} attempts (last: "
                    f"{type(last).__name__}: {last})"
                )
            attempts += 1
            try:
                self.connect_once(max(1.0, min(attempt_timeout, remaining)))
                return attempts
            except paramiko.ssh_exception.BadAuthenticationType as exc:
                raise InfraError(f"ssh {self.user}@{self.host}:{self.port}: {exc}") from None
            except _RETRYABLE as exc:
                last = exc
            time.sleep(min(interval, deadline.remaining()))

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            raise InfraError("ssh: not connected")
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- commands -------------------------------------------------------------------------

    def _session(self) -> paramiko.Channel:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise InfraError(f"ssh connection to port {self.port} is closed")
        return transport.open_session(timeout=Timeouts.ssh_channel)

    def run(
        self, cmd: str | Sequence[str], timeout: float | None = None, check: bool = False, stdin: bytes | None = None
    ) -> RunResult:
        """Run `cmd` (a list is shell-quoted) under the guest's shell; wait at most `timeout`.

        A command still running at the deadline is a GuestError (the thing under test hung).
        """
        line = _command_line(cmd)
        timeout = self.command_timeout if timeout is None else timeout
        started = time.monotonic()
        chan = self._session()
        out, err = bytearray(), bytearray()
        try:
            chan.exec_command(line)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            deadline = Deadline(timeout)
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                # the exit status can arrive before the last of the output is buffered: only
                # the channel's EOF (sent after all data) says nothing more will come
                if (
                    chan.exit_status_ready()
                    and chan.eof_received
                    and not chan.recv_ready()
                    and not chan.recv_stderr_ready()
                ):
                    break
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise GuestError(
                        f"guest command did not finish within {timeout:.0f}s: "
                        f"{line}\n--- output so far ---\n"
                        f"{_text(out)[-2000:]}{_text(err)[-2000:]}"
                    )
                select.select([chan], [], [], min(remaining, 1.0))
            status = chan.recv_exit_status()
        finally:
            chan.close()
        result = RunResult(status, _text(out), _text(err))
        log.debug(
            "ssh :%d %s -> status %d in %.2fs (%d/%d bytes out/err)",
            self.port,
            line[:300],
            status,
            time.monotonic() - started,
            len(out),
            len(err),
        )
        if check and status != 0:
            raise GuestError(
                f"guest command failed with status {status}: {line}\n--- stderr ---\n{result.stderr[-4000:]}"
            )
        return result

    def forward(self, port: int, timeout: float) -> tuple[IO[bytes], IO[bytes], Callable[[], None]]:
        """A connection to 127.0.0.1:`port` inside the guest, made by sshd (a direct-tcpip
        channel: no exec, no shell): (to it, from it, close). Retries while nothing listens
        there yet, until `timeout`; then a GuestError."""
        deadline = Deadline(timeout)
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise InfraError(f"ssh connection to port {self.port} is closed")
        while True:
            try:
                chan = transport.open_channel(
                    "direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=Timeouts.ssh_channel
                )
                break
            except paramiko.ChannelException as exc:
                if exc.code != paramiko.common.OPEN_FAILED_CONNECT_FAILED:  # refused by sshd itself
                    raise InfraError(f"ssh :{self.port}: sshd refused a channel to 127.0.0.1:{port}: {exc}") from None
                if deadline.expired:  # "Connect failed": nothing listens (yet)
                    raise GuestError(
                        f"ssh :{self.port}: nothing listens on the guest's 127.0.0.1:{port} after {timeout:g}s ({exc})"
                    ) from None
                time.sleep(0.02)
            except (paramiko.SSHException, EOFError, OSError) as exc:  # the connection itself broke
                raise InfraError(f"ssh :{self.port}: opening a channel to 127.0.0.1:{port} failed: {exc}") from None
        log.debug("ssh :%d forward to guest 127.0.0.1:%d", self.port, port)

        def close() -> None:
            chan.close()  # sshd then closes its connection: the far end reads EOF

        return chan.makefile("wb"), chan.makefile("rb"), close

    def put(self, local: Path, remote: str, mode: int | None = None, timeout: float | None = None) -> None:
        data = Path(local).read_bytes()
        line = f"cat > {shlex.quote(remote)}"
        if mode is not None:
            line += f" && chmod {mode:o} {shlex.quote(remote)}"
        self.run(line, timeout=timeout, check=True, stdin=data)

    def get(self, remote: str, local: Path, timeout: float | None = None) -> None:
        chan = self._session()
        timeout = self.command_timeout if timeout is None else timeout
        chan.settimeout(timeout)
        data = bytearray()
        try:
            chan.exec_command(f"cat {shlex.quote(remote)}")
            chan.shutdown_write()
            while True:
                chunk = chan.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
            status = chan.recv_exit_status()
            err = chan.recv_stderr(65536)
        except TimeoutError:
            raise GuestError(f"reading {remote} from the guest took over {timeout:.0f}s") from None
        finally:
            chan.close()
        if status != 0:
            raise GuestError(f"cannot read {remote} in the guest: {_text(err).strip()}")
        Path(local).write_bytes(bytes(data))

    def interactive_shell(self, command: Sequence[str] = ()) -> int:
        """A real terminal for a human: the system ssh client with a pty. Its exit status."""
        from ..paths import runtime_dir

        pub = host_key_of(self.key)
        known = known_hosts_file(pub, runtime_dir()) if pub is not None else None
        return subprocess.call(ssh_client_argv(self.port, self.key, self.user, self.host, command, known))


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")
