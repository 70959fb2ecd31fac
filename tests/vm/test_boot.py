"""The booted guest shows the topology of the YAML: every device at its BDF, p2pmem published."""

from __future__ import annotations

import json
import re
import time

import pytest

from testbed.errors import GuestError
from testbed.guestvm import lspci
from testbed.guestvm.guest import LISTENER, LISTENER_CHECK_S, LISTENER_LOG, LISTENER_PS
from testbed.guestvm.p2p import NVME_TOPOLOGIES
from testbed.topology.layout import NodeKind
from testbed.topology.needs import ANY, CMB_NVME


@pytest.mark.topology("two-switch", matrix=(*NVME_TOPOLOGIES, "vfio-dmabuf"), needs=ANY)
def test_guest_sees_the_modeled_tree(vm):
    seen = {d["bdf"]: d for d in vm.agent("pci", "devices")}
    for p in vm.layout.in_order():
        if not p.plugged:
            assert p.bdf not in seen or seen[p.bdf]["id"] != p.device_id, f"{p.id} present before it was plugged"
            continue
        assert p.bdf in seen, f"{p.id} ({p.device_id}) missing at {p.bdf}; guest has {sorted(seen)}"
        assert seen[p.bdf]["id"] == p.device_id, f"{p.id} at {p.bdf}"
        if p.kind is NodeKind.ENDPOINT and p.device_id == "1b36:0010":
            assert seen[p.bdf]["driver"] == "nvme", f"{p.id}: NVMe not bound to the nvme driver"


@pytest.mark.topology("two-switch", matrix=NVME_TOPOLOGIES, needs=CMB_NVME)
def test_cmb_is_published_as_p2pmem(vm):
    seen = {d["bdf"]: d for d in vm.agent("pci", "devices")}
    for ep in vm.topology.endpoints:
        if ep.kind.value != "nvme" or not ep.plugged:
            continue
        p2pmem = seen[vm.bdf(ep.id)].get("p2pmem")
        if ep.cmb:
            assert p2pmem is not None, f"{ep.id}: CMB of {ep.cmb >> 20} MiB not published as p2pmem"
            assert p2pmem["published"] and p2pmem["size"] == ep.cmb
            assert 0 < p2pmem["available"] <= ep.cmb
        else:
            assert p2pmem is None, f"{ep.id} has no CMB but shows p2pmem"


@pytest.mark.topology("two-switch", needs=ANY)
def test_lspci_tree_shows_the_topology(vm):
    """`lspci -tv` draws every bridge with the bus range the model predicts, and the NVMe."""
    out = vm.run("lspci -tv", check=True).stdout
    for p in vm.layout.in_order():
        if p.is_bridge:
            span = (
                f"[{p.secondary:02x}]" if p.secondary == p.subordinate else f"[{p.secondary:02x}-{p.subordinate:02x}]"
            )
            assert span in out, f"{p.id}: no bridge to buses {span} in lspci -tv:\n{out}"
    nvme = sum(1 for ep in vm.topology.endpoints if ep.kind.value == "nvme" and ep.plugged)
    assert out.count("NVM Express Controller") == nvme, out


@pytest.mark.topology("two-switch", "acs", "two-switch-iommu", matrix=(*NVME_TOPOLOGIES, "vfio-dmabuf"), needs=ANY)
def test_fingerprint_agrees_with_lspci(vm):
    """The fingerprint every result points at says what `lspci -vvv` says in the same guest:
    each BDF's IDs, BARs, IOMMU group, ACS capability and control bits, and bound driver."""
    assert vm.fingerprint is not None, "no fingerprint was taken after boot"
    pci = json.loads(vm.fingerprint.path.read_text())["guest"]["pci"]
    text = vm.run("lspci -D -vvv -nn", check=True).stdout
    seen = lspci.parse(text)
    assert any(d.acs for d in seen.values()) or not any(rp.acs for rp in vm.topology.root_ports), "no ACS in lspci"
    assert lspci.differences(pci, seen) == []


@pytest.mark.topology("two-switch", needs=ANY)
def test_the_agent_runs_in_the_interpreter_init_started(vm):
    """Boot speed rests on this: the agent is a forked child of the listener testbed-init
    started (PID 1 its parent), not a python3 the harness started over SSH after the login."""
    procs = [line.split(None, 2) for line in vm.run("ps -eo pid=,ppid=,args=", check=True).stdout.splitlines()]
    listener = [p for p in procs if LISTENER in p[2] and p[1] == "1"]
    assert len(listener) == 1, f"one listener, child of init, expected:\n{procs}"
    sessions = [p for p in procs if LISTENER in p[2] and p[1] == listener[0][0]]
    assert sessions, f"no agent session forked by the listener:\n{procs}"
    assert not [p for p in procs if "python3" in p[2] and " -c " in p[2]], "an agent started by exec is running"
    assert vm.agent("kmsg", "cursor")["next"] > 0
    # the listener's module comes as bytecode the image build compiled (a boot does not compile it)
    cached = vm.run("ls /usr/local/lib/testbed/__pycache__", check=True).stdout.split()
    assert any(name.startswith("agent_listen.cpython-") and name.endswith(".pyc") for name in cached), cached


MOUNTED = "/run/testbed-init.mounted"  # guest-images/rootfs/usr/local/lib/testbed/agent_listen.py


@pytest.mark.topology("two-switch", needs=ANY)
def test_an_agent_session_waits_for_init_mounts(fresh_vm):
    """The listener starts before init mounts /etc/fstab and a session can come at once: one
    that wrote the helpers under /run before its tmpfs was mounted lost them under it (a CI run
    did). A session waits for init's word that the filesystems are mounted."""
    vm = fresh_vm
    vm.close_agent()
    # init's word taken back, and given again 3 s on (longer than the install needs to begin)
    vm.run(f"rm {MOUNTED} && {{ (sleep 3; : > {MOUNTED}) > /dev/null 2>&1 < /dev/null & }}", check=True)
    started = time.monotonic()
    vm.install_agent()
    assert time.monotonic() - started >= 1.0  # the SSH command did not wait for the marker
    assert vm.agent("kmsg", "cursor")["next"] > 0
    said = vm.run(f"cat {LISTENER_LOG}", check=True).stdout
    waited = re.findall(r"the session waited ([0-9.]+) s for init's mounts", said)
    assert waited and float(waited[-1]) >= 0.5, said


@pytest.mark.topology("two-switch", needs=ANY)
def test_an_agent_session_that_dies_is_reported_at_once(fresh_vm):
    """A session that fails before the agent answers leaves its listener running and, on the
    port, the host's socket connected: its last word on the connection says why, so the
    install fails at once with the guest's traceback, not after the boot deadline; the next
    install works."""
    vm = fresh_vm
    vm.close_agent()
    vm.run("rm -rf /run/testbed/agent && touch /run/testbed/agent", check=True)  # no helpers' dir
    started = time.monotonic()
    with pytest.raises(GuestError, match=r"(?s)did not start: its session failed in the guest.*NotADirectoryError"):
        vm.install_agent()
    took = time.monotonic() - started
    assert took < LISTENER_CHECK_S + 10 < vm.machine.timeouts.boot_to_ssh, took
    vm.run("rm /run/testbed/agent", check=True)
    vm.install_agent()
    assert vm.agent("kmsg", "cursor")["next"] > 0


@pytest.mark.topology("two-switch", needs=ANY)
def test_a_dead_agent_listener_is_reported_with_its_log(fresh_vm):
    """The agent installed again gets a session of its own. With the listener gone (its
    running session lives on), installing fails after one check, not the command deadline,
    with the listener's log (which says it had been listening: no 5 s wait for a start)."""
    vm = fresh_vm
    vm.close_agent()
    vm.install_agent()
    assert vm.agent("kmsg", "cursor")["next"] > 0
    listener = vm.run(LISTENER_PS, check=True).stdout.split()
    assert len(listener) == 1, f"one listener expected: {listener}"
    vm.run(f"kill {listener[0]}", check=True)
    assert vm.agent("kmsg", "cursor")["next"] > 0  # the session outlives its listener
    started = time.monotonic()
    with pytest.raises(GuestError, match=r"(?s)does not answer.*listening on 127\.0\.0\.1:5171.*NOT RUNNING"):
        vm.install_agent()
    took = time.monotonic() - started
    assert took < LISTENER_CHECK_S + 10 < vm.machine.timeouts.guest_command, took
