"""`python3 agent.py`: the one protocol between the host and the guest's helpers.

One long-lived process per VM on one SSH channel (forwarded to the guest image's
testbed-agent-listen, which runs it in a forked child; or `python3 -c BOOTSTRAP` on a pipe).
Its first line says it runs, {"agent": "ready", "pid": N, "python": "3.11.2"}; a session the
listener could not bring that far ends with the listener's {"agent": "failed", "error": "..."}
instead. Then the host writes JSON lines on its stdin, it answers with JSON lines on stdout, each
tagged with the request's id:

  {"id": 1, "op": "call", "module": "kmsg", "argv": ["cursor"]}
      -> {"id": 1, "result": {...}}            or {"id": 1, "error": "...", "status": N}
  {"id": 2, "op": "spawn", "module": "p2pmem", "argv": ["hold", "{...}"]}
      -> {"id": 2, "started": PID}, then {"id": 2, "event": {...}} per line the helper
         prints, then {"id": 2, "exit": STATUS, "stderr": "..."} (128+N: killed by signal N)
  {"id": 3, "op": "send", "to": 2, "line": {...}}   a JSON line on that helper's stdin
      -> {"id": 3, "result": true}
  {"id": 4, "op": "kill", "to": 2, "signal": 9}     -> {"id": 4, "result": true}

A call runs the module's COMMANDS[argv[0]](args) in this process (no interpreter start per
call); a module without that table, or a call with other arguments, runs as a child
(`python3 module.py argv...`) whose last JSON line is the result. A spawned helper always
runs as a child: a SIGBUS in a helper that holds an unplugged device's mapping must not
take the agent down. That child is a fork of this process running the module as __main__,
not a new interpreter (an interpreter's start and imports cost ~0.3 s under TCG).
Requests run concurrently, each on a thread of its own, kept for a later request once it is
done; the agent exits when its stdin closes.
"""

import _queue
import _signal
import _thread
import os
import sys
import time

import common
import jsonlite

# The agent's start imports built-in modules only (and _json): json, signal, threading and
# importlib cost ~0.3 s of a boot under TCG, most of it the enum, re and functools they import,
# nothing the agent needs before its first answers. threading, subprocess, traceback and runpy
# are imported by the main thread a moment after the agent has said it is ready, or by the
# first request that needs them; the first calls (a kmsg cursor, the fingerprint: COMMANDS
# entries) need none of them. Not at once: an import holds _import_lock, which a call's own
# import waits for. (threading takes the thread that first imports it for the main thread: a
# helper importing it sooner makes that worker the one, which nothing here asks about, and a
# forked helper's threading starts from its own thread.)
LATER = ("threading", "subprocess", "traceback", "runpy")
LATER_S = 1.0

HERE = os.path.dirname(os.path.abspath(__file__))
STDERR_TAIL = 4000

_out_lock = _thread.allocate_lock()
_proto = sys.stdout  # the host's end; main() moves it off fd 1 so a stray print cannot corrupt it
_children = {}  # request id -> Forked
_children_lock = _thread.allocate_lock()
# Held while this process imports a helper module and while it forks: a fork taken while
# another thread imports would leave that module's import lock held in the child for good.
_import_lock = _thread.allocate_lock()
common.IMPORT_GUARD = _import_lock  # what the helpers import late, they import under it


class Workers:
    """The request threads. A thread's start costs ~1-3 ms under TCG (a clone, its stack, a
    wake-up on another vCPU), and every request had one: a thread done with its request now
    waits for the next. A request never waits for a busy one: with none idle, one more starts."""

    def __init__(self):
        self._lock = _thread.allocate_lock()
        self._idle = 0
        self._work = _queue.SimpleQueue()

    def submit(self, fn, arg) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # one waiting thread will take it
        if start:
            _thread.start_new_thread(self._run, (fn, arg))  # a daemon: the agent's end ends it
        else:
            self._work.put((fn, arg))

    def _run(self, fn, arg) -> None:
        while True:
            fn(arg)
            with self._lock:
                self._idle += 1
            fn, arg = self._work.get()


def send(obj) -> None:
    line = jsonlite.dumps(obj) + "\n"
    with _out_lock:
        _proto.write(line)
        _proto.flush()


def _child_argv(module: str, argv: list) -> list:
    return [sys.executable, "-u", os.path.join(HERE, module + ".py"), *argv]


def _in_process(module: str, argv: list):
    """The module's COMMANDS entry for this call, or None when it must run as a child."""
    if len(argv) > 2:
        return None
    # a module already loaded needs no lock: a call must not wait for an import elsewhere in
    # the agent (one held up by a stuck disk took every call down with it)
    try:
        mod = common.late_import(module)  # under _import_lock unless loaded
    except ImportError:
        return None
    table = getattr(mod, "COMMANDS", None)
    if not isinstance(table, dict) or not argv or argv[0] not in table:
        return None
    fn = table[argv[0]]
    args = jsonlite.loads(argv[1]) if len(argv) > 1 else {}
    if not getattr(mod, "OSERROR_IS_RESULT", False):
        return lambda: fn(args)

    def as_result():  # what the module's own CLI prints for an OSError
        try:
            return fn(args)
        except OSError as exc:
            from common import error_of

            return error_of(exc)

    return as_result


def _last_json(text: str):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line:
            try:
                return jsonlite.loads(line)
            except ValueError:
                return None
    return None


def call(req: dict) -> None:
    rid, module, argv = req["id"], req["module"], req.get("argv", [])
    try:
        fn = _in_process(module, argv)
        if fn is not None:
            send({"id": rid, "result": fn()})
            return
        with _import_lock:
            import subprocess
        proc = subprocess.run(_child_argv(module, argv), capture_output=True, text=True)
        result = _last_json(proc.stdout)
        if proc.returncode != 0 or result is None:
            send(
                {
                    "id": rid,
                    "error": proc.stderr[-STDERR_TAIL:] or proc.stdout[-STDERR_TAIL:],
                    "status": proc.returncode,
                }
            )
        else:
            send({"id": rid, "result": result})
    except BaseException:  # noqa: BLE001 - a SystemExit too: reported to the host, the agent goes on
        with _import_lock:
            import traceback
        send({"id": rid, "error": traceback.format_exc()[-STDERR_TAIL:], "status": -1})


def _run_helper(path: str, argv: list, pipes: list) -> None:
    """In the forked child: the helper module as `python3 -u path argv...` would run it, on
    the pipes (stdin, stdout, stderr); never returns. (Not _import_lock here: the child got it
    held, from the fork.)"""
    status = 1
    try:
        (stdin, _), (_, stdout), (_, stderr) = pipes
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the host's channel and the port are not its own
        # fresh file objects: another thread of the agent may have held the old ones' locks
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        import runpy

        sys.argv = [path, *argv]
        runpy.run_path(path, run_name="__main__")
        status = 0
    except SystemExit as exc:  # as the interpreter would end: None 0, a message 1
        code = exc.code
        status = 0 if code is None else code & 0xFF if isinstance(code, int) else 1
        if not isinstance(code, int) and code is not None:
            print(code, file=sys.stderr)
    except KeyboardInterrupt:  # the interpreter dies of the SIGINT, as the host expects
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)
    except BaseException:  # noqa: BLE001 - the helper's failure, said on its stderr
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - nothing left to tell it to
                pass
        os._exit(status)


class Forked:
    """A spawned helper: a fork of the agent running the module, shaped like the
    subprocess.Popen it replaces (pid, stdin, stdout, stderr, wait, send_signal, kill)."""

    def __init__(self, module: str, argv: list) -> None:
        pipes = [os.pipe() for _ in range(3)]  # (read, write) for stdin, stdout, stderr
        with _import_lock:
            pid = os.fork()
        if pid == 0:
            try:
                _run_helper(os.path.join(HERE, module + ".py"), argv, pipes)
            finally:
                os._exit(1)  # whatever escaped, never back into the agent's own code
        self.pid = pid
        for fd in (pipes[0][0], pipes[1][1], pipes[2][1]):
            os.close(fd)
        self.stdin = os.fdopen(pipes[0][1], "w", buffering=1)
        self.stdout = os.fdopen(pipes[1][0], "r")
        self.stderr = os.fdopen(pipes[2][0], "r")
        self.returncode = None
        self._lock = _thread.allocate_lock()  # reaping and signalling: a reaped pid may be another's

    def wait(self) -> int:
        """Its status as Popen gives it: the exit code, or -N when signal N killed it."""
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)  # ended, still a zombie to signal
        with self._lock:
            if self.returncode is None:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with self._lock:
            if self.returncode is None:  # alive or a zombie: still this helper's pid
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(_signal.SIGKILL)


def spawn(req: dict) -> None:
    rid = req["id"]
    proc = Forked(req["module"], req.get("argv", []))
    with _children_lock:
        _children[rid] = proc
    send({"id": rid, "started": proc.pid})
    err, stderr_read = [], _thread.allocate_lock()
    stderr_read.acquire()  # released once its stderr is read to the end

    def read_stderr() -> None:
        try:
            err.append(proc.stderr.read())
        finally:
            stderr_read.release()

    _thread.start_new_thread(read_stderr, ())
    for line in proc.stdout:
        line = line.rstrip("\n")
        try:
            event = jsonlite.loads(line)
        except ValueError:
            event = {"text": line}
        send({"id": rid, "event": event})
    status = proc.wait()
    stderr_read.acquire(timeout=5)
    with _children_lock:
        _children.pop(rid, None)
    # a helper killed by signal N exits like a shell reports it: 128+N
    send({"id": rid, "exit": 128 - status if status < 0 else status, "stderr": "".join(err)[-STDERR_TAIL:]})


def to_child(req: dict) -> None:
    with _children_lock:
        proc = _children.get(req["to"])
    if proc is None:
        send({"id": req["id"], "error": f"no running helper {req['to']}", "status": -1})
        return
    try:
        if req["op"] == "send":
            proc.stdin.write(jsonlite.dumps(req.get("line", {})) + "\n")
            proc.stdin.flush()
        else:
            proc.send_signal(req.get("signal", _signal.SIGTERM))
        send({"id": req["id"], "result": True})
    except OSError as exc:  # it exited meanwhile
        send({"id": req["id"], "error": str(exc), "status": -1})


HANDLERS = {"call": call, "spawn": spawn, "send": to_child, "kill": to_child}


def _import_later() -> None:
    """The late stdlib modules, and every helper module: a command's function-level import
    (probe's `import vfio`) is then a lookup, never an import in progress (its module lock
    held by this thread) while a spawn forks, which would leave that lock held in the child."""
    helpers = sorted(name[:-3] for name in os.listdir(HERE) if name.endswith(".py") and name != "agent.py")
    for name in (*LATER, *helpers):
        try:
            common.late_import(name)
        except Exception as exc:  # noqa: BLE001 - a helper that cannot import says so when called
            print(f"agent: importing {name}: {exc}", file=sys.stderr)


def serve(requests, served) -> None:
    """The requests, each handed to a worker, until the host closes its end; then `served`
    is released."""
    try:
        workers = Workers()
        for line in requests:
            if not line.strip():
                continue
            try:
                req = jsonlite.loads(line)
                handler = HANDLERS[req["op"]]
            except (ValueError, KeyError) as exc:
                send({"id": None, "error": f"bad request {line.strip()[:200]!r}: {exc}", "status": -1})
                continue
            workers.submit(handler, req)
    finally:
        served.release()


def main() -> None:
    global _proto
    # Started from a shell's background job (init's, or the host's when `make test` runs as
    # one), SIGINT and SIGQUIT arrive ignored, and an ignored disposition survives exec: a
    # handler of our own does not, so every helper starts with the defaults (as under sshd)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.signal(_signal.SIGQUIT, _signal.SIG_DFL)
    # the protocol moves to private descriptors (os.dup's are not inherited): a program an
    # in-process command runs reads /dev/null, not the host's requests, and what it or the
    # command prints goes to stderr, not into the answers
    _proto = os.fdopen(os.dup(1), "w")
    requests = os.fdopen(os.dup(0), "r")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    sys.path.insert(0, HERE)
    send({"agent": "ready", "pid": os.getpid(), "python": sys.version.split()[0]})
    # on the guest's clock, beside the listener's own lines in its log (a boot's timeline)
    print(f"agent: ready ({time.clock_gettime(time.CLOCK_BOOTTIME):.2f} s)", file=sys.stderr, flush=True)
    # the requests on a thread of their own: this one imports LATER while they are served
    served = _thread.allocate_lock()
    served.acquire()
    _thread.start_new_thread(serve, (requests, served))
    try:
        if not served.acquire(timeout=LATER_S):
            _import_later()
            served.acquire()
    except KeyboardInterrupt:  # the agent dies of the SIGINT, as the host expects
        _end()
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)
    _end()
    os._exit(0)


def _end() -> None:
    """Before the agent's end: its helpers killed, its answers flushed. It ends with os._exit,
    without the interpreter's finalization, which would wait for every thread threading counts
    as a non-daemon one: a worker that imported threading first is one (see LATER)."""
    with _children_lock:
        for proc in _children.values():
            proc.kill()
    for stream in (_proto, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the host's end is gone, or the stream closed
            pass


if __name__ == "__main__":
    main()
