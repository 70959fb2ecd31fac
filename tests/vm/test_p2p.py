"""P2P map/unmap through NVMe CMB p2pmem: verdicts across the topology matrix, data, unmap.

A peer NVMe's O_DIRECT I/O uses a buffer mmapped from another NVMe's CMB (p2pmem/allocate),
so its DMA lands in (or reads from) that BAR. The observed outcome of every (provider,
client) pair must be the one the oracle derives from the kernel's rules; bytes are checked by
the guest CPU and on the host: in the client's backing file for writes to a namespace, in the
provider's CMB (read out of QEMU at the buffer's guest-physical address) for writes into p2pmem.
"""

from __future__ import annotations

import pytest

from testbed.guestvm.p2p import NVME_TOPOLOGIES, REFUSED_TEXT, fresh_seed, host_file_bytes, refuses, transfer
from testbed.in_guest.pattern import pattern
from testbed.topology.model import EndpointKind, IommuMode, MapType
from testbed.topology.needs import (
    ACS_REDIR_CLEARED,
    FAULTING_PAIR,
    NVME_PAIRS,
    ROUTED_PAIR,
    TRANSFERRING_PAIR,
    VIRTIO_BLK_CLIENT,
)
from testbed.topology.oracle import verdict as verdict_of
from testbed.topology.outcome import Outcome, expected_outcome

pytestmark = pytest.mark.p2p

KiB, MiB = 1 << 10, 1 << 20


def _nvme_pairs(vm):
    for v in vm.verdicts():
        provider = vm.topology.endpoint(v.provider)
        client = vm.topology.endpoint(v.client)
        block_client = client.kind in (EndpointKind.NVME, EndpointKind.VIRTIO_BLK)  # edu has no disk
        if provider.kind is EndpointKind.NVME and provider.plugged and client.plugged and block_client:
            yield v


@pytest.mark.topology(
    "two-switch",
    "single-switch",
    "amd-zen",
    "two-switch-iommu",
    "acs",
    "p2pdma-thru-iommu",
    matrix=NVME_TOPOLOGIES,
    needs=NVME_PAIRS,
)
def test_every_pair_matches_the_oracle(vm, verdict_table):
    """Both directions of every pair; a wrong declared expectation or oracle fails loudly."""
    wrong = []
    pairs = list(_nvme_pairs(vm))
    assert pairs, f"{vm.topology.name}: no plugged NVMe provider with a block-device client"
    for v in pairs:
        expected = expected_outcome(vm.topology, v)
        for direction in ("to_p2pmem", "from_p2pmem"):
            t = transfer(
                vm,
                v.provider,
                v.client,
                direction,
                size=64 * KiB,
                offset=128 * KiB,
                depth=2,
                expect_fault=expected is Outcome.DMA_FAULT,
            )
            verdict_table.add(vm.topology.name, v, expected, t)
            if t.outcome is not expected:
                wrong.append(
                    f"{v.provider} -> {v.client} {direction}: expected {expected.value} "
                    f"({v.map_type.value}: {v.reason}), observed {t.describe()}"
                )
            if t.outcome is Outcome.EINVAL and not t.refused_lines and not _already_refused(vm, v):
                wrong.append(f"{v.provider} -> {v.client}: -EINVAL without '{REFUSED_TEXT}' in dmesg")
    assert not wrong, "\n".join(wrong)


def _already_refused(vm, v) -> bool:
    """The kernel caches a pair's map type while the provider is bound, and warns only once."""
    return any(refuses(line, vm.bdf(v.provider), vm.bdf(v.client)) for line in vm.dmesg().splitlines())


@pytest.mark.topology("two-switch", matrix=("single-switch", "two-switch-iommu-pt", "amd-zen"), needs=TRANSFERRING_PAIR)
@pytest.mark.parametrize("size", [4 * KiB, 64 * KiB, 1 * MiB])
@pytest.mark.parametrize("depth", [1, 4])
def test_sizes_and_io_in_flight(vm, roles, size, depth):
    """A pair that does P2P: data lands in the CMB and, from it, in the peer's backing file."""
    provider, client = roles.provider, roles.client
    into = transfer(vm, provider, client, "to_p2pmem", size=size, offset=2 * MiB, depth=depth)
    assert into.outcome is Outcome.TRANSFERRED and into.host_bytes_ok, into.describe()
    out = transfer(vm, provider, client, "from_p2pmem", size=size, offset=4 * MiB, depth=depth)
    assert out.outcome is Outcome.TRANSFERRED and out.host_bytes_ok, out.describe()


@pytest.mark.topology("two-switch-iommu", matrix=("virtio-iommu",), needs=FAULTING_PAIR)
def test_translating_viommu_bus_addr_faults(vm, roles, kernel_messages):
    """Declared divergence: the kernel maps BUS_ADDR, QEMU sends the DMA through the vIOMMU,
    it faults, the NVMe command still completes and no byte moves. Asserted, not hidden."""
    kernel_messages.expect(r"DMAR: \[DMA (Read|Write)|virtio_iommu", "the provoked vIOMMU fault")
    (v,) = [v for v in vm.verdicts() if (v.provider, v.client) == (roles.provider, roles.client)]
    assert v.divergence, "the oracle must declare this divergence"
    t = transfer(vm, roles.provider, roles.client, "from_p2pmem", size=64 * KiB, offset=6 * MiB, expect_fault=True)
    assert t.result.get("ok"), f"the command should complete despite the fault: {t.describe()}"
    assert t.outcome is Outcome.DMA_FAULT, t.describe()
    assert t.host_bytes_ok is False


ACS_CTRL_RR = 0x0004  # PCI_ACS_RR in the ACS Control register (ECAP 0x0d + 6)


@pytest.mark.topology("switch-acs", needs=ROUTED_PAIR)
def test_switch_routes_p2p_unless_acs_redirects(vm, roles, kernel_messages):
    """On a QEMU that routes P2P inside switches (the testbed's): the BUS_ADDR pair's DMA is
    delivered below the switch, past the translating vIOMMU, and the host file matches. With P2P
    Request Redirect set on the client's downstream port the same DMA goes up to the vIOMMU,
    which has no mapping for a bus address: it faults and no byte moves. Cleared, it lands
    again. The kernel's mapping stays BUS_ADDR throughout: only the port's bit changes."""
    kernel_messages.expect(r"DMAR: \[DMA (Read|Write)", "the DMA redirected to the vIOMMU by ACS RR")
    port = vm.bdf(roles.port)
    routed = transfer(vm, roles.provider, roles.client, "from_p2pmem", size=64 * KiB, offset=2 * MiB)
    assert routed.outcome is Outcome.TRANSFERRED and routed.host_bytes_ok, routed.describe()
    ctrl = int(vm.run(f"setpci -s {port} ECAP0d+6.w", check=True).stdout.strip(), 16)
    assert not ctrl & ACS_CTRL_RR, f"the kernel left ACS redirect on {roles.port} ({port}): {ctrl:#x}"
    vm.run(f"setpci -s {port} ECAP0d+6.w={ctrl | ACS_CTRL_RR:04x}", check=True)
    try:
        redirected = transfer(
            vm, roles.provider, roles.client, "from_p2pmem", size=64 * KiB, offset=4 * MiB, expect_fault=True
        )
    finally:
        vm.run(f"setpci -s {port} ECAP0d+6.w={ctrl:04x}", check=True)
    assert redirected.outcome is Outcome.DMA_FAULT and redirected.host_bytes_ok is False, redirected.describe()
    again = transfer(vm, roles.provider, roles.client, "from_p2pmem", size=64 * KiB, offset=6 * MiB)
    assert again.outcome is Outcome.TRANSFERRED and again.host_bytes_ok, again.describe()


@pytest.mark.topology("acs", needs=ACS_REDIR_CLEARED)
def test_disable_acs_redir_restores_bus_addr(vm, roles):
    """One port's ACS redirect is cleared on the command line: the pair below it does P2P, a
    pair below a port that keeps its redirect is refused (in acs: rp2 and rp1)."""
    cleared = transfer(vm, roles.cleared_provider, roles.cleared_client, "from_p2pmem", size=64 * KiB, offset=8 * MiB)
    assert cleared.outcome is Outcome.TRANSFERRED and cleared.host_bytes_ok, cleared.describe()
    redirected = transfer(
        vm, roles.redirected_provider, roles.redirected_client, "from_p2pmem", size=64 * KiB, offset=8 * MiB
    )
    assert redirected.outcome is Outcome.EINVAL, redirected.describe()
    assert "disable_acs_redir" in vm.run("cat /proc/cmdline").stdout


@pytest.mark.topology("single-switch", needs=VIRTIO_BLK_CLIENT)
def test_virtio_blk_queue_refuses_p2p_with_eremoteio(vm, roles):
    t = transfer(vm, roles.provider, roles.client, "from_p2pmem", size=64 * KiB)
    assert t.outcome is Outcome.EREMOTEIO, t.describe()


@pytest.mark.topology("two-switch", matrix=("single-switch",), needs=TRANSFERRING_PAIR)
def test_unmap_returns_p2pmem(vm, roles):
    """The map takes exactly its size from the pool (or "whole again" would prove nothing);
    after munmap the pool is whole again: `available` equals its value before the map."""
    bdf = vm.bdf(roles.provider)
    size = 1 * MiB
    before = vm.agent("p2pmem", "state", {"bdf": bdf})["available"]
    t = transfer(vm, roles.provider, roles.client, "from_p2pmem", size=size, offset=10 * MiB)
    assert t.outcome is Outcome.TRANSFERRED and t.host_bytes_ok, t.describe()
    assert t.result["available_before"] == before, t.result
    taken = before - t.result["available_mapped"]
    assert taken == size, f"mapping {size} B of p2pmem took {taken} B from the pool: {t.result}"
    assert t.result["available_after"] == before, t.result
    assert vm.agent("p2pmem", "state", {"bdf": bdf})["available"] == before


@pytest.mark.topology("two-switch", needs=TRANSFERRING_PAIR)
def test_thousand_map_use_unmap_cycles(vm, roles):
    """>= 1000 map / peer DMA / check / unmap cycles: every cycle's bytes right (the guest reads
    each back, the host checks the last one in the client's backing file), nothing leaked."""
    count, size, seed = 1000, 4 * KiB, fresh_seed()
    result = vm.agent(
        "p2pmem",
        "cycles",
        {
            "provider": vm.bdf(roles.provider),
            "client": vm.bdf(roles.client),
            "count": count,
            "size": size,
            "seed": seed,
        },
        timeout=600,
    )
    assert result["ok"], result["failures"]
    assert result["cycles"] == count, result
    last = pattern(seed + count - 1, size)  # every cycle writes offset 0 with pattern(seed + i)
    assert host_file_bytes(vm, roles.client, 0, size) == last, (
        f"{roles.client}'s backing file does not hold the last cycle's pattern"
    )
    assert result["available_after"] == result["baseline"], "p2pmem leaked across the cycles"


PAGE_PATH_MATRIX = ("two-switch-iommu-pt", "amd-zen", "single-switch", "p2pdma-thru-iommu.iommu-intel-pt")


@pytest.mark.topology("two-switch", "p2pdma-thru-iommu", matrix=PAGE_PATH_MATRIX, needs=TRANSFERRING_PAIR)
def test_the_page_path_asks_the_kernel_and_maps_as_it_answers(vm, roles):
    """The page-based provider path, seen kernel-side: a peer NVMe's O_DIRECT write from the
    provider's p2pmem goes through the block layer's two-step iterator, whose
    pci_p2pdma_state() asks pci_p2pdma_map_type() about the client (the probe's watch: a
    kretprobe, any task). It must get the oracle's map type and then map the CMB the way that
    answer says: by bus address (neither dma_iova_link() nor dma_map_phys() of the CMB), by an
    IOVA link behind a translating IOMMU, or by dma_map_phys() in an identity domain. The bytes
    land (the client's backing file, on the host)."""
    verdict = verdict_of(vm.topology, vm.layout, roles.provider, roles.client)
    provider, client = vm.bdf(roles.provider), vm.bdf(roles.client)
    vm.load_probe()
    name = f"watch_{roles.provider}_{roles.client}"
    assert vm.agent("probe", "watch", {"client": client, "provider": provider, "name": name})["ok"]
    try:
        t = transfer(vm, roles.provider, roles.client, "from_p2pmem", size=64 * KiB, offset=12 * MiB)
    finally:
        seen = vm.agent("probe", "watch", {"client": client, "provider": provider, "name": name, "stop": True})
    assert t.outcome is Outcome.TRANSFERRED and t.host_bytes_ok, t.describe()
    assert seen["calls"] >= 1, f"the block layer never asked pci_p2pdma_map_type() about {client}: {seen}"
    assert seen["map_type"] == verdict.map_type.value, f"the kernel answered {seen['map_type']}: {verdict.reason}"
    maps = (seen["iova_links"], seen["phys_maps"])
    translated = vm.topology.iommu.enabled and vm.topology.iommu.mode is IommuMode.TRANSLATED
    if verdict.map_type is MapType.BUS_ADDR:
        assert maps == (0, 0), f"a bus-address pair, yet the CMB was mapped through the DMA API: {seen}"
    elif translated:
        assert maps[0] >= 1 and maps[1] == 0, f"through the host bridge behind a translating IOMMU: {seen}"
    else:
        assert maps[0] == 0 and maps[1] >= 1, f"through the host bridge, identity domain: {seen}"
