"""In-guest side of the tree's selftests: prepare the guest, run one program, relay its output.

    kselftest.py prepare '{"bdfs": [...], "hugepages": 16}'   bind to vfio-pci, reserve 2 MiB pages
    kselftest.py run '{"argv": [...], "out": path, "timeout": s, "tag": "iommu/iommufd"}'

`run` copies every line the program prints into `out` (the raw KTAP, kept as an artifact), and
its case boundaries (the harness's "#  RUN" lines and the result lines) into /dev/kmsg as
"kselftest <tag>: <line>", so the console log shows which case was running when the kernel
printed something. The VM boots with printk.devkmsg=on, so the relay is not rate limited.
The program gets its own process group and is killed after `timeout` seconds.
Prints {"ok", "status", "timed_out", "seconds"}.
"""

import os
import re
import selectors
import signal
import subprocess
import sys
import time

import jsonlite
from common import bind_driver, emit, error_of, write

KMSG_MAX = 900  # /dev/kmsg refuses a record longer than ~1000 bytes
BOUNDARY = re.compile(r"^(#\s+RUN\s|(not )?ok \d+ |1\.\.\d+)")


def prepare(args: dict) -> dict:
    bound = [dict(bind_driver(bdf, "vfio-pci"), bdf=bdf) for bdf in args.get("bdfs", [])]
    pages = int(args.get("hugepages", 0))
    if pages:
        write("/proc/sys/vm/nr_hugepages", str(pages))
    with open("/proc/sys/vm/nr_hugepages") as f:
        reserved = int(f.read())
    return {"ok": all(b["ok"] for b in bound), "bound": bound, "hugepages": reserved}


class _Relay:
    """Lines into the kernel log (/dev/kmsg), tagged; a no-op where it cannot be opened."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        try:
            self.fd = os.open("/dev/kmsg", os.O_WRONLY)
        except OSError:
            self.fd = -1

    def __call__(self, line: str) -> None:
        if self.fd < 0:
            return
        text = f"kselftest {self.tag}: {line}"[:KMSG_MAX]
        try:
            os.write(self.fd, text.encode(errors="replace") + b"\n")
        except OSError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def run(args: dict) -> dict:
    relay = _Relay(args["tag"])
    start = time.monotonic()
    deadline = start + float(args["timeout"])
    timed_out = False
    relay(f"# testbed: exec {' '.join(args['argv'])}")
    with open(args["out"], "w") as out:
        proc = subprocess.Popen(
            args["argv"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=args.get("cwd") or None,
            start_new_session=True,
        )
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        pending = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                break
            if not sel.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                out.write(line + "\n")
                if BOUNDARY.match(line):
                    relay(line)
        if pending:
            out.write(pending.decode(errors="replace") + "\n")
        status = proc.wait()
    relay(f"# testbed: exit {status}{' (timed out)' if timed_out else ''}")
    relay.close()  # the agent lives on: no descriptor per run left open
    return {"ok": True, "status": status, "timed_out": timed_out, "seconds": round(time.monotonic() - start, 2)}


# an OSError is a result, {"ok": false, "errno": ...}, as this module's CLI prints it
OSERROR_IS_RESULT = True
COMMANDS = {"prepare": prepare, "run": run}

if __name__ == "__main__":
    try:
        emit(COMMANDS[sys.argv[1]](jsonlite.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
    except OSError as exc:
        emit(error_of(exc))
