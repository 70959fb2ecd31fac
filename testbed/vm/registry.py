"""Running VMs announce themselves in runtime_dir()/vms/NAME.json for `testbed ssh NAME`.

A name is reserved before its VM starts (the file created exclusively, owned by the launching
process, ssh_port 0), so launches in the same second, in this process or others, never pick
the same name, run directory or QMP socket. Entries whose owner died are reaped.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from ..paths import runtime_dir
from .process import pid_alive

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class VmRecord:
    name: str
    pid: int  # QEMU's
    ssh_port: int
    ssh_key: str
    qmp_socket: str
    console_log: str
    started: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VmRecord:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def registry_dir() -> Path:
    path = runtime_dir() / "vms"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _path(name: str) -> Path:
    if not _NAME.match(name):
        raise ConfigError(f"VM name {name!r}: use letters, digits, '.', '_', '-' (max 64)")
    return registry_dir() / f"{name}.json"


def register(record: VmRecord) -> Path:
    path = _path(record.name)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(record.to_json())
    tmp.replace(path)  # readers never see half a file
    return path


def unregister(name: str, pid: int | None = None) -> None:
    """Remove NAME's entry (only if it is still ours when `pid` is given)."""
    path = _path(name)
    if pid is not None:
        try:
            if VmRecord.from_json(path.read_text()).pid != pid:
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
    path.unlink(missing_ok=True)


def _live_entries() -> list[VmRecord]:
    """Every entry whose owner lives (VMs and reservations); the others are removed."""
    records = []
    for path in sorted(registry_dir().glob("*.json")):
        try:
            record = VmRecord.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written: its writer replaces it atomically
        if pid_alive(record.pid):
            records.append(record)
        else:
            path.unlink(missing_ok=True)
    return records


def running() -> list[VmRecord]:
    """Live VMs, oldest first; entries whose QEMU (or launcher) is gone are removed."""
    return sorted((r for r in _live_entries() if r.ssh_port), key=lambda r: r.started)


def reserve(base: str) -> str:
    """`base`, or `base-2`, `base-3`...: the first name no live VM or launch holds, reserved
    for this process until its VM registers (or unreserve)."""
    _live_entries()  # reap the dead first, so their names come free
    n = 1
    while True:
        name = base if n == 1 else f"{base}-{n}"
        path = _path(name)
        placeholder = VmRecord(name, os.getpid(), 0, "", "", "", time.time())
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            n += 1
            continue
        with os.fdopen(fd, "w") as f:
            f.write(placeholder.to_json())
        return name


def unreserve(name: str) -> None:
    """Drop this process's reservation of `name` (a launch that never started its VM)."""
    unregister(name, os.getpid())


unique_name = reserve  # the name a launch gets is reserved for it


def find(name: str | None) -> VmRecord:
    vms = running()
    if name is None:
        if len(vms) == 1:
            return vms[0]
        if not vms:
            raise ConfigError("no running VM (start one with `testbed boot TOPO`)")
        raise ConfigError("several VMs run; name one: " + ", ".join(v.name for v in vms))
    for vm in vms:
        if vm.name == name:
            return vm
    listing = ", ".join(v.name for v in vms) or "none"
    raise ConfigError(f"no running VM named {name!r} (running: {listing})")
