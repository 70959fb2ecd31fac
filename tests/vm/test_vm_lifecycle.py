"""Real QEMU processes (paused at -S, no guest code): process group, QMP, events, teardown,
PDEATHSIG, the port-0 SSH forward readback, and the accelerator probe."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from testbed.errors import GuestError
from testbed.render.runtime import Runtime
from testbed.timeouts import Timeouts
from testbed.vm import accel
from testbed.vm.machine import Machine
from testbed.vm.process import pid_alive, wait_gone
from testbed.vm.qmp import QMPCommandError, RunState

REPO = Path(__file__).resolve().parents[2]


def bare_argv(qemu: str, rt: Runtime) -> list[str]:
    """The infrastructure part of a real launch, without a kernel or disks."""
    return [
        qemu,
        "-M",
        "q35",
        "-accel",
        "tcg",
        "-m",
        "64",
        "-S",
        "-display",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-serial",
        f"file:{rt.console_log}",
        "-qmp",
        f"unix:{rt.qmp_socket},server=on,wait=off",
        "-netdev",
        "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
        "-device",
        "virtio-net-pci,netdev=net0",
    ]


@pytest.fixture
def env(tmp_path, monkeypatch, require_qemu):
    # short socket paths (107-byte limit) and a private registry
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    rt = Runtime(
        accel="tcg",
        kernel=tmp_path / "none",
        disk=tmp_path / "none",
        qmp_socket=tmp_path / "q.sock",
        console_log=tmp_path / "run" / "console.log",
        backing_dir=tmp_path / "backing",
        paused=True,
    )
    return require_qemu, rt


def make(env, name="t", timeouts: Timeouts | None = None) -> Machine:
    qemu, rt = env
    return Machine(bare_argv(qemu, rt), rt, Path("/nonexistent-key"), timeouts or Timeouts.for_accel("tcg"), name)


def test_own_process_group_qmp_and_clean_quit(env):
    with make(env) as vm:
        pid = vm.process.pid
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid
        assert os.getpgid(pid) != os.getpgid(0)
        assert vm.qmp.run_state() is RunState.PRELAUNCH
        assert "q35" in vm.qmp.hmp("info qtree") or "pcie.0" in vm.qmp.hmp("info qtree")
    assert vm.stop_report.stage == "quit" and vm.stop_report.returncode == 0
    assert not pid_alive(pid)
    assert not vm.runtime.qmp_socket.exists()
    assert vm.shutdown() is vm.stop_report  # idempotent


def test_port_zero_forward_is_read_back_and_listening(env):
    import socket

    with make(env) as vm:
        assert 1024 <= vm.ssh_port <= 65535
        with socket.create_connection(("127.0.0.1", vm.ssh_port), timeout=5):
            pass  # slirp accepts on the host side even before the guest runs


def test_parallel_vms_get_distinct_ports(env, tmp_path):
    qemu, rt = env
    rt2 = Runtime(
        **{**rt.__dict__, "qmp_socket": tmp_path / "q2.sock", "console_log": tmp_path / "run2" / "console.log"}
    )
    with make(env, "a") as a, make((qemu, rt2), "b") as b:
        assert a.ssh_port != b.ssh_port


def test_events_recorded_and_waited(env):
    with make(env) as vm:
        vm.qmp.command("cont")
        vm.qmp.command("stop")
        stop = vm.qmp.wait_event("STOP", timeout=10)
        assert stop["event"] == "STOP"
        resume = vm.qmp.wait_event("RESUME", timeout=10)  # arrived before we asked
        assert resume["event"] == "RESUME"
        with pytest.raises(GuestError):
            vm.qmp.wait_event("STOP", timeout=0.5)  # already consumed
        log = vm.events_log
    lines = log.read_text().splitlines()
    assert any('"RESUME"' in line for line in lines) and any('"STOP"' in line for line in lines)
    assert any('"SHUTDOWN"' in line for line in lines)  # recorded up to the end


def test_a_refused_command_keeps_qemus_error_class(env):
    with make(env) as vm:
        with pytest.raises(QMPCommandError) as err:
            vm.qmp.command("device_del", {"id": "no-such-device"})
        assert err.value.command == "device_del" and err.value.arguments == {"id": "no-such-device"}
        assert err.value.error_class == "DeviceNotFound", err.value
        # a device property called "timeout" is an argument like any other, not the call's timeout
        with pytest.raises(QMPCommandError) as err:
            vm.qmp.command("device_add", {"driver": "no-such-driver", "id": "x", "timeout": "1"})
        assert err.value.arguments["timeout"] == "1"


def test_registry_entry_lives_with_the_vm(env):
    from testbed.vm import registry

    with make(env, "reg") as vm:
        (record,) = registry.running()
        assert (record.name, record.pid, record.ssh_port) == ("reg", vm.process.pid, vm.ssh_port)
        assert registry.find(None).name == "reg"
    assert registry.running() == []


def test_staged_teardown_escalates_when_quit_is_ignored(env):
    vm = make(env)
    with vm:
        pid = vm.process.pid
        vm.qmp.close()  # no monitor: the quit stage is skipped, SIGTERM does it
    assert vm.stop_report.stage == "sigterm"
    assert not pid_alive(pid)


def test_sigkill_stage_for_a_stopped_qemu(env):
    # the stages, not their deadlines, are what is looked at: SIGTERM's 5 s would be waited out
    vm = make(env, timeouts=dataclasses.replace(Timeouts.for_accel("tcg"), terminate=0.5))
    with vm:
        pid = vm.process.pid
        vm.qmp.close()
        os.kill(pid, signal.SIGSTOP)  # ignores quit and TERM (pending), KILL still works
    assert vm.stop_report.stage == "sigkill"
    assert not pid_alive(pid)


def test_exception_inside_with_tears_down(env):
    with pytest.raises(RuntimeError):
        with make(env) as vm:
            pid = vm.process.pid
            raise RuntimeError("boom")
    assert not pid_alive(pid)


def test_bad_argv_reports_qemu_output(env):
    from testbed.errors import InfraError

    qemu, rt = env
    vm = Machine([qemu, "-no-such-option"], rt, Path("/x"), Timeouts.for_accel("tcg"), "bad")
    with pytest.raises(InfraError, match="no-such-option"):
        with vm:
            pass


def test_pdeathsig_takes_qemu_down_with_a_killed_parent(env, tmp_path):
    qemu, rt = env
    pidfile = tmp_path / "qemu.pid"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from testbed.vm.process import QemuProcess
        p = QemuProcess([{qemu!r}, "-M", "q35", "-S", "-display", "none", "-nodefaults"],
                        Path({str(tmp_path / "qemu.log")!r}))
        p.start()
        Path({str(pidfile)!r}).write_text(str(p.pid))
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "parent never started QEMU"
            assert parent.poll() is None, "parent died early"
            time.sleep(0.05)
        qemu_pid = int(pidfile.read_text())
        assert pid_alive(qemu_pid)
        parent.kill()  # SIGKILL: no finally, no atexit, no context manager runs
        parent.wait(10)
        assert wait_gone(qemu_pid, 5.0), f"QEMU {qemu_pid} outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait(10)


def test_probe_firmware_runs_under_tcg(require_qemu):
    result = accel.run_probe("tcg", qemu=require_qemu, timeout=20)
    assert result.ok, result.detail
    assert result.status == accel.EXPECTED_STATUS
    assert result.stages == "RPLM"


def test_auto_ends_on_a_working_accelerator(require_qemu):
    decision = accel.resolve_accel("auto", qemu=require_qemu)
    assert decision.accel in ("kvm", "tcg") and decision.reason
    if decision.accel == "kvm":
        assert accel.run_probe("kvm", qemu=require_qemu).ok
