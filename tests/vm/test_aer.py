"""AER: errors injected (QEMU's pcie_aer_inject_error) into the port above a dma-buf exporter.

QEMU's ivshmem and NVMe have no AER capability of their own; root and switch ports do. An
error a port reports is handled by the kernel's AER driver as that port's: pcie_do_recovery()
walks the devices below it. A fatal one (Malformed TLP, fatal by the default severity) freezes
their channel and resets the link below the port (a secondary bus reset: the device's BARs
are disabled and restored); a non-fatal one (Unsupported Request) resets nothing.
"""

from __future__ import annotations

import errno

import pytest

from testbed.guestvm import start_background
from testbed.guestvm.p2p import fresh_seed, host_file_bytes, transfer
from testbed.in_guest.pattern import pattern
from testbed.kernel.upstream_fixes import KernelBug
from testbed.topology.needs import UNPLUG_DURING_IO, vfio_pair
from testbed.topology.outcome import Outcome

from .test_p2pdma_api import DMA_OFFSET, PCI_COMMAND_MEMORY, Importer, MiB, assert_lands

pytestmark = [pytest.mark.aer]

# an exporter alone below its port: the reset the error brings takes nothing else (not the edu)
ALONE_PEERS = vfio_pair(bar_size=MiB, lands=True, alone=True)
TOPOLOGIES = dict(matrix=("p2pdma-thru-virtio-iommu",), needs=ALONE_PEERS)
RECOVERED = r"AER: device recovery (successful|failed)"
LINK_RESET = "link has been reset"
RECOVERY_S = 60

AER_RESET_KEEPS_IMPORT = KernelBug(
    "0002-vfio-pci-revoke-dma-bufs-for-an-AER-link-reset.patch",
    r"7\.2\.",
    "AER recovery resets the exporter's link while an importer still maps its dma-buf "
    "(vfio_pci_core_aer_err_detected() does not revoke)",
)


def inject(vm, device: str, error: str) -> list[str]:
    """The error, reported by the port above `device`; the kernel log up to the end of recovery."""
    port = vm.topology.endpoint(device).bus
    cursor = vm.kmsg_cursor()
    answer = vm.machine.qmp.hmp(f"pcie_aer_inject_error {port} {error}")
    assert answer.startswith("OK"), f"QEMU refused the injection on {port}: {answer!r}"
    lines = vm.kmsg_wait(cursor, RECOVERED, RECOVERY_S)
    assert lines[-1].endswith("device recovery successful"), f"recovery failed: {lines}"
    return lines


def _dma_lands(imp: Importer, addr: int, name: str) -> None:
    want, before, after = imp.dma(addr + DMA_OFFSET, name)
    assert_lands(before, after, want, DMA_OFFSET)


@pytest.mark.topology("p2pdma-thru-iommu", **TOPOLOGIES)
def test_a_fatal_error_below_the_exporter_revokes_for_the_reset(fresh_vm, roles, kernel_bug):
    """A Malformed TLP at the exporter's port while the probe holds a mapping of its dma-buf:
    recovery resets the link, which takes the BAR away, so the importer must be told first
    (invalidate_mappings, its mapping dropped) as for every other reset. Recovery leaves the
    ivshmem's command register reset (vfio-pci restores nothing: its user does), so the buffer
    stays revoked, a new map refused, until the user enables memory again, as a VFIO user
    re-initialising its device after an error does; then a new map works and edu's DMA through
    it lands (host file)."""
    vm = fresh_vm
    bug = kernel_bug(vm, AER_RESET_KEEPS_IMPORT)
    imp = Importer(vm, roles)
    try:
        _dma_lands(imp, imp.imp["dma_addr"], "before_fatal_error")
        lines = inject(vm, roles.exporter, "MALF_TLP")
        assert any(LINK_RESET in line for line in lines), f"a fatal error reset no link: {lines}"
        st = imp.state()
        with bug:
            assert st["invalidations"] >= 1 and not st["mapped"], (
                f"the link below the exporter was reset while the importer still mapped its BAR "
                f"(invalidate_mappings never ran): {st}"
            )
        early = imp.state("remap")
        assert early["error"] == -errno.ENODEV, f"mapped while the BAR does not decode after recovery: {early}"
        imp.guest.ok("command", set=PCI_COMMAND_MEMORY)
        remap = imp.state("remap")
        assert remap["error"] == 0 and remap["mapped"], f"no new map once memory was enabled again: {remap}"
        _dma_lands(imp, remap["dma_addr"], "after_fatal_error")
    finally:
        imp.close()


@pytest.mark.topology("p2pdma-thru-iommu", **TOPOLOGIES)
def test_a_non_fatal_error_below_the_exporter_leaves_the_import_alone(fresh_vm, roles):
    """An Unsupported Request at the exporter's port: recovery resets nothing, so nothing is
    revoked; the held mapping stays and edu's DMA through it still lands."""
    vm = fresh_vm
    imp = Importer(vm, roles)
    try:
        _dma_lands(imp, imp.imp["dma_addr"], "before_non_fatal_error")
        lines = inject(vm, roles.exporter, "UNSUP")
        assert not any(LINK_RESET in line for line in lines), f"a non-fatal error reset a link: {lines}"
        st = imp.state()
        assert st["invalidations"] == 0 and st["mapped"], f"a non-fatal error revoked the import: {st}"
        _dma_lands(imp, imp.imp["dma_addr"], "after_non_fatal_error")
    finally:
        imp.close()


STREAM_SIZE = 256 * 1024
BLOCK = 4096


@pytest.mark.topology("two-switch", needs=UNPLUG_DURING_IO)
def test_a_fatal_error_at_the_provider_during_p2p_io(fresh_vm, roles):
    """Back-to-back P2P writes from the provider's CMB to the client while a Malformed TLP at the
    provider's port resets its link: recovery succeeds; every block of the client's target is
    either the stream's pattern or what was there before (never other bytes: a CMB lost in the
    reset written out as data); after recovery a P2P transfer lands again; a third NVMe's data
    is untouched."""
    vm = fresh_vm
    client = roles.client
    old_seed, seed = fresh_seed(), fresh_seed()
    old = vm.agent("p2pmem", "ramwrite", {"client": vm.bdf(client), "size": STREAM_SIZE, "offset": 0, "seed": old_seed})
    assert old["ok"], old
    survivor_before = host_file_bytes(vm, roles.survivor, 0, STREAM_SIZE)
    io = start_background(
        vm,
        "stream",
        "p2pmem",
        "stream",
        {"provider": vm.bdf(roles.provider), "client": vm.bdf(client), "size": STREAM_SIZE, "seed": seed, "depth": 4},
    )
    io.wait_started("streaming")  # a first round completed in the guest ...
    # ... and landed: every round writes the same bytes, so the host may read while it streams
    assert host_file_bytes(vm, client, 0, STREAM_SIZE) == pattern(seed, STREAM_SIZE), (
        "the stream's P2P writes did not land"
    )
    lines = inject(vm, roles.provider, "MALF_TLP")
    assert any(LINK_RESET in line for line in lines), f"a fatal error reset no link: {lines}"
    io.signal()
    assert io.wait_exit() == 0, f"the stream did not end cleanly: {io.lines()}"
    done = io.lines()[-1]
    assert done.get("transfers", 0) > 0, f"the stream made no transfer: {io.lines()}"
    got = host_file_bytes(vm, client, 0, STREAM_SIZE)
    new, before = pattern(seed, STREAM_SIZE), pattern(old_seed, STREAM_SIZE)
    wrong = [
        off
        for off in range(0, STREAM_SIZE, BLOCK)
        if got[off : off + BLOCK] not in (new[off : off + BLOCK], before[off : off + BLOCK])
    ]
    first = got[wrong[0] : wrong[0] + 16].hex() if wrong else ""
    assert not wrong, (
        f"{len(wrong)} client blocks, at {wrong[:8]}, hold neither the stream's bytes nor the old ones "
        f"(the first starts {first}: 00s or ffs would be a read of the provider's BAR during its reset) ({done})"
    )
    after = transfer(vm, roles.provider, client, "from_p2pmem", size=64 * 1024, offset=4 * MiB)
    assert after.outcome is Outcome.TRANSFERRED, f"no P2P after recovery: {after.describe()}"
    assert host_file_bytes(vm, roles.survivor, 0, STREAM_SIZE) == survivor_before
