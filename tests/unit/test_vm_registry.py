import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.vm import registry
from testbed.vm.registry import VmRecord


@pytest.fixture(autouse=True)
def private_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))


def rec(name, pid=None, started=1.0):
    return VmRecord(
        name=name,
        pid=pid or os.getpid(),
        ssh_port=2222,
        ssh_key="/k",
        qmp_socket="/q.sock",
        console_log="/c.log",
        started=started,
    )


def test_json_roundtrip():
    r = rec("two-switch")
    assert VmRecord.from_json(r.to_json()) == r


def test_register_find_unregister():
    registry.register(rec("a", started=2.0))
    registry.register(rec("b", started=1.0))
    assert [v.name for v in registry.running()] == ["b", "a"]
    assert registry.find("a").ssh_port == 2222
    with pytest.raises(ConfigError, match="several VMs"):
        registry.find(None)
    registry.unregister("b")
    assert registry.find(None).name == "a"
    registry.unregister("a", pid=os.getpid() + 1)  # not ours: kept
    assert registry.find(None).name == "a"


def test_dead_entries_are_pruned():
    registry.register(rec("dead", pid=2**22 + 12345))
    assert registry.running() == []
    assert not (registry.registry_dir() / "dead.json").exists()


def test_unique_name_and_validation():
    registry.register(rec("topo"))
    assert registry.unique_name("topo") == "topo-2"
    assert registry.unique_name("other") == "other"
    with pytest.raises(ConfigError):
        registry.register(rec("../escape"))
    with pytest.raises(ConfigError, match="no running VM"):
        registry.find("nope")


def test_reservation_holds_the_name_until_unreserved():
    assert registry.reserve("topo") == "topo"
    assert registry.reserve("topo") == "topo-2"  # reserved, not yet running: still taken
    assert registry.running() == []  # reservations are not VMs `testbed ssh` can reach
    registry.unreserve("topo")
    assert registry.reserve("topo") == "topo"


def test_a_dead_launchers_reservation_is_reaped():
    path = registry.registry_dir() / "topo.json"
    path.write_text(rec("topo", pid=2**22 + 12345).to_json())
    assert registry.reserve("topo") == "topo"


# Separate interpreters, not a fork()ed pool: under xdist the worker may hold VM threads (the
# QEMU launcher, agent readers), and a child forked from a threaded process can inherit a lock
# mid-use; such a pool once hung a whole `make test` in Pool.terminate(). Each launcher stays
# alive until all have reserved: a dead owner's reservations are reaped, by design.
RESERVE_MANY = (
    "import json, sys; from testbed.vm import registry; "
    "print(json.dumps([registry.reserve('topo') for _ in range(25)]), flush=True); sys.stdin.read()"
)


def test_concurrent_launchers_never_share_a_name(tmp_path):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    root = Path(registry.__file__).resolve().parents[2]
    launchers = [
        subprocess.Popen(
            [sys.executable, "-c", RESERVE_MANY],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    try:
        names = [json.loads(launcher.stdout.readline()) for launcher in launchers]  # type: ignore[union-attr]
    finally:
        for launcher in launchers:
            launcher.communicate(timeout=60)
    flat = [n for chunk in names for n in chunk]
    assert len(flat) == 100 and len(set(flat)) == 100
