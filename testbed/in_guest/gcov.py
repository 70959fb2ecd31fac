"""Kernel coverage counters (CONFIG_GCOV_KERNEL), taken and zeroed in one call.

    gcov.py snapshot    {"ok", "present", "files": {path: base64 gcda}}: every .gcda under
                        /sys/kernel/debug/gcov (paths below it: the kernel's build directory
                        and then the file's), then every counter zeroed; "present" is false
                        on a kernel without gcov (no files, nothing reset)
    gcov.py reset       {"ok", "present"}

The host reads the counters of what happened since the last snapshot (a test, or a boot),
so zeroing is part of the same call: nothing runs in between but this agent.
"""

import base64
import os
import sys

import jsonlite
from common import emit, error_of, write

GCOV = "/sys/kernel/debug/gcov"


def _reset() -> None:
    write(os.path.join(GCOV, "reset"), "1")


def _gcda_files():
    for directory, _dirs, files in os.walk(GCOV):
        for name in files:
            if name.endswith(".gcda"):
                path = os.path.join(directory, name)
                yield os.path.relpath(path, GCOV), path


def snapshot(args: dict) -> dict:
    if not os.path.isdir(GCOV):
        return {"ok": True, "present": False, "files": {}}
    files = {}
    for rel, path in _gcda_files():
        with open(path, "rb") as f:
            files[rel] = base64.b64encode(f.read()).decode()
    _reset()
    return {"ok": True, "present": True, "files": files}


def reset(args: dict) -> dict:
    present = os.path.isdir(GCOV)
    if present:
        _reset()
    return {"ok": True, "present": present}


# an OSError is a result, {"ok": false, "errno": ...}, as this module's CLI prints it
OSERROR_IS_RESULT = True
COMMANDS = {"snapshot": snapshot, "reset": reset}

if __name__ == "__main__":
    try:
        emit(COMMANDS[sys.argv[1]](jsonlite.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
    except OSError as exc:
        emit(error_of(exc))
