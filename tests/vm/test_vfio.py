"""VFIO dma-buf export of an ivshmem BAR, iommufd import, edu peer DMA into it, and revoke.

The exporter is ivshmem-plain (`shm0`): its BAR2 is a host file, so the host sees exactly
what a peer wrote. The importer is iommufd: the dma-buf is mapped with IOMMU_IOAS_MAP_FILE in
the IOAS that `edu0` (a DMA engine driven from userspace through its VFIO BAR0) is attached
to. Every DMA copies a fresh pattern RAM -> edu's buffer -> the IOVA of the BAR range, and
the host compares the whole 1 MiB backing file: the pattern at the right offset, every other
byte as before. A DMA that must not land leaves the file identical byte for byte and the
guest logs the DMAR fault (declared with `kernel_messages.expect`).

A guest session (`vfio.py serve`) keeps the fds open across host-side steps; the host sends it
one operation at a time on its stdin, through the VM's agent (testbed.guestvm.vfio_client.VfioSession).
"""

from __future__ import annotations

import errno
import re

import pytest

from testbed.guestvm import GuestVM
from testbed.guestvm.p2p import await_dma_fault, fault_window, fresh_seed
from testbed.guestvm.vfio_client import VfioSession
from testbed.in_guest.pattern import pattern
from testbed.topology.needs import vfio_pair
from testbed.vm import hotplug

KiB, MiB = 1 << 10, 1 << 20
BAR2 = 2
BAR_SIZE = 1 * MiB
# the fault lines are intel-iommu's, the cases' offsets are written for a 1 MiB BAR2
VFIO = vfio_pair(intel=True, bar_size=BAR_SIZE)
pytestmark = [pytest.mark.vfio, pytest.mark.topology("vfio-dmabuf", needs=VFIO)]
PEER_IOVA = 0x800000  # where dma-bufs are mapped (edu's dma_mask is 28 bits)


Guest = VfioSession  # the host end of one `vfio.py serve` session (testbed/guestvm/vfio_client.py)


def bar_bytes(vm, exporter: str) -> bytes:
    data = vm.backing_file(exporter).read_bytes()
    assert len(data) == BAR_SIZE, f"backing file is {len(data)} bytes"
    return data


def fault_re(vm, dma: str, iova: int) -> str:
    """The intel-iommu line for an edu write to `iova` (drivers/iommu/intel/dmar.c)."""
    return (
        rf"DMAR: \[DMA Write NO_PASID\] Request device \[{re.escape('0000:' + vm.bdf(dma)[5:])}\] "
        rf"fault addr {iova:#x}"
    )


def poison_bar(vm, exporter: str, offset: int, want: bytes) -> None:
    """The target written with the pattern's complement from the host (the BAR is a shared
    memory-backend file): a DMA that never arrived cannot leave a byte that happens to match
    (a 1-byte pattern would, once in 256)."""
    with open(vm.backing_file(exporter), "r+b") as f:
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in want))


def dma_lands(vm, g: Guest, iova: int, bar_offset: int, size: int) -> None:
    """A fresh pattern DMAed to iova lands at bar_offset, and no other byte of the BAR changes."""
    seed = fresh_seed()
    poison_bar(vm, g.exporter, bar_offset, pattern(seed, size))
    before = bar_bytes(vm, g.exporter)
    g.ok("dma", iova=iova, size=size, seed=seed)
    after = bar_bytes(vm, g.exporter)
    want = pattern(seed, size)
    got = after[bar_offset : bar_offset + size]
    assert got == want, f"{size} B to iova {iova:#x}: BAR bytes at {bar_offset:#x} are not the pattern"
    outside = before[:bar_offset] + before[bar_offset + size :]
    assert after[:bar_offset] + after[bar_offset + size :] == outside, (
        f"bytes outside [{bar_offset:#x}, +{size}) changed"
    )


def dma_blocked(vm, g: Guest, iova: int, size: int = 256) -> None:
    """The DMA completes on edu's side (it cannot tell), but not one BAR byte changes, and this
    very DMA left its own fault line: the kernel log is read from a cursor taken right before
    it, so an earlier DMA's fault cannot stand in for it. edu.py checks the device ran it (its
    command register reads back with this DMA's tag and RUN clear), or "dma" is not ok. The
    fault must not be rate-limited away: fault_window()."""
    before = bar_bytes(vm, g.exporter)
    fault_window(vm)
    cursor = vm.kmsg_cursor()
    r = g.ok("dma", iova=iova, size=size, seed=fresh_seed())
    assert bar_bytes(vm, g.exporter) == before, f"a DMA to revoked iova {iova:#x} changed the BAR ({r})"
    faults = await_dma_fault(vm, cursor, vm.bdf(g.dma), iova, size)
    assert faults, (
        f"edu's DMA to revoked iova {iova:#x} logged no fault of its own (kernel log since the DMA: "
        f"{vm.kmsg_since(cursor)[-10:]})"
    )


# -- data path ----------------------------------------------------------------------------------


@pytest.fixture
def guest(vm, roles):
    with Guest(vm, roles.exporter, roles.dma) as g:
        yield g


def test_session_opens(guest):
    o = guest.opened
    assert o["edu_id"] == "0x10000ed", o  # edu.c: `val = 0x010000edu` (the "u" is C's suffix)
    assert o["exporter_bars"]["2"] == BAR_SIZE, o
    assert o["exporter_command"] & 0x2, f"vfio-pci left MEMORY off: {o}"
    loop = guest.ok("ram_loop", size=1000, seed=fresh_seed())
    assert loop["mismatch"] == -1, f"edu RAM -> RAM through the IOAS failed: {loop}"


# (export ranges of BAR2, map_file start/length, DMA offset into the mapping, DMA size)
DATA_CASES = [
    pytest.param((0, 4 * KiB), (0, 4 * KiB), 0, 1, id="first-page-1B"),
    pytest.param((0, 4 * KiB), (0, 4 * KiB), 0, 4095, id="first-page-4095B"),
    pytest.param((64 * KiB, 16 * KiB), (0, 16 * KiB), 4 * KiB + 100, 2048, id="mid-16K-unaligned"),
    pytest.param((64 * KiB, 16 * KiB), (0, 16 * KiB), 8 * KiB - 1000, 3000, id="mid-16K-page-crossing"),
    pytest.param((BAR_SIZE - 4 * KiB, 4 * KiB), (0, 4 * KiB), 4 * KiB - 777, 777, id="last-page-to-the-end"),
    pytest.param((0, BAR_SIZE), (0, BAR_SIZE), 512 * KiB + 3, 4095, id="whole-bar"),
    pytest.param((192 * KiB, 16 * KiB), (8 * KiB, 8 * KiB), 1 * KiB, 1500, id="map-file-start-8K"),
]


@pytest.mark.parametrize("export,window,offset,size", DATA_CASES)
def test_peer_dma_into_exported_bar(vm, guest, export, window, offset, size):
    """dma-buf of a BAR2 range -> IOMMU_IOAS_MAP_FILE -> edu writes it: bytes land exactly there."""
    buf = guest.ok("export", ranges=[list(export)])
    assert buf["size"] == export[1], f"dma-buf size {buf['size']} for a {export[1]} B range"
    start, length = window
    guest.ok("map_file", buf=buf["buf"], iova=PEER_IOVA, start=start, length=length)
    dma_lands(vm, guest, PEER_IOVA + offset, export[0] + start + offset, size)
    dma_lands(vm, guest, PEER_IOVA + offset, export[0] + start + offset, size)  # a second, fresh pattern
    assert guest.ok("unmap", iova=PEER_IOVA, length=length)["unmapped"] == length
    guest.ok("close_buf", buf=buf["buf"])


def test_two_dma_bufs_mapped_at_once(vm, guest):
    """Two exports of different ranges, mapped side by side: each IOVA reaches its own range."""
    a = guest.ok("export", ranges=[[256 * KiB, 8 * KiB]])
    b = guest.ok("export", ranges=[[512 * KiB, 8 * KiB]])
    guest.ok("map_file", buf=a["buf"], iova=PEER_IOVA, length=8 * KiB)
    guest.ok("map_file", buf=b["buf"], iova=PEER_IOVA + 64 * KiB, length=8 * KiB)
    dma_lands(vm, guest, PEER_IOVA + 4 * KiB - 10, 260 * KiB - 10, 2000)
    dma_lands(vm, guest, PEER_IOVA + 64 * KiB + 5, 512 * KiB + 5, 3333)
    guest.ok("unmap", iova=PEER_IOVA, length=8 * KiB)
    guest.ok("unmap", iova=PEER_IOVA + 64 * KiB, length=8 * KiB)


# -- export errors ------------------------------------------------------------------------------

U64_PAGE_BELOW_MAX = (1 << 64) - 4 * KiB
# (export arguments, errno, the check in drivers/vfio/pci/vfio_pci_dmabuf.c that returns it, name)
EXPORT_ERRORS = [
    (
        {"ranges": [[2 * KiB, 4 * KiB]]},
        errno.EINVAL,
        "validate_dmabuf_input: !PAGE_ALIGNED(offset)",
        "unaligned-offset",
    ),
    ({"ranges": [[0, 6 * KiB]]}, errno.EINVAL, "validate_dmabuf_input: !PAGE_ALIGNED(len)", "unaligned-length"),
    ({"ranges": [[0, 0]]}, errno.EINVAL, "validate_dmabuf_input: !len", "zero-length"),
    (
        {"ranges": [[BAR_SIZE - 4 * KiB, 8 * KiB]]},
        errno.EINVAL,
        "vfio_pci_core_fill_phys_vec: end > max_addr",
        "past-the-bar",
    ),
    (
        {"ranges": [[BAR_SIZE, 4 * KiB]]},
        errno.EINVAL,
        "vfio_pci_core_fill_phys_vec: end > max_addr",
        "starts-at-bar-end",
    ),
    (
        {"ranges": [[U64_PAGE_BELOW_MAX, 4 * KiB]]},
        errno.EOVERFLOW,
        "vfio_pci_core_fill_phys_vec: check_add_overflow(start, offset)",
        "offset-overflows",
    ),
    (
        {"ranges": [[0, 4 * KiB]], "flags": 1},
        errno.EINVAL,
        "vfio_pci_core_feature_dma_buf: get_dma_buf.flags",
        "nonzero-flags",
    ),
    (
        {"ranges": [], "nr_ranges": 0},
        errno.EINVAL,
        "vfio_pci_core_feature_dma_buf: !get_dma_buf.nr_ranges",
        "zero-ranges",
    ),
    (
        {"ranges": [[0, 4 * KiB]], "region": 1},
        errno.ENODEV,
        "ivshmem-plain has no BAR1: barmap[1] is ERR_PTR(-ENODEV)",
        "region-without-bar",
    ),
    (
        {"ranges": [[0, 4 * KiB]], "region": 0},
        errno.EINVAL,
        "BAR0 is 256 B: fill_phys_vec end > max_addr",
        "bar-smaller-than-page",
    ),
    ({"ranges": [[0, 4 * KiB]], "region": 6}, errno.ENODEV, "region_index >= VFIO_PCI_ROM_REGION_INDEX", "rom-region"),
    (
        {"ranges": [[0, 4 * KiB]], "region": 7},
        errno.ENODEV,
        "region_index >= VFIO_PCI_ROM_REGION_INDEX",
        "config-region",
    ),
    (
        {"ranges": [[0, 4 * KiB]], "feature_flags": (1 << 17) | 11},
        errno.EINVAL,
        "vfio_check_feature: SET is not supported",
        "feature-set",
    ),
]


def test_export_rejects_bad_requests(guest):
    """Every malformed VFIO_DEVICE_FEATURE(DMA_BUF) gets the kernel's exact errno (one session,
    every case checked, all mismatches reported together)."""
    wrong = []
    for args, want, why, name in EXPORT_ERRORS:
        r = guest.call("export", **args)
        if r.get("ok") or r.get("errno") != want:
            wrong.append(f"{name}: expected {errno.errorcode[want]} ({why}), got {r}")
        if r.get("ok"):
            guest.ok("close_buf", buf=r["buf"])
    assert not wrong, "\n".join(wrong)


def test_export_probe_and_multi_range(guest):
    """PROBE|GET succeeds; a two-range dma-buf exports but iommufd refuses it (nr_ranges != 1)."""
    assert guest.ok("probe")["ret"] == 0
    two = guest.ok("export", ranges=[[0, 4 * KiB], [16 * KiB, 4 * KiB]])
    assert two["size"] == 8 * KiB
    r = guest.call("map_file", buf=two["buf"], iova=PEER_IOVA, length=8 * KiB)
    assert r.get("errno") == errno.EOPNOTSUPP, f"vfio_pci_dma_buf_iommufd_map: nr_ranges != 1 gives EOPNOTSUPP, got {r}"


# -- revoke ---------------------------------------------------------------------------------------

REVOKE_RANGE = (128 * KiB, 8 * KiB)


def _mapped(vm, g: Guest) -> int:
    """Export REVOKE_RANGE, map it at PEER_IOVA, prove a DMA lands there; return the buf key."""
    buf = g.ok("export", ranges=[list(REVOKE_RANGE)])["buf"]
    g.ok("map_file", buf=buf, iova=PEER_IOVA, length=REVOKE_RANGE[1])
    dma_lands(vm, g, PEER_IOVA + 100, REVOKE_RANGE[0] + 100, 3000)
    return buf


def _remap_lands(vm, g: Guest, old_buf: int) -> None:
    """The revoked mapping can be unmapped; a new export mapped at the same IOVA works again."""
    assert g.ok("unmap", iova=PEER_IOVA, length=REVOKE_RANGE[1])["unmapped"] == REVOKE_RANGE[1]
    g.ok("close_buf", buf=old_buf)
    buf = g.ok("export", ranges=[list(REVOKE_RANGE)])["buf"]
    g.ok("map_file", buf=buf, iova=PEER_IOVA, length=REVOKE_RANGE[1])
    dma_lands(vm, g, PEER_IOVA + 8 * KiB - 4000, REVOKE_RANGE[0] + 8 * KiB - 4000, 4000 - 1)


def test_revoke_by_clearing_memory_enable(vm, roles, kernel_messages):
    """MEMORY off in the exporter's command register revokes; MEMORY on again does not restore
    the iommufd mapping (iopt_revoke_notify zeroes it for good); unmap + new export works."""
    kernel_messages.expect(fault_re(vm, roles.dma, PEER_IOVA), "edu writes the revoked IOVA")
    with Guest(vm, roles.exporter, roles.dma) as g:
        buf = _mapped(vm, g)
        r = g.ok("command", clear=0x2)
        assert not r["after"] & 0x2, r
        dma_blocked(vm, g, PEER_IOVA)
        # while MEMORY is off a new export is born revoked: iommufd cannot attach it
        born_revoked = g.ok("export", ranges=[[0, 4 * KiB]])["buf"]
        r = g.call("map_file", buf=born_revoked, iova=PEER_IOVA + 1 * MiB, length=4 * KiB)
        assert r.get("errno") == errno.ENODEV, f"vfio_pci_dma_buf_attach: revoked -> ENODEV, got {r}"
        g.ok("close_buf", buf=born_revoked)
        g.ok("command", set=0x2)
        dma_blocked(vm, g, PEER_IOVA)
        _remap_lands(vm, g, buf)


def test_revoke_by_closing_exporter_fd(vm, roles, kernel_messages):
    """Closing the exporter's device fd (vfio_pci_dma_buf_cleanup) revokes the mapping."""
    kernel_messages.expect(fault_re(vm, roles.dma, PEER_IOVA), "edu writes the revoked IOVA")
    with Guest(vm, roles.exporter, roles.dma) as g:
        buf = _mapped(vm, g)
        g.ok("close_exporter")
        dma_blocked(vm, g, PEER_IOVA)
        assert g.ok("unmap", iova=PEER_IOVA, length=REVOKE_RANGE[1])["unmapped"] == REVOKE_RANGE[1]
        g.ok("close_buf", buf=buf)
    with Guest(vm, roles.exporter, roles.dma) as g:  # the device opens again and exports afresh
        _mapped(vm, g)


@pytest.mark.topology("vfio-dmabuf", needs=vfio_pair(intel=True, bar_size=BAR_SIZE, alone=True))
def test_revoke_by_device_reset(vm, roles, kernel_messages):
    """VFIO_DEVICE_RESET revokes: vfio_pci_ioctl_reset() calls vfio_pci_dma_buf_move(true) before
    pci_try_reset_function(). ivshmem-plain has neither FLR nor a PM capability, but it sits
    alone below its root port, so the kernel's reset method is "bus" (a secondary bus reset
    through pciehp's reset_slot) and the reset succeeds. The command register is restored
    afterwards, so vfio un-revokes the dma-buf (dma_buf_move(false)), yet the iommufd mapping
    stays dead: iopt_revoke_notify() zeroed it for good."""
    kernel_messages.expect(fault_re(vm, roles.dma, PEER_IOVA), "edu writes the revoked IOVA")
    with Guest(vm, roles.exporter, roles.dma) as g:
        assert g.opened["exporter_info"]["reset"], f"VFIO_DEVICE_FLAGS_RESET not set: {g.opened}"
        assert g.opened["reset_method"] == "bus", g.opened
        buf = _mapped(vm, g)
        before = bar_bytes(vm, g.exporter)
        r = g.ok("reset")
        assert r["ret"] == 0 and r["command_after"] & 0x2, f"reset restores MEMORY: {r}"
        assert bar_bytes(vm, g.exporter) == before, "a bus reset must not touch the host-backed BAR memory"
        dma_blocked(vm, g, PEER_IOVA)
        _remap_lands(vm, g, buf)


# -- hot-unplug -----------------------------------------------------------------------------------


def _require_native_pciehp(vm, port: str) -> None:
    """Native hot-unplug needs pciehp bound to the exporter's root port. Linux takes the slot
    from the firmware only if _OSC grants it, and it asks only when it can do ExtendedConfig,
    which on x86 needs CONFIG_PCI_MMCONFIG: without it dmesg says "_OSC: not requesting OS
    control; OS requires [ExtendedConfig ...]", pciehp never binds and device_del never
    completes. Said up front instead of after a long unplug timeout."""
    dmesg = vm.dmesg()
    if re.search(rf"pcieport {re.escape(port)}: pciehp: Slot #\d+ AttnBtn", dmesg):
        return
    osc = [line.strip() for line in dmesg.splitlines() if "_OSC" in line]
    pytest.fail(
        f"pciehp is not bound to {port}, so native device_del cannot complete (a kernel "
        f"without CONFIG_PCI_MMCONFIG gets no _OSC hotplug control); dmesg: {osc}"
    )


def _closed_on_request_and_revoked(vm: GuestVM, g: Guest, buf: dict, before: bytes) -> None:
    """The session saw the REQ eventfd and closed the exporter; the import is dead for good:
    edu's DMA to the IOVA changes no byte, and the mapping can still be unmapped."""
    status = g.ok("status")
    assert status["events"] and status["events"][0].get("closed_exporter"), status
    assert not status["exporter_open"], status
    dma_blocked(vm, g, PEER_IOVA)
    assert bar_bytes(vm, g.exporter) == before
    assert g.ok("unmap", iova=PEER_IOVA, length=REVOKE_RANGE[1])["unmapped"] == REVOKE_RANGE[1]
    g.ok("close_buf", buf=buf)


@pytest.mark.hotunplug
@pytest.mark.topology("vfio-dmabuf", needs=vfio_pair(intel=True, bar_size=BAR_SIZE, native=True))
def test_unplug_exporter_while_imported(fresh_vm, roles, kernel_messages):
    """device_del of the exporter while its dma-buf is mapped: once pciehp has taken the button
    press (the guest confirms it through the slot's power) the kernel relays the request to the
    REQ eventfd, the session closes the device fd (revoking the dma-buf), DEVICE_DELETED
    follows, and edu's next DMA to the IOVA faults."""
    vm = fresh_vm
    port = vm.layout[vm.layout[roles.exporter].upstream].bdf
    _require_native_pciehp(vm, port)
    kernel_messages.expect(
        r"vfio-pci " + re.escape(vm.bdf(roles.exporter)) + r": Relaying device request to user \(#0\)",
        "vfio_pci_core_request() with a REQ eventfd registered",
    )
    kernel_messages.expect(fault_re(vm, roles.dma, PEER_IOVA), "edu writes the IOVA of the unplugged BAR")
    with Guest(vm, roles.exporter, roles.dma, req=True, close_on_req=True) as g:
        buf = _mapped(vm, g)
        before = bar_bytes(vm, g.exporter)
        result = vm.unplug(roles.exporter)
        # pciehp's road (the press confirmed, or its own timer where a starved agent lost the race)
        assert result.how in (hotplug.CONFIRMED, hotplug.BY_TIMER), result
        _closed_on_request_and_revoked(vm, g, buf, before)


@pytest.mark.hotunplug
def test_guest_remove_of_exporter_while_imported(fresh_vm, roles, kernel_messages):
    """The same REQ path driven from inside the guest (sysfs `remove`, no pciehp needed): the
    removal blocks in vfio_unregister_group_dev() until the session, told through the REQ
    eventfd, closes the device fd; that revokes the dma-buf and edu's next DMA faults."""
    vm = fresh_vm
    bdf = vm.bdf(roles.exporter)
    kernel_messages.expect(
        r"vfio-pci " + re.escape(bdf) + r": Relaying device request to user \(#0\)",
        "vfio_pci_core_request() with a REQ eventfd registered",
    )
    kernel_messages.expect(fault_re(vm, roles.dma, PEER_IOVA), "edu writes the IOVA of the removed BAR")
    with Guest(vm, roles.exporter, roles.dma, req=True, close_on_req=True) as g:
        buf = _mapped(vm, g)
        before = bar_bytes(vm, g.exporter)
        vm.dirty = True
        # blocks until the session closes the fd it was asked for: a removal that waits for
        # good fails the command's timeout
        r = vm.run(f"echo 1 > /sys/bus/pci/devices/{bdf}/remove", timeout=60)
        assert r.status == 0, r.stderr
        assert not vm.lists(bdf)
        _closed_on_request_and_revoked(vm, g, buf, before)
