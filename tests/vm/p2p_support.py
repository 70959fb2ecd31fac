"""Driving one P2P transfer and judging it on both sides (guest CPU and host backing file)."""

from __future__ import annotations

import itertools
import random
import re
import time
from dataclasses import dataclass

from testbed.guest.agent.pattern import first_mismatch, pattern
from testbed.pytest_plugin.guestvm import GuestVM
from testbed.topology.outcome import Outcome, observed_outcome

# A fresh seed for every transfer: the P2P pool hands the same CMB addresses out again, so a
# repeated pattern could make a transfer that moved nothing look right.
_seeds = itertools.count(random.SystemRandom().randrange(1 << 40))
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
    host_bytes_ok: bool | None  # None: nothing lands in a host file for this direction
    fault_lines: tuple[str, ...]
    refused_lines: tuple[str, ...]

    @property
    def outcome(self) -> Outcome:
        bytes_ok = self.guest_bytes_ok and self.host_bytes_ok is not False
        return observed_outcome(self.result, bytes_ok, bool(self.fault_lines))

    def describe(self) -> str:
        host = {None: "n/a", True: "match", False: "MISMATCH"}[self.host_bytes_ok]
        extra = f" fault: {self.fault_lines[0]}" if self.fault_lines else ""
        return (
            f"{self.direction} {self.size}B @{self.offset} seed {self.seed}: {self.outcome.value}"
            f" (guest bytes {'match' if self.guest_bytes_ok else 'MISMATCH'}, host file {host},"
            f" helper {self.result}){extra}"
        )


def host_file_bytes(vm: GuestVM, endpoint: str, offset: int, size: int) -> bytes:
    with open(vm.backing_file(endpoint), "rb") as f:
        f.seek(offset)
        return f.read(size)


# The kernel rate-limits vIOMMU fault messages (dmar_fault(), viommu: 10 per 5 s). A
# transfer expected to fault waits until the window of the previous one has passed, or its
# fault would go unlogged and look like silent corruption.
FAULT_LOG_WINDOW_S = 5.5
_last_fault: dict[str, float] = {}  # per VM: the limit is the guest kernel's


def _await_fault_window(vm: GuestVM) -> None:
    last = _last_fault.get(vm.machine.name)
    if last is not None:
        wait = FAULT_LOG_WINDOW_S - (time.monotonic() - last)
        if wait > 0:
            time.sleep(wait)


def fault_window(vm: GuestVM) -> None:
    """Call right before a DMA that must fault and be logged: waits out the previous fault's
    rate-limit window, then opens this one."""
    _await_fault_window(vm)
    _last_fault[vm.machine.name] = time.monotonic()


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
        _await_fault_window(vm)
    seed = fresh_seed()
    cursor = vm.kmsg_cursor()
    result = vm.agent(
        "p2pmem",
        "transfer",
        {
            "provider": vm.bdf(provider),
            "client": vm.bdf(client),
            "direction": direction,
            "size": size,
            "offset": offset,
            "seed": seed,
            "depth": depth,
        },
    )
    new = vm.kmsg_since(cursor)
    client_bus = vm.bdf(client)[5:]  # "04:00.0" as DMAR prints it
    faults = tuple(line for line in new if FAULT_RE.search(line) and (client_bus in line or "virtio_iommu" in line))
    refused = tuple(line for line in new if REFUSED_TEXT in line)
    if faults or expect_fault:
        _last_fault[vm.machine.name] = time.monotonic()
    guest_ok = bool(result.get("ok")) and result.get("mismatch") == -1
    host_ok = None
    if result.get("ok") and direction == "from_p2pmem":
        got = host_file_bytes(vm, client, offset, size)
        host_ok = first_mismatch(got, pattern(seed, size)) == -1
    return Transfer(direction, size, offset, seed, result, guest_ok, host_ok, faults, refused)
