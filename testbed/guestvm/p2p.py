"""Driving one P2P transfer and judging it on both sides: the guest CPU, and the host (the
client's backing file for `from_p2pmem`, the provider's CMB read out of QEMU for `to_p2pmem`)."""

from __future__ import annotations

import itertools
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from ..errors import GuestError
from ..in_guest.pattern import first_mismatch, pattern
from ..topology.outcome import Outcome, observed_outcome
from .guest import GuestVM

# A fresh seed for every transfer: the P2P pool hands the same CMB addresses out again, so a
# repeated pattern could make a transfer that moved nothing look right. A helper that writes
# many patterns takes seed, seed + 1, ... (the cycles test: 1000): seeds are this far apart.
SEED_STRIDE = 1 << 20
_seeds = itertools.count(random.SystemRandom().randrange(1 << 40) * SEED_STRIDE, SEED_STRIDE)
BLOCK = 4096  # the unit a partly landed transfer is counted in
# every shipped topology with an NVMe CMB besides two-switch (the P2P and tree suites' matrix)
NVME_TOPOLOGIES = (
    "single-switch",
    "root-ports",
    "pxb",
    "acs",
    "amd-zen",
    "two-switch-iommu",
    "two-switch-iommu-pt",
    "virtio-iommu",
)
FAULT_RE = re.compile(r"DMAR: \[DMA (?:Read|Write)|virtio_iommu.*fault|AMD-Vi: .*(?:IO_PAGE_FAULT|Event logged)")
REFUSED_TEXT = "cannot be used for peer-to-peer DMA"


def refuses(line: str, provider_bdf: str, client_bdf: str) -> bool:
    """Whether a kernel log line is calc_map_type_and_dist()'s refusal of this pair: the client
    warns and names the provider ("... as the client and provider (0000:01:00.0) do not ...")."""
    return REFUSED_TEXT in line and client_bdf in line and f"({provider_bdf})" in line


def fresh_seed() -> int:
    return next(_seeds)


@dataclass(frozen=True)
class Transfer:
    direction: str
    size: int
    offset: int
    seed: int
    result: dict
    guest_bytes_ok: bool
    host_bytes_ok: bool | None  # None: the transfer failed in the guest, nothing to check
    fault_lines: tuple[str, ...]
    refused_lines: tuple[str, ...]
    host_where: str = ""  # what the host read: the backing file or the CMB's physical range
    host_blocks_landed: int = 0  # blocks of the poisoned destination that hold the pattern

    @property
    def outcome(self) -> Outcome:
        bytes_ok = self.guest_bytes_ok and self.host_bytes_ok is not False
        return observed_outcome(self.result, bytes_ok, bool(self.fault_lines), self.host_blocks_landed)

    def describe(self) -> str:
        host = {None: "n/a", True: "match", False: "MISMATCH"}[self.host_bytes_ok]
        extra = f" fault: {self.fault_lines[0]}" if self.fault_lines else ""
        where = f" ({self.host_where})" if self.host_where else ""
        return (
            f"{self.direction} {self.size}B @{self.offset} seed {self.seed}: {self.outcome.value}"
            f" (guest bytes {'match' if self.guest_bytes_ok else 'MISMATCH'}, host bytes {host}{where},"
            f" helper {self.result}){extra}"
        )


def host_file_bytes(vm: GuestVM, endpoint: str, offset: int, size: int) -> bytes:
    with open(vm.backing_file(endpoint), "rb") as f:
        f.seek(offset)
        return f.read(size)


def _pci_devices(buses: list[dict[str, Any]]):
    """Every device of QMP query-pci's answer, below bridges too."""
    for bus in buses:
        for dev in bus.get("devices", []):
            yield dev
            bridge = dev.get("pci_bridge")
            if bridge:
                yield from _pci_devices([{"devices": bridge.get("devices", [])}])


def qemu_bar(vm: GuestVM, endpoint: str, bar: int) -> tuple[int, int]:
    """(address, size) of the endpoint's BAR as QEMU has it mapped (QMP query-pci)."""
    for dev in _pci_devices(vm.machine.qmp.command("query-pci")):
        if dev.get("qdev_id") == endpoint:
            for region in dev.get("regions", []):
                if region.get("bar") == bar and region.get("type") == "memory":
                    return int(region["address"]), int(region["size"])
            raise AssertionError(f"QEMU's {endpoint} has no memory BAR{bar}: {dev.get('regions')}")
    raise AssertionError(f"QMP query-pci does not list {endpoint}")


def host_cmb_bytes(vm: GuestVM, provider: str, cmb: dict[str, Any]) -> tuple[bytes, str]:
    """The bytes of the provider's CMB where the guest helper's p2pmem buffer was, read by QEMU
    itself (QMP pmemsave of guest-physical memory: the CMB BAR is device memory QEMU emulates,
    and pmemsave dispatches to it). The BAR's address comes from the guest's sysfs `resource`
    and must be where QEMU mapped that BAR: a buffer that was not in the CMB cannot pass."""
    if "error" in cmb:
        raise AssertionError(f"the guest helper cannot say where its p2pmem buffer is: {cmb['error']}")
    start, size = qemu_bar(vm, provider, cmb["bar"])
    if start != cmb["bar_start"]:
        raise AssertionError(
            f"{provider} BAR{cmb['bar']}: the guest says {cmb['bar_start']:#x}, QEMU maps it at {start:#x}"
        )
    out = bytearray()
    where = []
    for offset, length in cmb["extents"]:
        if not 0 <= offset <= offset + length <= size:
            raise AssertionError(f"p2pmem extent [{offset:#x}, +{length:#x}) outside {provider} BAR{cmb['bar']}")
        dump = vm.plan.run_dir / f"cmb-{provider}-{start + offset:#x}.bin"
        vm.machine.qmp.command("pmemsave", {"val": start + offset, "size": length, "filename": str(dump)})
        try:
            out += dump.read_bytes()
        finally:
            dump.unlink(missing_ok=True)
        where.append(f"{start + offset:#x}+{length:#x}")
    return bytes(out), f"{provider} CMB BAR{cmb['bar']} phys {', '.join(where)}"


# The kernel rate-limits its vIOMMU fault reports (DEFAULT_RATELIMIT_INTERVAL 5 s and BURST
# 10: dmar_fault() shares one limit between the "DRHD: handling fault status" line, each record
# and one unprinted use per interrupt; virtio-iommu and AMD-Vi limit per call site). A DMA that
# must fault and be logged waits until the reports of the last window leave room for its own,
# or its fault would go unlogged and look like silent corruption.
FAULT_LOG_WINDOW_S = 5.5  # the kernel's 5 s and a margin
FAULT_LOG_BURST = 10
FAULT_LOG_NEED = 3  # the status line, a record, the interrupt's unprinted use
FAULT_LOG_SETTLE_S = 0.3  # a report this young may have more of its interrupt still to come
RATE_LIMITED_RE = re.compile(FAULT_RE.pattern + r"|DMAR: (?:\[|DRHD: handling fault)")
TWICE_RE = re.compile(r"DMAR: DRHD: handling fault status")


def fault_log_wait(ages: list[float]) -> float:
    """Seconds to wait before a DMA whose fault must be logged, given one age (seconds, oldest
    first) per use of the rate limit in the last FAULT_LOG_WINDOW_S. Whatever window the kernel
    is in began within that span, so once at most BURST - NEED uses are left in it, it has
    room for this report (or it ends and the next one has)."""
    excess = len(ages) - (FAULT_LOG_BURST - FAULT_LOG_NEED)
    if excess > 0:
        return FAULT_LOG_WINDOW_S - ages[excess - 1]
    if ages and ages[-1] < FAULT_LOG_SETTLE_S:
        return FAULT_LOG_SETTLE_S - ages[-1]
    return 0.0


def fault_window(vm: GuestVM) -> None:
    """Call right before a DMA that must fault and be logged: waits until the kernel's rate
    limit has room for its report, counted from the kernel log (any earlier fault counts,
    whoever caused it). A record of its own dates the look: the DMA that must fault follows."""
    deadline = time.monotonic() + 4 * FAULT_LOG_WINDOW_S
    while True:
        said = vm.agent(
            "kmsg",
            "uses",
            {
                "text": "testbed: a DMA follows whose fault must be logged",
                "seconds": FAULT_LOG_WINDOW_S,
                "pattern": RATE_LIMITED_RE.pattern,
                "twice": TWICE_RE.pattern,
            },
        )
        if not said.get("ok"):
            raise GuestError(f"{vm.machine.name}: cannot count the recent fault reports: {said}")
        wait = fault_log_wait(said["ages"])
        if wait <= 0:
            return
        if time.monotonic() + wait > deadline:
            raise GuestError(
                f"{vm.machine.name}: vIOMMU faults keep being reported ({len(said['ages'])} uses of the rate "
                f"limit in the last {FAULT_LOG_WINDOW_S} s): a fault expected next could not be told from them"
            )
        time.sleep(wait)


# One vIOMMU fault report of a device, with the address it names (drivers/iommu/intel/dmar.c,
# virtio-iommu.c, amd/iommu.c): intel names the device by segment:bus:dev.fn, virtio-iommu by
# endpoint (requester) ID, AMD-Vi by bus:dev.fn.
DMAR_FAULT_RE = re.compile(
    r"DMAR: \[DMA (?:Read|Write)[^\]]*\] Request device \[(?P<dev>[0-9a-f:.]+)\] fault addr 0x(?P<addr>[0-9a-f]+)"
)
VIOMMU_FAULT_RE = re.compile(r"virtio_iommu.* fault from EP (?P<ep>\d+)(?: at 0x(?P<addr>[0-9a-f]+))?")
AMD_FAULT_RE = re.compile(r"IO_PAGE_FAULT.*?device=(?P<dev>[0-9a-f:.]+).*?address=0x(?P<addr>[0-9a-f]+)")


def requester_id(bdf: str) -> int:
    """The PCI requester ID of "0000:bb:dd.f" (what virtio-iommu calls the endpoint)."""
    bus, devfn = bdf.split(":")[-2:]
    dev, fn = devfn.split(".")
    return int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn)


def dma_fault_lines(lines: list[str], bdf: str, addr: int, size: int) -> list[str]:
    """The vIOMMU fault lines naming device `bdf` and a page of [addr, addr + size)."""
    pages = range(addr >> 12, ((addr + size - 1) >> 12) + 1)

    def hits(found: str | None) -> bool:
        return found is None or int(found, 16) >> 12 in pages

    out = []
    for line in lines:
        m = DMAR_FAULT_RE.search(line)
        if m and m["dev"] == bdf and hits(m["addr"]):
            out.append(line)
            continue
        m = VIOMMU_FAULT_RE.search(line)
        if m and int(m["ep"]) == requester_id(bdf) and hits(m["addr"]):
            out.append(line)
            continue
        m = AMD_FAULT_RE.search(line)
        if m and bdf.endswith(m["dev"]) and hits(m["addr"]):
            out.append(line)
    return out


FAULT_LOG_WAIT_S = 10.0  # the fault is reported by an interrupt, maybe after the DMA "completed"


def await_dma_fault(vm: GuestVM, cursor: int, bdf: str, addr: int, size: int) -> list[str]:
    """The fault lines this one DMA left in the kernel log: records from `cursor` (taken right
    before the DMA) naming the device and the address. A fault of an earlier DMA lies before
    the cursor and cannot count. Waits a little for the fault interrupt; [] if none came."""
    deadline = time.monotonic() + FAULT_LOG_WAIT_S
    while True:
        found = dma_fault_lines(vm.kmsg_since(cursor), bdf, addr, size)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def transfer(
    vm: GuestVM,
    provider: str,
    client: str,
    direction: str,
    size: int,
    offset: int = 0,
    depth: int = 1,
    expect_fault: bool = False,
) -> Transfer:
    """One O_DIRECT transfer between the client's namespace and the provider's p2pmem."""
    if expect_fault:
        fault_window(vm)
    seed = fresh_seed()
    provider_bdf, client_bdf = vm.bdf(provider), vm.bdf(client)
    cursor = vm.kmsg_cursor()
    result = vm.agent(
        "p2pmem",
        "transfer",
        {
            "provider": provider_bdf,
            "client": client_bdf,
            "direction": direction,
            "size": size,
            "offset": offset,
            "seed": seed,
            "depth": depth,
        },
    )
    new = vm.kmsg_since(cursor)
    refused = tuple(line for line in new if refuses(line, provider_bdf, client_bdf))
    guest_ok = bool(result.get("ok")) and result.get("mismatch") == -1
    host_ok, where, landed = None, "", 0
    want = pattern(seed, size)
    got: bytes | None = None
    cmb = result.get("cmb") or {}
    if result.get("ok") and "error" in cmb:
        host_ok, where = False, str(cmb["error"])  # not P2P at all: the buffer is not in the CMB
    elif result.get("ok") and direction == "from_p2pmem":
        got = host_file_bytes(vm, client, offset, size)
        where = f"{client} backing file @{offset:#x}"
    elif result.get("ok") and direction == "to_p2pmem":
        # the helper poisoned the buffer before the peer's DMA: only the DMA can have put the
        # pattern there, and nothing allocates from the pool between the helper's exit and now
        got, where = host_cmb_bytes(vm, provider, cmb)
    if got is not None:
        got = got[:size]
        host_ok = first_mismatch(got, want) == -1
        landed = sum(got[i : i + BLOCK] == want[i : i + BLOCK] for i in range(0, size, BLOCK))
    faults = _cmb_faults(vm, cursor, new, client_bdf, cmb, wait=bool(result.get("ok")) and not (guest_ok and host_ok))
    return Transfer(direction, size, offset, seed, result, guest_ok, host_ok, faults, refused, where, landed)


def _cmb_faults(vm: GuestVM, cursor: int, lines: list[str], bdf: str, cmb: dict, wait: bool) -> tuple[str, ...]:
    """The vIOMMU fault lines of this transfer: the client's DMA at the CMB buffer's bus address
    (the address a BUS_ADDR mapping hands it; bus and CPU physical are equal on q35). When the
    bytes are wrong the fault may still be on its way (an interrupt after the command completed):
    looked for again until FAULT_LOG_WAIT_S. `bdf`: the client's."""
    extents = [(cmb["bar_start"] + off, length) for off, length in cmb.get("extents", [])] if "bar_start" in cmb else []

    def found(new: list[str]) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(line for addr, length in extents for line in dma_fault_lines(new, bdf, addr, length))
        )

    faults = found(lines)
    deadline = time.monotonic() + FAULT_LOG_WAIT_S
    while wait and extents and not faults and time.monotonic() < deadline:
        time.sleep(0.5)
        faults = found(vm.kmsg_since(cursor))
    return faults
