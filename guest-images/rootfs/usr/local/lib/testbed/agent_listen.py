"""testbed-agent-listen [--port N] [--mounted PATH] (/usr/local/sbin/, which runs this module's main()): started
by testbed-init, so that the harness's guest agent is an interpreter already running, not one an
SSH exec starts after login.

Under TCG the first Python start of a boot costs ~0.5 s (its code is translated for the first
time); begun by init, that runs beside the rest of boot instead of after a login. The harness
reaches it two ways:

- the virtio-serial port named org.testbed.agent (/dev/vportNpM), when the kernel has
  CONFIG_VIRTIO_CONSOLE and QEMU was given the port: no network, no SSH handshake before the
  agent answers. The harness writes its bootstrap into the port's socket as QEMU starts; the
  bytes wait in QEMU until this process opens the port. One session at a time (the port has
  one end); when the harness closes its side the session ends and the port is opened again.
- TCP on the guest's loopback, through the harness's SSH connection (a direct-tcpip channel:
  sshd connects, no exec), for kernels without the port. From outside the guest the pinned
  host key and the login key guard it (inside, any process can connect; everything there runs
  as root anyway).

Each session gets a forked child, in a session of its own, with the connection as its stdin
and stdout. It reads "<size> <arg>...\\n", then <size> bytes of Python source (the harness's
bootstrap, testbed/guestvm/guest.py AGENT_BOOTSTRAP), and runs it as `python3 -c SOURCE
ARG...` would. The source comes from the harness, so changing the agent needs no image
rebuild. What it says goes to its own log, never to the console the harness scans for splats.

Its own start is on the way to the agent's first answer, so it imports built-in modules only:
signal and socket import enum (~0.1 s of a boot under TCG), _signal and _socket do not; and it
is a module, its bytecode compiled when the image was built (compiling these lines took
~0.08 s of a boot), behind a stub script.
"""

import _signal
import _socket
import os
import select
import sys
import time

PORT = 5171  # testbed/guestvm/guest.py AGENT_PORT
BIND_WAIT_S = 30.0  # the loopback address exists once init has set lo up
PORT_NAME = "org.testbed.agent"  # testbed/render/qdev.py AGENT_PORT_NAME
# A virtio-serial port's device appears once the driver has heard of it from QEMU, early in
# boot; past this the kernel has none (no CONFIG_VIRTIO_CONSOLE, or no port on the command line).
PORT_WAIT_S = 5.0
HOST_AWAY_S = 0.1  # the harness has not connected to the port's socket: look again after this
# testbed-init writes this once /etc/fstab is mounted. This process starts before that, and a
# session can come as early as the port appears: what it wrote under /run before the tmpfs was
# mounted there would vanish under it (the agent's helpers did, in CI).
MOUNTED = "/run/testbed-init.mounted"
MOUNT_WAIT_S = 60.0


def log(text):
    up = time.clock_gettime(time.CLOCK_BOOTTIME)  # /proc/uptime's clock, /proc mounted or not
    print(f"testbed-agent-listen: {text} ({up:.2f} s)", file=sys.stderr, flush=True)


def try_listen(port):
    """The loopback TCP socket, or None while init has not set lo up yet."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(8)
        return sock
    except OSError:
        sock.close()
        return None


def find_port():
    """The agent's virtio-serial port device, or None (not there yet, or not at all). Named
    by the port number the harness gives it (nr=1); the name in sysfs confirms it once /sys is
    mounted (init mounts it a moment after starting this)."""
    try:  # not glob: it imports re, which costs a cold start ~0.1 s under TCG
        devices = sorted(d for d in os.listdir("/dev") if d.startswith("vport") and d.endswith("p1"))
    except OSError:
        return None
    for dev in devices:
        name_file = f"/sys/class/virtio-ports/{dev}/name"
        try:
            with open(name_file) as f:
                if f.read().strip() != PORT_NAME:
                    continue
        except OSError:
            pass  # no sysfs yet: the port number is the harness's
        return "/dev/" + dev
    return None


def read_line(fd):
    out = b""
    while not out.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            raise EOFError("the connection closed before the bootstrap's header")
        out += byte
    return out[:-1].decode()


def read_exactly(fd, size):
    out = bytearray()
    while len(out) < size:
        chunk = os.read(fd, size - len(out))
        if not chunk:
            raise EOFError(f"the connection closed after {len(out)} of {size} bytes of the bootstrap")
        out += chunk
    return bytes(out)


def wait_for_mounts(path=MOUNTED, wait_s=MOUNT_WAIT_S):
    """Until init has mounted the filesystems (~0.2 s after it started this, under TCG); said in
    the log if a session had to wait."""
    started = time.monotonic()
    waited = False
    while not os.path.exists(path):
        if time.monotonic() - started > wait_s:
            raise SystemExit(f"testbed-init has not mounted the filesystems after {wait_s:.0f} s (no {path})")
        time.sleep(0.01)
        waited = True
    if waited:
        log(f"the session waited {time.monotonic() - started:.2f} s for init's mounts")


def session(fd, mounted):
    """In the forked child: become `python3 -c SOURCE ARG...` on the connection's descriptor,
    once init has mounted what the agent uses (/run, /proc, /sys, /tmp): `mounted` exists."""
    os.dup2(fd, 0)
    os.dup2(fd, 1)  # first: a failure from here on is told on the connection (tell_harness)
    os.close(fd)
    wait_for_mounts(mounted)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)  # the agent waits for its helpers
    # A background job of init's shell starts with SIGINT and SIGQUIT ignored, and ignored
    # signals outlive exec: the helpers and the programs they run get them back, as under sshd.
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.signal(_signal.SIGQUIT, _signal.SIG_DFL)
    os.setsid()
    size, *args = read_line(0).split(" ")
    source = read_exactly(0, int(size))
    # The environment of a root SSH login, not init's (the kernel hands init HOME=/, TERM=linux
    # and every unknown key=value of its command line).
    import pwd

    root = pwd.getpwuid(os.getuid())  # root in the guest
    os.environ.clear()
    os.environ.update(
        {
            "HOME": root.pw_dir,
            "LOGNAME": root.pw_name,
            "USER": root.pw_name,
            "SHELL": root.pw_shell,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
    )
    os.chdir(root.pw_dir)
    sys.argv = ["-c", *args]
    exec(compile(source, "<testbed agent bootstrap>", "exec"), {"__name__": "__main__"})


# What the agent and its helpers import, the first calls' needs first: loaded while no one
# has connected yet (an SSH session comes after a login; the port's bytes are there at once),
# and shared with every session by fork. (-S: the agent and its helpers use the standard
# library only, so site's start-up work is skipped.)
WARM_UP = ("_json", "_queue", "struct", "threading", "re", "subprocess", "traceback", "runpy", "mmap", "ctypes")


def warm_up(fds):
    """Import WARM_UP until a connection or the port's bytes wait: the session then imports
    the rest itself."""
    for name in WARM_UP:
        if fds and session_waits(fds):
            return f"a session came before {name}"
        __import__(name)
    return "warmed up"


def session_waits(fds):
    """Whether a connection or the harness's bytes wait on one of `fds`: readable and not hung
    up (a port whose host side is away polls as both)."""
    events = select.poll()
    for fd in fds:
        events.register(fd, select.POLLIN)
    return any(flags & select.POLLIN and not flags & select.POLLHUP for _, flags in events.poll(0))


def tell_harness(error):
    """A failed session's last word on its connection (descriptor 1), in the agent's protocol:
    the harness hears of it at once. On the port it would not hear otherwise: the port's socket
    stays connected, and QEMU sends at most one VSERPORT_CHANGE a second, so the session's
    close and the listener's reopening reach QMP as a single "open"."""
    import _json

    line = '{"agent": "failed", "error": ' + _json.encode_basestring_ascii(error) + "}\n"
    try:
        os.write(1, line.encode())
    except OSError:
        pass  # the harness is gone: the log has it


def fork_session(fd, close, mounted):
    """A child that runs one session on `fd`, having closed the descriptors in `close` (a
    session must not hold the port open: it has one end, and the next session reopens it);
    its pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 0
    try:
        for other in close:
            os.close(other)
        session(fd, mounted)
    except SystemExit as exc:  # as the interpreter would end: None 0, a message 1
        status = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
        if status:
            tell_harness(str(exc.code))
    except BaseException:  # noqa: BLE001 - said in the log, the listener goes on
        import traceback

        said = traceback.format_exc()
        log(f"session failed:\n{said}")
        tell_harness(said)
        status = 1
    finally:
        os._exit(status)


class Port:
    """The virtio-serial port: looked for until PORT_WAIT_S, kept open while no session holds
    it, handed to a session when the harness's bytes wait in it."""

    def __init__(self):
        self.path = None
        self.fd = None
        self.child = None  # the session that holds it
        self.retry_at = 0.0
        self.given_up = False
        self.deadline = time.monotonic() + PORT_WAIT_S

    def pollable(self):
        """The port's descriptor to wait on, or None (held by a session, not found (yet), or
        hung up a moment ago)."""
        if self.child is not None or self.given_up:
            return None
        now = time.monotonic()
        if now < self.retry_at:
            return None
        if self.fd is None:
            if self.path is None:
                self.path = find_port()
                if self.path is None:
                    if now > self.deadline:
                        self.given_up = True
                        log(f"no virtio-serial port {PORT_NAME}: the harness reaches the agent over SSH only")
                    return None
                log(f"virtio-serial port {self.path}")
            self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        return self.fd

    def ready(self):
        """Whether a session should start: the harness's bytes wait. A port whose host side is
        not connected polls as hung up (and readable: a read would say end of file, as a
        session that started on it did under `testbed boot`): looked at again after
        HOST_AWAY_S, still open (closing and reopening it would tell QEMU the guest left, each
        time)."""
        if session_waits([self.fd]):
            os.set_blocking(self.fd, True)
            return True
        self.retry_at = time.monotonic() + HOST_AWAY_S
        return False

    def hand_over(self, close, mounted):
        """The session gets the port; its end (the harness closed its side) closes it."""
        self.child = fork_session(self.fd, close, mounted)
        os.close(self.fd)
        self.fd = None

    def reaped(self, pid):
        if pid == self.child:
            self.child = None


def options(argv):
    """--port N and --mounted PATH (the unit tests run this on the host), with their defaults."""
    given = dict(zip(argv[::2], argv[1::2], strict=False))  # an odd one out is caught below
    if len(argv) % 2 or set(given) - {"--port", "--mounted"}:
        raise SystemExit(f"usage: testbed-agent-listen [--port N] [--mounted PATH] (got {argv})")
    return int(given.get("--port", PORT)), given.get("--mounted", MOUNTED)


def main():
    port_number, mounted = options(sys.argv[1:])
    port = Port()
    tcp = None
    tcp_deadline = time.monotonic() + BIND_WAIT_S
    warmed = False
    while True:
        if tcp is None:
            tcp = try_listen(port_number)
            if tcp is not None:
                log(f"listening on 127.0.0.1:{tcp.getsockname()[1]}")
            elif time.monotonic() > tcp_deadline:
                raise SystemExit(f"cannot listen on 127.0.0.1:{port_number} after {BIND_WAIT_S:.0f} s")
        port_fd = port.pollable()
        fds = [f for f in (tcp, port_fd) if f is not None]
        if fds and not warmed:  # once a session can come: between imports, it is looked for
            log(warm_up(fds))
            warmed = True
        # short looks while the port or lo may still appear; a hung-up port (no harness on its
        # socket: `testbed boot`, or after the agent closed) is looked at every HOST_AWAY_S
        searching = tcp is None or (port.path is None and not port.given_up)
        timeout = 0.02 if searching else min(1.0, max(port.retry_at - time.monotonic(), 0.0) or 1.0)
        if fds:
            readable = select.select(fds, [], [], timeout)[0]
        else:
            readable = []
            time.sleep(timeout)
        while True:  # reap finished sessions (ours: SIGCHLD is not ignored, to see the port's end)
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            port.reaped(pid)
        if tcp is not None and tcp in readable:
            fd, _ = tcp._accept()  # _socket's accept: the new connection's descriptor
            fork_session(fd, [tcp.fileno()] + ([port.fd] if port.fd is not None else []), mounted)
            os.close(fd)
        if port_fd is not None and port_fd in readable and port.ready():
            port.hand_over([tcp.fileno()] if tcp is not None else [], mounted)
