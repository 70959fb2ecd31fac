"""Running VMs announce themselves in runtime_dir()/vms/NAME.json for `testbed ssh NAME`."""

from __future__ import annotations

import json
import os
import re
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


def running() -> list[VmRecord]:
    """Live VMs, oldest first; entries whose QEMU is gone (a crashed parent) are removed."""
    records = []
    for path in sorted(registry_dir().glob("*.json")):
        try:
            record = VmRecord.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid_alive(record.pid):
            records.append(record)
        else:
            path.unlink(missing_ok=True)
    return sorted(records, key=lambda r: r.started)


def unique_name(base: str) -> str:
    """`base`, or `base-2`, `base-3`... if a live VM already has that name."""
    taken = {r.name for r in running()}
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


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
