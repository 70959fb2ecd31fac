"""Hot-unplug of P2P providers and clients: mappings die cleanly, nothing is used after free.

Every test runs on a VM of its own (the device tree changes) and asserts: DEVICE_DELETED
within its deadline, the function gone from the guest, no splat in the test's console
window (checked by the harness), and data written before the unplug intact on the host.
`two-switch` unplugs through native pciehp: device_del presses the attention button, and the
guest powers the slot off once pciehp has taken the press (the DISABLE_SLOT request pciehp's 5 s
timer would make; test_unplug_idle_provider waits for the timer itself). `root-ports` unplugs
through ACPI.
"""

from __future__ import annotations

import pytest

from testbed.guestvm import start_background
from testbed.guestvm.p2p import REFUSED_TEXT, fresh_seed, host_file_bytes, transfer
from testbed.in_guest.pattern import pattern
from testbed.topology.model import EndpointKind, HotplugMode
from testbed.topology.needs import (
    HOT_ADD_CMB,
    HOTPLUG_CMB,
    HOTPLUG_CMB_AND_SURVIVOR,
    REPLUG_PROVIDER,
    UNPLUG_DURING_IO,
    WHOLE_SWITCH,
)
from testbed.topology.oracle import verdict
from testbed.topology.outcome import Outcome, expected_outcome
from testbed.vm import hotplug

pytestmark = pytest.mark.hotunplug
KiB, MiB = 1 << 10, 1 << 20
SIGBUS = 7
KMEMLEAK = "/sys/kernel/debug/kmemleak"


def _unplug(vm, device: str, button_timer: bool = False) -> hotplug.UnplugResult:
    result = vm.unplug(device, button_timer=button_timer)
    if vm.topology.hotplug is HotplugMode.NATIVE:
        if button_timer:
            assert not result.how, result
        else:  # the guest confirmed the press, unless (a starved agent) pciehp's timer came first
            assert result.how in (hotplug.CONFIRMED, hotplug.BY_TIMER), result
        if not result.confirmed:
            assert result.seconds >= hotplug.PCIEHP_BUTTON_WAIT_S, f"pciehp powered the slot off early: {result}"
    return result


def _plug(vm, device: str) -> float:
    return vm.plug(device)


class Written:
    """Data put on a namespace before an unplug, checked in the host file afterwards."""

    def __init__(self, vm, endpoint: str, offset: int, size: int = 64 * KiB, via_p2p_from: str | None = None):
        self.vm, self.endpoint, self.offset, self.size = vm, endpoint, offset, size
        if via_p2p_from:
            t = transfer(vm, via_p2p_from, endpoint, "from_p2pmem", size=size, offset=offset)
            assert t.outcome is Outcome.TRANSFERRED, t.describe()
            self.seed = t.seed
        else:
            self.seed = fresh_seed()
            r = vm.agent(
                "p2pmem", "ramwrite", {"client": vm.bdf(endpoint), "size": size, "offset": offset, "seed": self.seed}
            )
            assert r["ok"], r

    def intact(self) -> bool:
        return host_file_bytes(self.vm, self.endpoint, self.offset, self.size) == pattern(self.seed, self.size)


def _still_usable(vm, endpoint: str) -> None:
    """Plain (non-P2P) I/O to a surviving NVMe still works and reaches the host file."""
    assert Written(vm, endpoint, offset=20 * MiB).intact()


def _p2p_peer(vm, provider: str) -> str:
    """A block device the provider can really do P2P with here (itself if nothing else). Only
    NVMe and virtio-blk clients take O_DIRECT I/O: an edu or ivshmem the oracle lets map the CMB
    is no client for this (on p2pdma-thru-iommu the edu was taken, a false red)."""
    blocks = {EndpointKind.NVME, EndpointKind.VIRTIO_BLK}
    for v in vm.verdicts():
        client_is_block = vm.topology.endpoint(v.client).kind in blocks
        if (
            v.provider == provider
            and v.client != provider
            and client_is_block
            and (expected_outcome(vm.topology, v) is Outcome.TRANSFERRED)
        ):
            return v.client
    return provider


@pytest.mark.topology("two-switch", "root-ports", needs=HOTPLUG_CMB_AND_SURVIVOR)
def test_unplug_idle_provider(fresh_vm, roles):
    """The whole attention-button road on a pciehp slot: pciehp's own 5 s timer powers it off."""
    vm, provider = fresh_vm, roles.provider
    own = Written(vm, provider, offset=1 * MiB)
    p2p = Written(vm, _p2p_peer(vm, provider), offset=2 * MiB, via_p2p_from=provider)
    _unplug(vm, provider, button_timer=True)
    assert own.intact() and p2p.intact(), "data written before the unplug changed on the host"
    _still_usable(vm, roles.survivor)


@pytest.mark.topology("two-switch", needs=HOTPLUG_CMB_AND_SURVIVOR)
def test_unplug_provider_while_mapped_gives_sigbus(fresh_vm, roles):
    """A process holds a p2pmem mmap across the unplug: its next access gets SIGBUS."""
    vm = fresh_vm
    holder = start_background(
        vm, "hold", "p2pmem", "hold", {"provider": vm.bdf(roles.provider), "size": 1 * MiB, "seed": fresh_seed()}
    )
    holder.wait_started("mapped")
    written = Written(vm, roles.survivor, offset=3 * MiB)
    _unplug(vm, roles.provider)
    holder.signal()
    status = holder.wait_exit()
    assert status == 128 + SIGBUS, f"holder exited {status}, expected death by SIGBUS: {holder.lines()}"
    assert written.intact()
    _still_usable(vm, roles.survivor)


@pytest.mark.topology("two-switch", needs=UNPLUG_DURING_IO)
@pytest.mark.parametrize("victim", ["provider", "client"])
def test_unplug_during_p2p_io(fresh_vm, roles, victim):
    """Back-to-back P2P writes from the provider's CMB to the client while one of them is unplugged."""
    vm = fresh_vm
    survivor = roles.survivor
    before = Written(vm, survivor, offset=4 * MiB)
    seed = fresh_seed()
    io = start_background(
        vm,
        "stream",
        "p2pmem",
        "stream",
        {
            "provider": vm.bdf(roles.provider),
            "client": vm.bdf(roles.client),
            "size": 256 * KiB,
            "seed": seed,
            "depth": 4,
        },
    )
    io.wait_started("streaming")  # a first round completed in the guest ...
    # ... and landed: every round writes the same bytes, so the host may read while it streams
    landed = host_file_bytes(vm, roles.client, 0, 256 * KiB) == pattern(seed, 256 * KiB)
    assert landed, "the stream's P2P writes did not land"
    _unplug(vm, roles[victim])
    io.signal()
    status = io.wait_exit()
    lines = io.lines()
    # the stream either saw its I/O fail or died touching the vanished BAR; both are clean ends
    assert status in (0, 128 + SIGBUS), f"stream exited {status}: {lines}"
    if status == 0:
        summary = lines[-1]
        assert summary.get("transfers", 0) > 0, lines
    assert before.intact()
    _still_usable(vm, survivor)


@pytest.mark.topology("two-switch", needs=REPLUG_PROVIDER)
def test_unplug_and_replug_provider(fresh_vm, roles):
    """After a replug the CMB is published again and every verdict is computed afresh."""
    vm, provider = fresh_vm, roles.provider
    first = transfer(vm, provider, roles.refused, "from_p2pmem", size=64 * KiB)
    assert first.outcome is Outcome.EINVAL, first.describe()
    own = Written(vm, provider, offset=7 * MiB)  # the provider's namespace outlives the replug
    peer = Written(vm, roles.peer, offset=7 * MiB, via_p2p_from=provider)
    _unplug(vm, provider)
    _plug(vm, provider)
    assert own.intact() and peer.intact(), "data written before the unplug changed on the host"
    state = vm.agent("p2pmem", "state", {"bdf": vm.bdf(provider)})
    cmb = vm.topology.endpoint(provider).cmb
    assert state["published"] and state["size"] == cmb, state
    allowed = transfer(vm, provider, roles.peer, "from_p2pmem", size=64 * KiB, offset=5 * MiB)
    assert allowed.outcome is Outcome.TRANSFERRED and allowed.host_bytes_ok, allowed.describe()
    again = transfer(vm, provider, roles.refused, "from_p2pmem", size=64 * KiB)
    assert again.outcome is Outcome.EINVAL, again.describe()
    assert again.refused_lines, f"a fresh provider must warn '{REFUSED_TEXT}' again"


@pytest.mark.topology("two-switch", needs=WHOLE_SWITCH)
def test_unplug_whole_switch(fresh_vm, roles):
    """device_del of a switch's upstream port takes the switch, its ports and the NVMe below."""
    vm = fresh_vm
    written = Written(vm, roles.inside, offset=6 * MiB)
    _unplug(vm, roles.switch)
    (switch,) = [sw for sw in vm.topology.switches if sw.id == roles.switch]
    for gone in (*switch.downstream, roles.inside):
        assert not vm.lists(vm.bdf(gone)), f"{gone} still in the guest"
    assert written.intact()
    _still_usable(vm, roles.survivor)


@pytest.mark.topology("root-ports", needs=HOT_ADD_CMB)
def test_hot_add_declared_device(fresh_vm, roles):
    """A device declared `plugged: false` (root-ports: nvme3 into the reserved root port) is
    added, publishes its CMB, and P2P with a plugged NVMe ends as the oracle says."""
    vm, added = fresh_vm, roles.added
    vm.dirty = True
    _plug(vm, added)
    state = vm.agent("p2pmem", "state", {"bdf": vm.bdf(added)})
    assert state["published"] and state["size"] == vm.topology.endpoint(added).cmb, state
    expected = expected_outcome(vm.topology, verdict(vm.topology, vm.layout, added, roles.client))
    t = transfer(vm, added, roles.client, "from_p2pmem", size=64 * KiB, expect_fault=expected is Outcome.DMA_FAULT)
    assert t.outcome is expected, t.describe()


@pytest.mark.slow
@pytest.mark.topology("root-ports", matrix=("two-switch",), needs=HOTPLUG_CMB)
def test_unplug_replug_cycles(fresh_vm, roles):
    """20 unplug/replug cycles of the provider: no splat, p2pmem whole, no new leaks."""
    vm = fresh_vm
    # kmemleak is built into the debug kernels; the debug profile boots it switched off
    kmemleak = vm.run(f"test -w {KMEMLEAK} && ! grep -qw kmemleak=off /proc/cmdline").status == 0
    if kmemleak:
        # what boot left unreferenced is not the cycles' doing: scan, then mark it reported.
        # check=True: a kmemleak that disabled itself refuses the write instead of passing blind
        vm.run(f"echo scan > {KMEMLEAK} && echo clear > {KMEMLEAK}", timeout=600, check=True)
    provider = roles.provider
    bdf = vm.bdf(provider)
    vm.wait_ready(provider)  # its I/O queues take p2pmem from the CMB
    baseline = vm.agent("p2pmem", "state", {"bdf": bdf})["available"]
    landed = []
    for cycle in range(20):
        t = transfer(vm, provider, provider, "from_p2pmem", size=64 * KiB, offset=cycle * MiB)
        assert t.outcome is Outcome.TRANSFERRED, f"cycle {cycle}: {t.describe()}"
        landed.append((cycle * MiB, t.seed))
        _unplug(vm, provider)
        _plug(vm, provider)
        assert vm.agent("p2pmem", "state", {"bdf": bdf})["available"] == baseline, f"cycle {cycle}: p2pmem not whole"
    changed = [
        offset for offset, seed in landed if host_file_bytes(vm, provider, offset, 64 * KiB) != pattern(seed, 64 * KiB)
    ]
    assert not changed, f"data written before an unplug changed on the host at offsets {changed}"
    if kmemleak:
        # an object must stay unreferenced across two scans (and 5 s old) to be reported
        vm.run(f"echo scan > {KMEMLEAK} && sleep 5 && echo scan > {KMEMLEAK}", timeout=600, check=True)
        # grep -c prints 0 when nothing matched, nothing at all when it could not read the file
        leaks = vm.run(f"grep -c '^unreferenced object' {KMEMLEAK}").stdout.strip()
        assert leaks == "0", f"kmemleak: {leaks or 'unreadable'}\n" + vm.run(f"head -60 {KMEMLEAK}").stdout
