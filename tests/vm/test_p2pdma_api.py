"""The kernel-side probe (testbed/probe/kmod): the kernel's own P2PDMA answers, seen at the source.

census  every (endpoint with an MMIO BAR, endpoint) pair of the booted topology: the map type
        calc_map_type_and_dist() returned (a kretprobe) and pci_p2pdma_distance_many()'s
        answer, held against `testbed explain`. Any topology: `--topology FILE` runs it there.
branch  every provider the harness can export through VFIO (ivshmem BAR2, edu BAR0) and every
        other endpoint as the client: which branch the exporter's map_dma_buf took (bus address,
        IOVA linked in the client's IOMMU domain, dma_map_phys(), refusal) on a real attachment.
import  the probe as a dynamic, revocable peer2peer importer for edu (bound to the probe): map
        the ivshmem dma-buf, let edu write the returned address, check the bytes on the host.
revoke  clearing MEMORY, closing the exporter's fd, device_del (pciehp, ACPI): invalidate_mappings
        runs (while the exporter's driver unbinds, before its device goes), the probe unmaps, a
        new map fails, edu's DMA to the old address does not land. VFIO reset revokes and
        restores: the mapping is dropped, a new one works.
iova    the two-step DMA API on edu: alloc, link RAM and the peer's MMIO, sync, translation,
        DMA, unlink, destroy, a request beyond the mask declined, no IOVA leaked over repeats.

Every probe ioctl prints one KTAP document; the case this test checks is found by name and its
kernel log lines go into the failure message.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import pytest

from testbed.guestvm import start_background
from testbed.guestvm.p2p import FAULT_RE, await_dma_fault, dma_fault_lines, fault_window, fresh_seed
from testbed.in_guest.pattern import pattern
from testbed.kernel.upstream_fixes import KernelBug
from testbed.logs.ktap import KtapCase, KtapReport, Status, parse_ktap
from testbed.pytest_plugin.report import CensusRow
from testbed.topology import reliance as R
from testbed.topology import shipped_names
from testbed.topology.model import EndpointKind, HotplugMode, IommuMode, IommuType, MapType, Topology
from testbed.topology.needs import ANY, Need, vfio_pair
from testbed.topology.oracle import Verdict, verdict

from .test_vfio import Guest, bar_bytes

pytestmark = [pytest.mark.p2pdma_api]

SHIPPED = tuple(shipped_names())
# (kind, BAR) the harness can export through VFIO without taking a device from a kernel driver
EXPORTABLE = {EndpointKind.IVSHMEM: 2, EndpointKind.EDU: 0}
PCI_COMMAND_MEMORY = 0x2
MiB = 1 << 20
DMA_SIZE = 3000  # below edu's 4096-byte limit, crossing no page of interest
DMA_OFFSET = 0x2345  # into the ivshmem BAR: not page aligned, not at the start
# the cases' offsets and the 1 MiB import are written for a 1 MiB ivshmem BAR2
PEERS = vfio_pair(bar_size=MiB)
# importing, writing and revoking need a pair the kernel maps and QEMU delivers: on vfio-dmabuf
# the kernel rightly refuses the pair, and a revoke test there would be a false red
MAPPED_PEERS = vfio_pair(bar_size=MiB, lands=True)
# and a revoke test that asserts the old address now faults needs the DMA to go through a
# translating IOMMU (THRU_HOST_BRIDGE): a BUS_ADDR pair routed inside a switch never meets it
FAULTING_PEERS = vfio_pair(bar_size=MiB, lands=True, translating=True, via_iommu=True)
# a reset of the exporter (VFIO_DEVICE_RESET: ivshmem has no FLR, so a bus reset; hot reset) takes
# its slot: alone there, it takes nothing else (not the edu) and no other owner must agree
RESETTABLE_PEERS = vfio_pair(bar_size=MiB, lands=True, alone=True)
IMPORT_TOPOLOGIES = (
    "p2pdma-switch",
    "p2pdma-switch-iommu",
    "p2pdma-thru-iommu",
    "p2pdma-thru-virtio-iommu",
    "p2pdma-host-bridges",
    "vfio-dmabuf",
)


# -- what the kernel said ------------------------------------------------------------------------


def _plugged(topo: Topology):
    return [ep for ep in topo.endpoints if ep.plugged]


def map_cases(topo: Topology) -> list[tuple[str, tuple[str, str]]]:
    eps = _plugged(topo)  # every endpoint kind the testbed knows has an MMIO BAR
    return [(f"map-{p.id}-{c.id}", (p.id, c.id)) for p in eps for c in eps]


def branch_cases(topo: Topology) -> list[tuple[str, tuple[str, str]]]:
    """VFIO's cdev needs an IOMMU group to export (its no-IOMMU mode, through the legacy group,
    has a case of its own: test_vfio_without_an_iommu_exports_and_revokes)."""
    if topo.iommu.type is IommuType.NONE:
        return []
    eps = _plugged(topo)
    return [(f"branch-{p.id}-{c.id}", (p.id, c.id)) for p in eps if p.kind in EXPORTABLE for c in eps if c.id != p.id]


def census_cases(topo: Topology, config: pytest.Config) -> list[tuple[str, tuple[str, str, str]]]:
    """One case per pair and question, so JUnit names say which part failed."""
    return [(name, ("map", *pair)) for name, pair in map_cases(topo)] + [
        (name, ("branch", *pair)) for name, pair in branch_cases(topo)
    ]


def oracle(vm, provider: str, client: str) -> Verdict:
    """What `testbed explain` says of this pair (any two devices, not only declared providers)."""
    return verdict(vm.topology, vm.layout, provider, client)


def translated(topo: Topology) -> bool:
    return topo.iommu.type is not IommuType.NONE and topo.iommu.mode is IommuMode.TRANSLATED


def expected_branch(topo: Topology, verdict: Verdict) -> str:
    """dma_buf_phys_vec_to_sgt() in Linux 7.2: refuse, bus address, or an IOVA when the client's
    domain translates (dma_iova_try_alloc succeeds), else dma_map_phys()'s physical address."""
    if verdict.map_type is MapType.NOT_SUPPORTED:
        return "none"
    if verdict.map_type is MapType.BUS_ADDR:
        return "bus_addr"
    return "iova" if translated(topo) else "phys"


def find_case(reports: list[KtapReport], name: str) -> KtapCase | None:
    for report in reports:
        for _, case in report.walk():
            if case.name == name:
                return case
    return None


def diag(case: KtapCase, prefix: str) -> dict[str, str]:
    """key=value pairs of the case's diagnostics that start with `prefix:`."""
    out: dict[str, str] = {}
    for line in case.diagnostics:
        if line.startswith(prefix + ":"):
            out.update(re.findall(r"(\w+)=(\S+)", line))
    return out


def case_log(case: KtapCase) -> str:
    return "kernel log of the case:\n  " + "\n  ".join(case.log)


def _run_once(probe_runs: dict, key: tuple, vm, fn):
    full = (*key, vm.machine.name)
    if full not in probe_runs:
        vm.load_probe()
        out = fn()
        assert "ktap" in out, f"the probe's guest helper failed: {out}"
        (vm.plan.run_dir / f"probe-{'-'.join(key)}.ktap").write_text("\n".join(out["ktap"]) + "\n")
        probe_runs[full] = (out, parse_ktap(out["ktap"]))
    return probe_runs[full]


@pytest.fixture(scope="session")
def probe_runs() -> dict:
    """One census (and one branch run per provider) per booted VM, shared by its cases."""
    return {}


# -- census ----------------------------------------------------------------------------------------


@pytest.mark.topology(*SHIPPED, needs=ANY, cases=census_cases)
def test_census(vm, topology_case, probe_runs, census_table):
    """map-P-C: the kernel's map type and distance for the pair equal `testbed explain`'s.
    branch-P-C: a real VFIO dma-buf attachment for C takes the branch that map type implies."""
    part, provider, client = topology_case
    if part == "branch":
        check_branch(vm, provider, client, probe_runs, census_table)
        return
    out, reports = _run_once(probe_runs, ("census",), vm, lambda: vm.agent("probe", "census", {}))
    assert out["map_type_observed"], "calc_map_type_and_dist() could not be probed in this kernel"
    name = f"census_{vm.bdf(provider)}_{vm.bdf(client)}"
    case = find_case(reports, name)
    assert case is not None, f"the probe reported no case {name}; its KTAP: {vm.plan.run_dir}"
    kernel = diag(case, "census")
    verdict = oracle(vm, provider, client)
    distance = verdict.distance if verdict.p2p_allowed else -1  # distance_many: -1 when refused
    census_table.add(
        CensusRow(
            vm.topology.name,
            "map",
            provider,
            client,
            f"{kernel.get('map_type')} {kernel.get('distance')}",
            f"{verdict.map_type.value} {distance}",
            verdict.reason,
        )
    )
    assert case.status is Status.PASS, f"the probe's own check failed\n{case_log(case)}"
    assert (kernel.get("map_type"), int(kernel.get("distance", "-99"))) == (verdict.map_type.value, distance), (
        f"{provider} -> {client}: kernel says {kernel.get('map_type')} distance {kernel.get('distance')}, "
        f"testbed explain says {verdict.map_type.value} distance {distance}: {verdict.reason}\n{case_log(case)}"
    )


# -- branch (part of the census) --------------------------------------------------------------


def check_branch(vm, provider: str, client: str, probe_runs: dict, census_table) -> None:
    bar = EXPORTABLE[vm.topology.endpoint(provider).kind]
    clients = [vm.bdf(c) for p, c in (case for _, case in branch_cases(vm.topology)) if p == provider]
    out, reports = _run_once(
        probe_runs,
        ("branch", provider),
        vm,
        lambda: vm.agent(
            "probe", "branch", {"provider": vm.bdf(provider), "bar": bar, "clients": clients}, timeout=120
        ),
    )
    result = out["results"].get(vm.bdf(client), {})
    name = f"branch_{vm.bdf(provider)}_{vm.bdf(client)}"
    case = find_case(reports, name)
    assert case is not None, f"the probe reported no case {name}: {result}; its KTAP: {vm.plan.run_dir}"
    verdict = oracle(vm, provider, client)
    want = expected_branch(vm.topology, verdict)
    census_table.add(
        CensusRow(
            vm.topology.name,
            "branch",
            provider,
            client,
            f"{result.get('map_type')}/{result.get('branch')}",
            f"{verdict.map_type.value}/{want}",
            verdict.reason,
        )
    )
    assert case.status is Status.PASS, f"the probe found the mapping inconsistent: {result}\n{case_log(case)}"
    assert result["attach_error"] == 0, f"a peer2peer, revocable importer was refused: {result}"
    assert result["branch_observed"], "the probe could not watch dma_iova_link()/dma_map_phys() in this kernel"
    assert (result["map_type"], result["branch"]) == (verdict.map_type.value, want), (
        f"{provider} -> {client}: map_dma_buf took {result['map_type']}/{result['branch']}, expected "
        f"{verdict.map_type.value}/{want}: {verdict.reason}\n{case_log(case)}"
    )
    if want == "none":
        assert result["map_error"] == -errno.EINVAL, result
    else:
        assert result["dma_len"] > 0 and result["nents"] >= 1, result


# -- the importer's data path ------------------------------------------------------------------------


class Importer:
    """edu bound to the probe; ivshmem exported by a `vfio.py serve` session; the probe imports."""

    def __init__(
        self,
        vm,
        roles,
        req: bool = False,
        close_on_req: bool = False,
        defer_unmap_ms: int = 0,
        ranges: tuple[tuple[int, int], ...] = ((0, MiB),),
        check: bool = True,
        dma_bits: int = 0,
        noiommu: bool = False,
        sg_pick: tuple[int, ...] = (),
    ):
        self.vm, self.roles = vm, roles
        self.edu, self.shm = vm.bdf(roles.dma), vm.bdf(roles.exporter)
        vm.load_probe()
        bound = vm.agent("probe", "bind", {"bdf": self.edu, "driver": "p2pdma_probe"})
        assert bound["ok"], bound
        self.guest = Guest(vm, roles.exporter, None, req=req, close_on_req=close_on_req, noiommu=noiommu)
        self.buf = self.guest.ok("export", ranges=[list(r) for r in ranges])["buf"]
        self.imp = (self.guest.ok if check else self.guest.call)(
            "probe_import",
            buf=self.buf,
            client=self.edu,
            provider=self.shm,
            bar=2,
            offset=0,
            name=f"import_{roles.exporter}_{roles.dma}",
            hold=True,
            defer_unmap_ms=defer_unmap_ms,
            dma_bits=dma_bits,
            sg_pick=list(sg_pick),
        )

    def dma(self, addr: int, name: str, faults: bool = False) -> tuple[bytes, bytes, bytes]:
        """A fresh pattern from edu to addr: (pattern, BAR before, BAR after), read on the host.
        The DMA is proven issued: probe.py checks edu's own registers (a sentinel replaced by
        this DMA's address and length, RUN clear), and the probe logs it in this DMA's window of
        the kernel log. `faults`: this DMA must leave a vIOMMU fault line of its own in that
        window (an earlier DMA's fault lies before the cursor and cannot count)."""
        seed = fresh_seed()
        before = bar_bytes(self.vm, self.roles.exporter)
        if faults:
            fault_window(self.vm)
        cursor = self.vm.kmsg_cursor()
        r = self.guest.call("probe_dma", client=self.edu, addr=addr, seed=seed, size=DMA_SIZE, name=name)
        assert r.get("error") == 0, f"edu did not complete the DMA to {addr:#x}: {r}"
        after = bar_bytes(self.vm, self.roles.exporter)
        issued = f"# {name}: {self.edu} wrote {DMA_SIZE} bytes to {addr:#x}: 0"
        assert issued in self.vm.kmsg_since(cursor), f"the probe did not log this DMA ({issued!r})"
        if faults:
            lines = await_dma_fault(self.vm, cursor, self.edu, addr, DMA_SIZE)
            assert lines, (
                f"edu's DMA to {addr:#x} ({name}) logged no fault of its own; kernel log since "
                f"the DMA: {self.vm.kmsg_since(cursor)[-10:]}"
            )
        return pattern(seed, DMA_SIZE), before, after

    def state(self, what: str = "state") -> dict:
        return self.guest.ok(
            "probe_state", id=self.imp["id"], what=what, name=f"{what}_{self.roles.exporter}_{self.roles.dma}"
        )

    def close(self) -> None:
        """Leave the shared VM as found: no import, edu and ivshmem bound to no driver."""
        if self.imp.get("id"):
            self.state("release")
        self.guest.quit()
        for bdf in (self.edu, self.shm):
            if self.vm.lists(bdf):
                self.vm.agent("probe", "bind", {"bdf": bdf, "driver": None})


def assert_lands(before: bytes, after: bytes, want: bytes, offset: int) -> None:
    assert after[offset : offset + len(want)] == want, f"the pattern is not in the BAR at {offset:#x} (host file)"
    assert after[:offset] + after[offset + len(want) :] == before[:offset] + before[offset + len(want) :], (
        "bytes outside the DMA's range changed"
    )


@contextmanager
def exporting(vm, roles, ranges, region: int = 2, restore: str | None = None) -> Iterator[tuple[Guest, int, str, str]]:
    """edu bound to the probe and the exporter's BAR `region` exported as `ranges` by a VFIO
    session: (session, dma-buf, edu's BDF, exporter's BDF). Afterwards edu has no driver and the
    exporter `restore` (None: none)."""
    vm.load_probe()
    edu, exporter = vm.bdf(roles.dma), vm.bdf(roles.exporter)
    assert vm.agent("probe", "bind", {"bdf": edu, "driver": "p2pdma_probe"})["ok"]
    try:
        with Guest(vm, roles.exporter, None) as g:
            buf = g.ok("export", ranges=[list(r) for r in ranges], region=region)["buf"]
            yield g, buf, edu, exporter
    finally:
        vm.agent("probe", "bind", {"bdf": edu, "driver": None})
        vm.agent("probe", "bind", {"bdf": exporter, "driver": restore})


@pytest.mark.topology("p2pdma-thru-iommu", matrix=IMPORT_TOPOLOGIES, needs=PEERS)
def test_import_dma(vm, roles, kernel_messages):
    """map_dma_buf for edu: the kernel's branch; edu's write to that address lands on the host (or,
    where QEMU diverges or the kernel refuses, is asserted not to)."""
    verdict = oracle(vm, roles.exporter, roles.dma)
    want = expected_branch(vm.topology, verdict)
    # a refusal is asserted by the map type the kernel returned and the errno, not by its
    # warning: the kernel warns once per pair while the provider caches the pair's map type,
    # and an earlier census in this VM may have filled that cache without a word
    if verdict.divergence:
        kernel_messages.expect(FAULT_RE.pattern, "QEMU sends the bus-address DMA through the vIOMMU")
    imp = Importer(vm, roles)
    try:
        got = imp.imp
        assert (got["map_type"], got["branch"]) == (verdict.map_type.value, want), (got, verdict.reason)
        if want == "none":
            assert got["map_error"] == -errno.EINVAL and not got["id"], got
            return
        assert got["dma_len"] == MiB, got
        want_bytes, before, after = imp.dma(got["dma_addr"] + DMA_OFFSET, "import_dma", faults=bool(verdict.divergence))
        if verdict.divergence:
            assert after == before, f"declared divergence: the DMA to bus address {got['dma_addr']:#x} should fault"
        else:
            assert_lands(before, after, want_bytes, DMA_OFFSET)
    finally:
        imp.close()


# -- revoke ----------------------------------------------------------------------------------------------


def _revoked(imp: Importer) -> None:
    st = imp.state()
    assert st["invalidations"] >= 1 and st["invalidate_seq"] > 0, f"invalidate_mappings never ran: {st}"
    assert not st["mapped"], f"the probe still holds a mapping after invalidate_mappings: {st}"
    remap = imp.state("remap")
    assert remap["error"] == -errno.ENODEV, f"a new map of the revoked dma-buf: {remap}"
    want, before, after = imp.dma(imp.imp["dma_addr"] + DMA_OFFSET, "after_revoke", faults=True)
    assert after == before, "edu's DMA to the revoked address changed the BAR (host file)"


REVOKES = {"memory": ("command", {"clear": PCI_COMMAND_MEMORY}), "close": ("close_exporter", {})}


@pytest.mark.parametrize("how", list(REVOKES))
@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=FAULTING_PEERS)
def test_revoke(vm, roles, how, kernel_messages):
    """Each revoke reaches the probe's invalidate_mappings; the address stops working."""
    kernel_messages.expect(FAULT_RE.pattern, "edu writes the revoked IOVA")
    imp = Importer(vm, roles)
    try:
        want, before, after = imp.dma(imp.imp["dma_addr"] + DMA_OFFSET, "before_revoke")
        assert_lands(before, after, want, DMA_OFFSET)
        op, args = REVOKES[how]
        imp.guest.ok(op, **args)
        _revoked(imp)
    finally:
        imp.close()


BUFINFO = "/sys/kernel/debug/dma_buf/bufinfo"
VFIO_EXPORTER = "vfio_pci_core"  # the exp_name of VFIO's dma-bufs (its module's KBUILD_MODNAME)


def _vfio_dma_bufs(vm) -> set[str]:
    """The inode numbers of the dma-bufs VFIO exported that still exist (debugfs bufinfo: size,
    flags, mode, file count, exp_name, ino, name per object)."""
    text = vm.run(f"cat {BUFINFO}", check=True).stdout
    rows = [line.split("\t") for line in text.splitlines()]
    return {row[5] for row in rows if len(row) >= 6 and row[4].strip() == VFIO_EXPORTER}


@pytest.mark.parametrize("first", ["exporter", "importer"])
@pytest.mark.topology("p2pdma-thru-iommu", needs=MAPPED_PEERS)
def test_an_export_is_released_once_everyone_has_let_go(vm, roles, first):
    """The dma-buf goes away (its release runs, debugfs no longer lists it) once the exporter's
    device fd, the importer and the dma-buf fd are all closed, whichever goes first. Closing the
    exporter first runs vfio_pci_dma_buf_cleanup() on a dma-buf still in use: it takes the file
    (get_file_active()) to revoke and detach it and must put it back, or the dma-buf, its
    ranges and its hold on the VFIO device's registration stay for good (a mutant without that
    fput() survived every other test)."""
    before = _vfio_dma_bufs(vm)
    imp = Importer(vm, roles)
    try:
        exported = _vfio_dma_bufs(vm) - before
        assert len(exported) == 1, f"debugfs lists {len(exported)} new VFIO dma-buf(s), not the one exported"
        if first == "exporter":
            imp.guest.ok("close_exporter")  # the device fd: vfio_pci_dma_buf_cleanup()
            _revoked(imp)
    finally:
        imp.close()  # the import released, the session (and its dma-buf fd) gone
    left = _vfio_dma_bufs(vm) & exported
    assert not left, f"the dma-buf (inode {', '.join(sorted(left))}) outlived everyone who held it ({BUFINFO})"


def _lazy_pair(topo: Topology, layout) -> dict[str, str] | None:
    return FAULTING_PEERS.find(topo, layout) if not topo.iommu.strict else None


LAZY_PEERS = Need(
    FAULTING_PEERS.text + ", the IOMMU asked for lazy IOTLB flushes (iommu.strict=0)",
    _lazy_pair,
    (*FAULTING_PEERS.relies, R.Reliance("the topology asks for lazy flushes", lambda t, r: not t.iommu.strict)),
)


@pytest.mark.topology(
    "p2pdma-thru-iommu.iommu-virtio-lazy", "p2pdma-thru-iommu.iommu-intel-lazy", needs=LAZY_PEERS
)  # fmt: skip
def test_a_lazy_iommu_still_ends_the_dma_at_revoke(vm, roles, kernel_messages):
    """iommu.strict=0: an unmap's IOTLB flush (intel-iommu: QEMU's IOTLB cache; virtio-iommu:
    the UNMAP request, not kicked until the sync) is queued and done by the flush queue within
    its 10 ms timeout; the edu's domain is DMA-FQ. Once MEMORY is cleared the probe's mapping is
    gone and edu's DMA to the old IOVA faults without changing the BAR (host file). The
    measured answer for QEMU's edu: it starts a DMA 100 ms after RUN, ten flush-queue
    timeouts, so the stale window of a lazy flush has always closed by then; a DMA engine that
    starts at once could still write through it, and no emulated device here does."""
    kernel_messages.expect(FAULT_RE.pattern, "edu writes the revoked IOVA")
    got = vm.run(f"cat /sys/bus/pci/devices/{vm.bdf(roles.dma)}/iommu_group/type", check=True).stdout.strip()
    assert got == "DMA-FQ", f"the edu's IOMMU domain under iommu.strict=0 is {got}, not DMA-FQ (lazy)"
    boot = vm.machine.console_log.read_text(errors="replace")
    assert "DMA domain TLB invalidation policy: lazy mode" in boot, "the kernel did not take iommu.strict=0"
    imp = Importer(vm, roles)
    try:
        want_bytes, before, after = imp.dma(imp.imp["dma_addr"] + DMA_OFFSET, "before_lazy_revoke")
        assert_lands(before, after, want_bytes, DMA_OFFSET)
        imp.guest.ok("command", clear=PCI_COMMAND_MEMORY)
        _revoked(imp)
    finally:
        imp.close()


def _no_iommu_pair(topo: Topology, layout) -> dict[str, str] | None:
    return NO_IOMMU_PAIR.find(topo, layout) if topo.iommu.type is IommuType.NONE else None


NO_IOMMU_PAIR = vfio_pair(bar_size=MiB, lands=True, iommu=False)
NO_IOMMU_PEERS = Need(
    NO_IOMMU_PAIR.text + ", no IOMMU (VFIO's no-IOMMU mode)",
    _no_iommu_pair,
    (*NO_IOMMU_PAIR.relies, R.Reliance("there is no IOMMU", lambda t, r: t.iommu.type is IommuType.NONE)),
)


@pytest.mark.topology("p2pdma-no-iommu", needs=NO_IOMMU_PEERS)
def test_vfio_without_an_iommu_exports_and_revokes(vm, roles):
    """VFIO's no-IOMMU mode (vfio.enable_unsafe_noiommu_mode; 7.2's cdev has none, so the
    legacy group in a VFIO_NOIOMMU_IOMMU container): the ivshmem's BAR is exported and the
    probe imports it for edu with dma-direct, the kernel's map type and branch as the oracle
    says, and edu's DMA lands (host file). Clearing MEMORY revokes: invalidate_mappings runs,
    the probe unmaps, a new map is refused, and edu's DMA to the old address changes nothing
    (the BAR no longer decodes; no IOMMU stands between them, so only the importer's unmap
    and the exporter's decode end it)."""
    verdict = oracle(vm, roles.exporter, roles.dma)
    want = expected_branch(vm.topology, verdict)
    imp = Importer(vm, roles, noiommu=True)
    try:
        assert imp.guest.opened["noiommu_group"], f"the exporter was not opened in no-IOMMU mode: {imp.guest.opened}"
        got = imp.imp
        assert (got["map_type"], got["branch"]) == (verdict.map_type.value, want), (got, verdict.reason)
        want_bytes, before, after = imp.dma(got["dma_addr"] + DMA_OFFSET, "noiommu_import")
        assert_lands(before, after, want_bytes, DMA_OFFSET)
        imp.guest.ok("command", clear=PCI_COMMAND_MEMORY)
        st = imp.state()
        assert st["invalidations"] >= 1 and not st["mapped"], f"the revoke never reached the importer: {st}"
        remap = imp.state("remap")
        assert remap["error"] == -errno.ENODEV, f"a new map of the revoked dma-buf: {remap}"
        _, before, after = imp.dma(got["dma_addr"] + DMA_OFFSET, "noiommu_after_revoke")
        assert after == before, "edu's DMA to the revoked address changed the BAR (host file)"
    finally:
        imp.close()


DEFER_MS = 400  # the deferred importer's unmap, well above a revoke's own time under TCG
REVOKERS = {**REVOKES, "reset": ("reset", {}), "hot_reset": ("hot_reset", {})}


@pytest.mark.parametrize("how", list(REVOKERS))
@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=RESETTABLE_PEERS)
def test_revoke_waits_for_a_deferred_unmap(vm, roles, how):
    """An importer with DMA in flight unmaps some time after invalidate_mappings (the probe's
    deferred mode: a work item DEFER_MS later). The revoking operation (MEMORY cleared, the
    exporter's fd closed, VFIO_DEVICE_RESET) must return only after that unmap:
    vfio_pci_dma_buf_move() drops its kref and waits for the completion the last unmap
    signals. A kernel that stopped waiting returns at once and fails here; with an importer
    that unmaps inside invalidate_mappings no test could tell."""
    imp = Importer(vm, roles, defer_unmap_ms=DEFER_MS)
    try:
        op, args = REVOKERS[how]
        done = imp.guest.ok(op, **args)
        st = imp.state()
        assert st["invalidate_ns"], f"{op} never reached invalidate_mappings: {st}"
        assert st["unmap_ns"], (
            f"{op} returned while the importer still held its mapping (its unmap was due {DEFER_MS} ms after "
            f"invalidate_mappings): the exporter did not wait for its importers ({st})"
        )
        assert st["unmap_ns"] - st["invalidate_ns"] >= DEFER_MS * 1_000_000, f"the unmap was not deferred: {st}"
        assert done["t1_ns"] >= st["unmap_ns"], (
            f"{op} returned {(st['unmap_ns'] - done['t1_ns']) / 1e6:.0f} ms before the importer unmapped: "
            f"the exporter did not wait for its importers ({st})"
        )
        took_ms = (done["t1_ns"] - done["t0_ns"]) / 1e6
        assert took_ms >= DEFER_MS, f"{op} took {took_ms:.0f} ms, less than the importer's {DEFER_MS} ms"
        assert not st["mapped"], f"still mapped after the revoke: {st}"
    finally:
        imp.close()


def _narrow_edu(topo: Topology, layout) -> dict[str, str] | None:
    edus = [ep for ep in topo.endpoints if ep.kind is EndpointKind.EDU and ep.plugged]
    narrow = [ep for ep in edus if ep.dma_mask is None or ep.dma_mask < (1 << 64) - 1]
    return {"dma": narrow[0].id} if narrow else None


NARROW_EDU = Need(
    "an edu whose dma_mask is narrower than 64 bits (QEMU's default: 28)",
    _narrow_edu,
    (R.kind("dma", EndpointKind.EDU), R.narrow_mask("dma")),
)


@pytest.mark.topology("vfio-dmabuf", needs=NARROW_EDU)
def test_a_dma_beyond_the_edus_mask_is_refused(vm, roles):
    """QEMU's edu drops the address bits above its dma_mask: a write to 1 << bits would land at
    a truncated address while edu's registers say it was issued. The probe refuses every
    transfer that does not fit below the mask (-ERANGE), the last byte included; before, it
    reported such a DMA issued (error 0) and QEMU wrote it at the truncated address."""
    edu, bits = vm.bdf(roles.dma), vm.edu_dma_bits()
    vm.load_probe()
    assert vm.agent("probe", "bind", {"bdf": edu, "driver": "p2pdma_probe"})["ok"]
    try:
        for addr, size in (((1 << bits), 64), ((1 << bits) - 32, 64), ((1 << 63) + 0x1000, 64)):
            r = vm.agent("probe", "dma", {"client": edu, "addr": addr, "size": size, "name": "beyond_mask"})
            assert r["error"] == -errno.ERANGE, f"{size} B to {addr:#x} with a {bits}-bit edu: {r}"
    finally:
        vm.agent("probe", "bind", {"bdf": edu, "driver": None})


NARROW_BITS = 28  # QEMU's edu default: far below any MMIO address of a q35 machine
MASK_TOPOLOGIES = ("p2pdma-switch", "p2pdma-thru-iommu")


@pytest.mark.topology("p2pdma-host-bridges", matrix=MASK_TOPOLOGIES, needs=MAPPED_PEERS)
def test_a_client_mask_narrower_than_the_bar(fresh_vm, roles, kernel_messages):
    """An importer whose DMA mask cannot reach the exporter's BAR (edu narrowed to 28 bits for
    the import; the BAR sits in the 32- or 64-bit MMIO window). What Linux 7.2 does, per branch
    of dma_buf_phys_vec_to_sgt():
      bus address  pci_p2pdma_bus_addr_map() checks no mask: the map succeeds and hands back the
                   BAR's bus address, beyond the mask, with no error (the importer cannot use it);
      dma_map_phys dma_direct_map_phys() refuses it (DMA_MAPPING_ERROR -> -ENOMEM) with a
                   dev_WARN_ONCE "DMA addr ... overflow" that an importer reaches through a VFIO
                   export (a fresh VM: the WARN fires once per boot);
      IOVA         the IOVA is allocated below the mask: the map works and fits it.
    Recorded as it is, so a series that changes any of the three shows up here."""
    vm = fresh_vm
    verdict = oracle(vm, roles.exporter, roles.dma)
    want = expected_branch(vm.topology, verdict)
    mask = (1 << NARROW_BITS) - 1
    if want == "phys":
        kernel_messages.expect_splat(
            "WARNING in dma_map_phys",
            rf"DMA addr 0x[0-9a-f]+\+{MiB} overflow \(mask {mask:x},",
            "dma_direct_map_phys() of a BAR beyond the client's mask: 7.2 WARNs, reachable by an importer",
        )
    with exporting(vm, roles, ((0, MiB),)) as (g, buf, edu, shm):
        got = g.ok(
            "probe_import", buf=buf, client=edu, provider=shm, bar=2, offset=0, name="import_narrow_mask",
            hold=False, dma_bits=NARROW_BITS,
        )  # fmt: skip
    assert got["attach_error"] == 0 and got["map_type"] == verdict.map_type.value, got
    assert got["bus_addr"] > mask, f"the BAR is within {NARROW_BITS} bits: this case proves nothing ({got})"
    if want == "bus_addr":
        assert got["map_error"] == 0 and got["branch"] == "bus_addr", got
        assert got["dma_addr"] == got["bus_addr"], f"7.2 hands back the bus address unchecked: {got}"
    elif want == "phys":
        assert got["map_error"] == -errno.ENOMEM and got["branch"] == "none", (
            f"7.2's dma_direct_map_phys() refuses an address beyond the mask: {got}"
        )
    else:
        assert got["map_error"] == 0 and got["branch"] == "iova", got
        assert got["dma_addr"] + got["dma_len"] - 1 <= mask, f"an IOVA beyond the client's mask: {got}"


def _remap_lands(imp: Importer, name: str, why: str) -> None:
    """The held import maps again, and edu's DMA through the new mapping lands on the host."""
    remap = imp.state("remap")
    assert remap["error"] == 0 and remap["mapped"], f"{why}: {remap}"
    want, before, after = imp.dma(remap["dma_addr"] + DMA_OFFSET, name)
    assert_lands(before, after, want, DMA_OFFSET)


RANGES = ((0, 64 * 1024), (256 * 1024, 64 * 1024), (768 * 1024, 4096))  # page aligned, gaps between
MULTI_RANGE_LINKED_AT_ZERO = KernelBug(
    "0003-dma-buf-link-each-range-at-its-own-IOVA-offset.patch",
    r"7\.2\.",
    "dma_buf_phys_vec_to_sgt() links every range at IOVA offset 0: the second link fails (-EADDRINUSE)",
)


def _lands_range_by_range(imp: Importer, at: list[tuple[int, int, int]]) -> None:
    """edu's DMA at each DMA address lands at its range's BAR offset and nowhere else (the whole
    BAR, host file). `at`: (DMA address of the range's start, its BAR offset, its size)."""
    for addr, start, size in at:
        offset = (size - DMA_SIZE) // 2  # inside the range, the whole DMA fits
        want, before, after = imp.dma(addr + offset, f"range_at_{start:#x}")
        assert after[start + offset : start + offset + len(want)] == want, (
            f"edu's DMA to {addr + offset:#x} did not land at BAR offset {start + offset:#x}"
        )
        changed = [i for i in range(len(after)) if after[i] != before[i]]
        assert all(start + offset <= i < start + offset + len(want) for i in changed), (
            f"bytes outside the target changed: first at BAR offset {changed[0]:#x}"
        )


def _entries_are_the_ranges(got: dict, ranges, base: int, why: str, picked=None) -> dict[int, tuple[int, int, int]]:
    """One scatterlist entry per range, in order, each of its range's length, as the probe
    reported the entries `picked` (the import's sg_pick; None: the first PROBE_MAX_SG); `base`:
    the BAR's address the entries must carry (bus or CPU physical), 0: any address (an IOVA).
    (DMA address, BAR offset, size) of each reported entry, by its index in the mapping."""
    wanted = list(range(min(len(ranges), PROBE_MAX_SG))) if picked is None else list(picked)
    assert got["nents"] == len(ranges), f"{why}: {got['nents']} entries for {len(ranges)} ranges: {got}"
    assert [entry["index"] for entry in got["entries"]] == wanted, f"{why}: the probe reported other entries: {got}"
    at = {}
    for entry in got["entries"]:
        start, size = ranges[entry["index"]]
        assert entry["len"] == size, f"the entry of the range at {start:#x}: {entry}"
        if base:
            assert entry["addr"] == base + start, f"the range at {start:#x} is not at {base + start:#x}: {entry}"
        at[entry["index"]] = (entry["addr"], start, size)
    return at


MULTI_RANGE_TOPOLOGIES = ("p2pdma-thru-virtio-iommu", "p2pdma-host-bridges", "p2pdma-switch")
PROBE_MAX_SG = 8  # the entries the probe reports one by one (the first ones, or those picked)
# every page of the 1 MiB BAR a range of its own: 256 entries, past the 128 one scatterlist chunk
# holds (SG_MAX_SINGLE_ALLOC on x86-64), so sg_alloc_table() chains; DMA into the ranges on
# both sides of the link and at the ends
PAGES = tuple((i * 4096, 4096) for i in range(MiB // 4096))
RANGE_LAYOUTS = {"gaps": (RANGES, (0, 1, 2)), "chained": (PAGES, (0, 127, 128, 255))}


@pytest.mark.parametrize("layout", list(RANGE_LAYOUTS))
@pytest.mark.topology("p2pdma-thru-iommu", matrix=MULTI_RANGE_TOPOLOGIES, needs=MAPPED_PEERS)
def test_a_multi_range_export_maps_range_by_range(vm, roles, kernel_bug, layout):
    """A dma-buf of several ranges of the BAR, mapped for edu by each branch of
    dma_buf_phys_vec_to_sgt(): three ranges with gaps, or every page a range (256 entries, a
    chained scatterlist). Behind a translating IOMMU through the host bridge the ranges are
    linked one after another into one IOVA allocation (one entry, the total length); with the
    bus address or dma_map_phys() (an identity domain) one entry per range, at the range's own
    bus or physical address. edu's DMA into each range checked lands at that range's BAR offset
    and nowhere else (the whole BAR, host file); the gaps stay untouched."""
    ranges, checked = RANGE_LAYOUTS[layout]
    want = expected_branch(vm.topology, oracle(vm, roles.exporter, roles.dma))
    bug = kernel_bug(vm, MULTI_RANGE_LINKED_AT_ZERO) if want == "iova" else nullcontext()
    imp = Importer(vm, roles, ranges=ranges, check=False, sg_pick=checked)
    try:
        got = imp.imp
        with bug:
            assert got.get("map_error") == 0, f"map_dma_buf of a {len(ranges)}-range export failed: {got}"
        assert got["branch"] == want and got["dma_len"] == sum(size for _, size in ranges), got
        if want == "iova":
            assert got["nents"] == 1, got
            offsets = [sum(size for _, size in ranges[:i]) for i in range(len(ranges))]
            at = [(got["dma_addr"] + o, start, size) for o, (start, size) in zip(offsets, ranges, strict=True)]
        else:
            base = got["bus_addr"] if want == "bus_addr" else got["phys_addr"]
            at = _entries_are_the_ranges(got, ranges, base, f"{want}: one entry per range", checked)
        _lands_range_by_range(imp, [at[i] for i in checked])
    finally:
        imp.close()


# edu's IOVA space narrowed to 1 MiB: pfn 0 is never allocated and the host bridge's legacy VGA
# window (0xa0000-0xbffff) is reserved in every DMA domain, so no size-aligned 640 KiB fits there
# while 256, 256 and 128 KiB fit one after another
SMALL_IOVA_BITS = 20
KiB = 1024
FITS_ONE_BY_ONE = ((0, 256 * KiB), (384 * KiB, 256 * KiB), (768 * KiB, 128 * KiB))
# ... and here the last range no longer fits once the first two are mapped
LAST_DOES_NOT_FIT = ((0, 256 * KiB), (256 * KiB, 256 * KiB), (512 * KiB, 512 * KiB))


@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=FAULTING_PEERS)
def test_a_too_small_iova_space_maps_range_by_range(vm, roles):
    """edu's DMA mask narrowed to 20 bits for the map: dma_iova_try_alloc() cannot place the
    whole 640 KiB export below it and declines, and dma_buf_phys_vec_to_sgt() falls back to
    dma_map_phys() per range: three entries, each an IOVA below the mask that the client's
    domain translates to its range, and edu's DMA into each lands there (host file)."""
    imp = Importer(vm, roles, ranges=FITS_ONE_BY_ONE, check=False, dma_bits=SMALL_IOVA_BITS)
    try:
        got = imp.imp
        assert got.get("map_error") == 0 and got["branch"] == "phys", (
            f"no range-by-range fallback when the IOVA space cannot hold the export: {got}"
        )
        at = _entries_are_the_ranges(got, FITS_ONE_BY_ONE, 0, "dma_map_phys(): one entry per range")
        for (start, _), entry in zip(FITS_ONE_BY_ONE, got["entries"], strict=True):
            assert entry["addr"] + entry["len"] <= 1 << SMALL_IOVA_BITS, f"an IOVA beyond the mask: {entry}"
            assert entry["phys"] == got["phys_addr"] + start, f"the domain does not map {entry} to its range"
        _lands_range_by_range(imp, list(at.values()))
    finally:
        imp.close()


UNWIND_UNMAPS_UNMAPPED_ENTRIES = KernelBug(
    "0004-dma-buf-unwind-only-the-ranges-that-were-mapped.patch",
    r"7\.2\.",
    "dma_buf_phys_vec_to_sgt()'s dma_map_phys() unwind also unmaps the zeroed entries past the "
    "failed range: __iommu_dma_unmap(dev, 0, 0) frees IOVA pfn 0, never allocated, into the IOVA "
    "cache, and the next flush of that cache WARNs in iova_magazine_free_pfns()",
    splat=("WARNING in iova_magazine_free_pfns", r"iova_magazine_free_pfns"),
)


@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=FAULTING_PEERS)
def test_a_failed_range_unwinds_only_what_was_mapped(fresh_vm, roles, kernel_bug):
    """The range-by-range fallback with a later range that cannot be mapped (its IOVA does not
    fit below the 20-bit mask once the first two are placed): map_dma_buf fails with -ENOMEM
    and must undo exactly the two ranges it mapped. The scatterlist has an entry for every
    range, zeroed past the failure. Settled by a second such map: its whole-export IOVA
    allocation fails too, which flushes the domain's IOVA caches; a pfn there that the
    allocator never handed out (an unwind that also "unmapped" a zeroed entry: IOVA 0, length
    0) makes that flush WARN. A VM of its own: on a kernel with the bug each failed map leaves
    such a pfn behind (under lazy flushes only after the flush queue ran), and a later case in
    a shared VM would inherit its WARN."""
    vm = fresh_vm
    bug = kernel_bug(vm, UNWIND_UNMAPS_UNMAPPED_ENTRIES)
    tries = []
    with exporting(vm, roles, LAST_DOES_NOT_FIT) as (g, buf, edu, shm):
        for name in ("import_last_range_does_not_fit", "import_again_flushing_the_iova_cache"):
            cursor = vm.kmsg_cursor()
            tries.append(g.ok(
                "probe_import", buf=buf, client=edu, provider=shm, bar=2, offset=0, name=name, hold=False,
                dma_bits=SMALL_IOVA_BITS,
            ))  # fmt: skip
    for got in tries:
        assert got["map_error"] == -errno.ENOMEM, f"the third range should not fit below the mask: {got}"
    log = vm.kmsg_since(cursor)
    warned = [line for line in log if "iova_magazine_free_pfns" in line or "WARNING" in line]
    with bug:
        assert not warned, f"the IOVA cache held a pfn nobody allocated after the failed map's unwind: {warned[:3]}"


FAIL_NTH_LIMIT = 400  # far above the allocations of one import
# edu's IOVA space during the sweep: room for the 1 MiB export exactly once (pfn 0 and the VGA
# window are kept back), in a region no other case maps, so its IOMMU page tables are allocated
SWEEP_BITS = 21


UNWIND_LEAKS_THE_IOVA = KernelBug(
    "0005-dma-buf-free-the-IOVA-when-a-map-fails-before-it-is-linked.patch",
    r"7\.2\.",
    "dma_buf_phys_vec_to_sgt() keeps the IOVA dma_iova_try_alloc() reserved when sg_alloc_table() "
    "or the first dma_iova_link() fails: every later import finds the IOVA space full (-ENOMEM)",
)


@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=FAULTING_PEERS)
def test_every_allocation_failure_of_an_import_unwinds(fresh_vm, roles, kernel_bug, kernel_messages):
    """The error unwinds of an import, swept with the kernel's fault injection: the probe's
    import (attach, map_dma_buf, unmap, detach) runs with its 1st, 2nd, ... slab or page
    allocation failing (/proc/thread-self/fail-nth; failslab, fail_page_alloc: the IOMMU's page
    tables too) until one runs without reaching the nth. edu's DMA mask is narrowed to 21 bits
    for the sweep: its IOVA space holds the export once, so an IOVA an unwind failed to free
    leaves the last import no room. Each attempt must fail cleanly (an errno, never a mapping
    handed back) or succeed, no splat (the kernel window); the last one maps through the IOVA
    branch; clearing MEMORY then revokes the swept buffer and returns, and a held import maps,
    edu's DMA lands (host file) and closing the exporter revokes and returns: a reference an
    unwind forgot would leave vfio_pci_dma_buf_move() waiting for an importer that is gone."""
    vm = fresh_vm  # on a kernel with the bug the sweep leaves edu's IOVA space short: not shared
    bug = kernel_bug(vm, UNWIND_LEAKS_THE_IOVA)
    if vm.topology.iommu.type is IommuType.VIRTIO:
        kernel_messages.expect_splat(
            "WARNING in __iommu_dma_iova_unlink",
            r"__iommu_dma_iova_unlink",
            "the sweep also fails the allocation of virtio-iommu's UNMAP request (viommu_unmap_pages() "
            "-> __viommu_add_req()): the driver has already dropped its own record of the mapping and "
            "returns 0, so dma-iommu WARNs that nothing was unmapped (and the device keeps the mapping)",
            required=False,
        )
    failures: dict[str, int] = {}
    with exporting(vm, roles, ((0, MiB),)) as (g, buf, edu, shm):
        # twice: an allocation that stays (an IOMMU page table, a cache's first object) is made
        # by the first attempts only, so later ones make fewer and the nth can skip one (seen
        # once in a dozen runs: sg_alloc_table() never failed, the bug hid); in the second
        # sweep every attempt allocates alike and each allocation fails in turn
        for sweep in (1, 2):
            for nth in range(1, FAIL_NTH_LIMIT + 1):
                got = g.ok(
                    "probe_import", buf=buf, client=edu, provider=shm, bar=2, offset=0,
                    name=f"fail_nth_{sweep}_{nth}", hold=False, fail_nth=nth, dma_bits=SWEEP_BITS,
                )  # fmt: skip
                errors = {k: got[k] for k in ("ioctl_error", "attach_error", "map_error") if got[k]}
                if got["injected"]:
                    where = ",".join(f"{k}={v}" for k, v in errors.items()) or "tolerated"
                    failures[where] = failures.get(where, 0) + 1
                    assert not errors or not got["dma_len"], f"allocation {nth} failed, yet a mapping came back: {got}"
                    assert all(v < 0 for v in errors.values()), f"allocation {nth}: {got}"
                    continue
                with bug:  # an IOVA an unwind kept leaves this import no room
                    assert not errors and got["dma_len"] == MiB and got["branch"] == "iova", (
                        f"the import with no fault left to inject (sweep {sweep}, after {failures}): {got}"
                    )
                break
            else:
                pytest.fail(f"an import still reached its {FAIL_NTH_LIMIT}th allocation: {failures}")
        # a reference a failed map kept would make this revoke wait for an importer that is gone:
        # the op's timeout fails it
        g.ok("command", clear=PCI_COMMAND_MEMORY)
    assert nth > 1 and any(k != "tolerated" for k in failures), f"no allocation failure was seen: {failures}"
    imp = Importer(vm, roles)
    try:
        want, before, after = imp.dma(imp.imp["dma_addr"] + DMA_OFFSET, "after_the_sweep")
        assert_lands(before, after, want, DMA_OFFSET)
        imp.guest.ok("close_exporter")  # a revoke that waits forever fails the session's op timeout
        st = imp.state()
        assert st["invalidations"] >= 1 and not st["mapped"], f"the close did not revoke: {st}"
    finally:
        imp.close()


def _second_import(imp: Importer, name: str, importer: str = "revocable") -> dict:
    """Another importer of the same dma-buf for the same edu, not held (map, unmap, detach)."""
    return imp.guest.ok(
        "probe_import", buf=imp.buf, client=imp.edu, provider=imp.shm, bar=2, offset=0, name=name, hold=False,
        importer=importer,
    )  # fmt: skip


@pytest.mark.parametrize("importer", ["no-p2p", "not-revocable"])
@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=MAPPED_PEERS)
def test_an_importer_that_cannot_be_revoked_is_refused(vm, roles, importer):
    """An exporter of MMIO must refuse an importer without allow_peer2peer (it cannot use a peer
    address) and one without invalidate_mappings (nothing could make it let go of the BAR before
    the BAR goes: dma_buf_attach_revocable()): vfio_pci_dma_buf_attach() answers -EOPNOTSUPP
    at attach, before anything is mapped, while a revocable importer holds the same buffer."""
    imp = Importer(vm, roles)
    try:
        refused = _second_import(imp, f"import_{importer}", importer)
        assert refused["attach_error"] == -errno.EOPNOTSUPP, f"a {importer} importer was not refused: {refused}"
        assert refused["map_error"] == 0 and refused["branch"] == "none" and not refused["id"], refused
        assert imp.state()["mapped"], "the revocable importer lost its mapping meanwhile"
    finally:
        imp.close()


@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=MAPPED_PEERS)
def test_a_revoked_buffer_takes_no_importer_until_memory_returns(vm, roles):
    """MEMORY cleared revokes: a new importer's attach fails with -ENODEV and the held import's
    remap too (a revoked buffer is never mapped again). MEMORY set again un-revokes
    (vfio_pci_dma_buf_move(false)): a new importer attaches and maps, the held import remaps,
    and edu's DMA through the new mapping lands (host file)."""
    imp = Importer(vm, roles)
    try:
        imp.guest.ok("command", clear=PCI_COMMAND_MEMORY)
        late = _second_import(imp, "import_revoked")
        assert late["attach_error"] == -errno.ENODEV, f"attach to a revoked dma-buf: {late}"
        assert imp.state("remap")["error"] == -errno.ENODEV, "a remap of the revoked dma-buf"
        imp.guest.ok("command", set=PCI_COMMAND_MEMORY)
        again = _second_import(imp, "import_unrevoked")
        assert again["attach_error"] == 0 and again["map_error"] == 0 and again["dma_len"] == MiB, again
        _remap_lands(imp, "after_unrevoke", "no new map after MEMORY came back")
    finally:
        imp.close()


TOGGLES = 12


@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=MAPPED_PEERS)
def test_a_remap_racing_revokes_never_outlives_one(vm, roles):
    """Another process maps the held import again and again while MEMORY is cleared and set
    TOGGLES times. A remap either works (the buffer is live) or fails with -ENODEV (revoked);
    after every clear the import holds no mapping (a map racing the revoke was invalidated or
    refused, never left standing); after the last set a remap works and edu's DMA lands.
    Lockdep and KASAN (debug kernels) watch the resv/memory_lock ordering meanwhile."""
    imp = Importer(vm, roles)
    loop = start_background(vm, "remaploop", "probe", "remaploop", {"id": imp.imp["id"]})
    stopped = False
    try:
        loop.wait_started("looping", timeout=60)
        for i in range(TOGGLES):
            imp.guest.ok("command", clear=PCI_COMMAND_MEMORY)
            st = imp.state()
            assert not st["mapped"], f"toggle {i}: a mapping survived MEMORY being cleared: {st}"
            imp.guest.ok("command", set=PCI_COMMAND_MEMORY)
        loop.signal()
        stopped = True
        assert loop.wait_exit(timeout=60) == 0, f"the remap loop did not end cleanly: {loop.lines()}"
        done = loop.lines()[-1]
        assert done.get("ok") and done["remaps"] > 0, done
        assert set(done["errors"]) <= {str(-errno.ENODEV)}, f"a remap failed otherwise than revoked: {done}"
        _remap_lands(imp, "after_racing_revokes", "no new map after MEMORY came back")
    finally:
        if not stopped:  # the import is released under a loop that still maps it otherwise
            loop.signal()
            loop.wait_exit(timeout=60)
        imp.close()


def _revoked_while(imp: Importer, why: str) -> None:
    """invalidate_mappings ran, the import holds no mapping, and a new map is refused."""
    st = imp.state()
    assert st["invalidations"] >= 1 and not st["mapped"], f"{why} did not revoke: {st}"
    remap = imp.state("remap")
    assert remap["error"] == -errno.ENODEV, f"{why}: the revoked dma-buf was mapped again: {remap}"


@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=MAPPED_PEERS)
def test_runtime_pm_revokes_until_low_power_exit(vm, roles):
    """VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY lets the PM core suspend the exporter: the dma-buf is
    revoked (vfio_pci_runtime_pm_entry: dma_buf_move(true)) and stays revoked while the device
    is in low power, even across an access that resumes it for a moment (the uAPI: only
    LOW_POWER_EXIT ends it); a second entry meanwhile is refused (-EINVAL: the PM usage count
    must not drop twice); LOW_POWER_EXIT un-revokes, a remap works and edu's DMA lands."""
    imp = Importer(vm, roles)
    try:
        entered = imp.guest.ok("low_power", mode="entry")
        assert entered["runtime_status"] == "suspended", f"the PM core never suspended the exporter: {entered}"
        _revoked_while(imp, "LOW_POWER_ENTRY")
        again = imp.guest.call("low_power", mode="entry", settle=0)
        assert again.get("errno") == errno.EINVAL, f"a second LOW_POWER_ENTRY was not refused: {again}"
        woke = imp.guest.ok("wake")  # resumed for the access, still in low power by the uAPI
        assert woke["woken"] == 0 and woke["runtime_status"] == "suspended", (
            f"an access ended LOW_POWER_ENTRY (the PM core did not suspend the exporter again): {woke}"
        )
        _revoked_while(imp, "an access during LOW_POWER_ENTRY")
        imp.guest.ok("low_power", mode="exit")
        _remap_lands(imp, "after_low_power_exit", "no new map after LOW_POWER_EXIT")
    finally:
        imp.close()


WAKEUP_KEEPS_REVOKE = KernelBug(
    "0001-vfio-pci-un-revoke-dma-bufs-when-a-wake-up-ends-low-.patch",
    r"7\.2\.",
    "vfio_pci_core_runtime_resume() ends low power on a wake-up but leaves the dma-bufs revoked",
)


@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=MAPPED_PEERS)
def test_a_wakeup_from_runtime_pm_ends_the_revoke(vm, roles, kernel_bug):
    """LOW_POWER_ENTRY_WITH_WAKEUP revokes like LOW_POWER_ENTRY. An access through the uAPI
    resumes the exporter, the kernel signals the wake-up eventfd and, by the uAPI, low power is
    over ("calling LOW_POWER_EXIT is optional" after the notification): the BAR's mmap works
    again, and so must the dma-buf: a remap works and edu's DMA lands."""
    bug = kernel_bug(vm, WAKEUP_KEEPS_REVOKE)
    imp = Importer(vm, roles)
    try:
        entered = imp.guest.ok("low_power", mode="wakeup")
        assert entered["runtime_status"] == "suspended", f"the PM core never suspended the exporter: {entered}"
        _revoked_while(imp, "LOW_POWER_ENTRY_WITH_WAKEUP")
        woke = imp.guest.ok("wake")
        assert woke["woken"] >= 1 and woke["runtime_status"] == "active", f"no wake-up notification: {woke}"
        remap = imp.state("remap")
        with bug:
            assert remap["error"] == 0 and remap["mapped"], f"still revoked after the wake-up ended low power: {remap}"
        want, before, after = imp.dma(remap["dma_addr"] + DMA_OFFSET, "after_wakeup")
        assert_lands(before, after, want, DMA_OFFSET)
    finally:
        imp.close()


@pytest.mark.parametrize("how", ["reset", "hot_reset"])
@pytest.mark.topology("p2pdma-thru-iommu", matrix=("p2pdma-thru-virtio-iommu",), needs=RESETTABLE_PEERS)
def test_revoke_during_reset(vm, roles, how):
    """VFIO_DEVICE_RESET and VFIO_DEVICE_PCI_HOT_RESET revoke for the reset and restore after it
    while MEMORY stays enabled (vfio_pci_ioctl_reset, vfio_pci_dev_set_hot_reset:
    dma_buf_move(true), reset, dma_buf_move(false)): the probe sees invalidate_mappings twice and
    drops its mapping; a new map works and edu's DMA lands again."""
    imp = Importer(vm, roles)
    try:
        imp.guest.ok(how)
        st = imp.state()
        assert st["invalidations"] >= 2 and not st["mapped"], f"revoke + restore not seen: {st}"
        _remap_lands(imp, f"after_{how}", f"no new map after the {how}")
    finally:
        imp.close()


PCI_CAP_ID_PM, PCI_CAP_ID_EXP = 0x01, 0x10


@pytest.mark.xfail(
    strict=True,
    reason="emulation limit: QEMU's ivshmem has no PCI Express capability (no Initiate FLR bit in "
    "Device Control) and no power-management capability (no PMCSR), so the config-space FLR and "
    "D3hot revokes of vfio_exp_config_write()/vfio_pm_config_write() cannot be reached on it "
    "(test_config_space_flr_and_d3hot_revoke reaches them with QEMU's NVMe, without a host-side "
    "byte check)",
)
@pytest.mark.topology("p2pdma-thru-iommu", needs=RESETTABLE_PEERS)
def test_config_space_flr_and_d3hot_can_reach_the_exporter(vm, roles):
    """The revokes a user triggers through config space (Initiate FLR, PMCSR to D3hot) need the
    exporter to have those capabilities; this case fails while ivshmem lacks them and turns red
    (XPASS, strict) the day QEMU adds them, when the revoke cases with bytes checked on the host
    should gain these triggers."""
    with Guest(vm, roles.exporter, None) as g:
        ids = g.ok("capabilities")["ids"]
    assert PCI_CAP_ID_EXP in ids and PCI_CAP_ID_PM in ids, f"the exporter's capabilities: {ids}"


def _nvme_exporter(topo: Topology, layout) -> dict[str, str] | None:
    """An NVMe whose BAR the kernel maps for an edu, behind an IOMMU; one without a CMB first
    (the p2pmem provider stays with the nvme driver)."""
    if topo.iommu.type is IommuType.NONE:
        return None
    nvmes = sorted((ep for ep in _plugged(topo) if ep.kind is EndpointKind.NVME), key=lambda ep: ep.cmb > 0)
    edus = [ep for ep in _plugged(topo) if ep.kind is EndpointKind.EDU]
    pairs = [(n.id, e.id) for n in nvmes for e in edus if verdict(topo, layout, n.id, e.id).p2p_allowed]
    return {"exporter": pairs[0][0], "dma": pairs[0][1]} if pairs else None


NVME_EXPORTER = Need(
    "an NVMe (QEMU's has PCIe FLR and power management) and an edu behind an IOMMU, the kernel "
    "mapping the NVMe's BAR for the edu",
    _nvme_exporter,
    (
        R.kind("exporter", EndpointKind.NVME),
        R.kind("dma", EndpointKind.EDU),
        R.behind_iommu(),
        R.maps("exporter", "dma"),
    ),
)
CONFIG_REVOKES = {"flr": ("flr", {}), "d3hot": ("power_state", {"state": "D3hot"})}
NVME_CC = 0x14  # Controller Configuration
NVME_CC_QUEUE_SIZES = (4 << 20) | (6 << 16)  # IOCQES 16 B, IOSQES 64 B, EN clear


@pytest.mark.parametrize("how", list(CONFIG_REVOKES))
@pytest.mark.topology("p2pdma-thru-iommu", needs=NVME_EXPORTER)
def test_config_space_flr_and_d3hot_revoke(vm, roles, how):
    """The revokes a user triggers through the exporter's config region, on an NVMe taken from
    its driver (QEMU's ivshmem lacks both capabilities): the first page of BAR0 is exported and
    the probe imports it for edu with the deferred unmap. Initiate FLR in Device Control
    (vfio_exp_config_write()) and PMCSR to D3hot (vfio_pm_config_write()) must revoke, and the
    config write return only after the importer unmapped; FLR then restores at once (memory is
    still enabled: a new map works) and resets the function (the CC the case wrote reads 0 again),
    D3hot keeps the buffer revoked until D0. No DMA: BAR0 is the controller's registers, and
    QEMU's NVMe memory is not a host file to check."""
    with exporting(vm, roles, ((0, 4096),), region=0, restore="nvme") as (g, buf, edu, nvme):
        name = f"import_{roles.exporter}_bar0_{how}"
        imp = g.ok(
            "probe_import", buf=buf, client=edu, provider=nvme, bar=0, offset=0, name=name, hold=True,
            defer_unmap_ms=DEFER_MS,
        )  # fmt: skip
        assert imp["map_error"] == 0 and imp["id"], f"the NVMe's BAR0 did not map for edu: {imp}"
        # the controller is disabled (no driver): CC's queue entry sizes can be set, a reset clears them
        cc = g.ok("bar32", bar=0, offset=NVME_CC, value=NVME_CC_QUEUE_SIZES)["value"]
        assert cc == NVME_CC_QUEUE_SIZES, f"CC did not take {NVME_CC_QUEUE_SIZES:#x}: {cc:#x}"
        op, args = CONFIG_REVOKES[how]
        done = g.ok(op, **args)
        if how == "flr":
            assert done["flr_capable"], f"QEMU's NVMe no longer offers FLR: {done}"
            cc = g.ok("bar32", bar=0, offset=NVME_CC)["value"]
            assert cc == 0, f"Initiate FLR left the controller's CC at {cc:#x}: the function was not reset"
        else:
            assert done["state"] == "D3hot", done
        st = g.ok("probe_state", id=imp["id"], what="state", name=f"{name}_state")
        assert st["invalidate_ns"] and st["unmap_ns"], f"{op} never revoked the dma-buf: {st}"
        assert st["unmap_ns"] - st["invalidate_ns"] >= DEFER_MS * 1_000_000, f"the unmap was not deferred: {st}"
        assert done["t1_ns"] >= st["unmap_ns"], (
            f"{op} returned {(st['unmap_ns'] - done['t1_ns']) / 1e6:.0f} ms before the importer unmapped: "
            f"the exporter did not wait for its importers ({st})"
        )
        remap = g.ok("probe_state", id=imp["id"], what="remap", name=f"{name}_remap")
        if how == "d3hot":
            assert remap["error"] == -errno.ENODEV, f"a new map while the exporter is in D3hot: {remap}"
            assert g.ok("power_state", state="D0")["state"] == "D0"
            remap = g.ok("probe_state", id=imp["id"], what="remap", name=f"{name}_remap_in_d0")
        assert remap["error"] == 0 and remap["mapped"], f"no new map once {how} was over: {remap}"
        g.ok("probe_state", id=imp["id"], what="release", name=f"{name}_release")


@pytest.mark.topology(
    "p2pdma-thru-iommu",
    "p2pdma-thru-iommu-acpi",
    needs=vfio_pair(bar_size=MiB, hotplug=True, lands=True, translating=True, via_iommu=True),
)
def test_revoke_by_unplug(fresh_vm, roles, kernel_messages):
    """device_del of the exporter (pciehp, or ACPI eject) while the probe holds a mapping and edu
    keeps writing it: invalidate_mappings runs while the exporter's driver unbinds, before the
    device is deleted (event order recorded in the kernel), the DMA loop ends cleanly."""
    vm = fresh_vm
    kernel_messages.expect(
        r"vfio-pci " + re.escape(vm.bdf(roles.exporter)) + r": Relaying device request to user",
        "vfio_pci_core_request() with a REQ eventfd registered",
    )
    kernel_messages.expect(FAULT_RE.pattern, "edu writes the IOVA of the unplugged BAR")
    imp = Importer(vm, roles, req=True, close_on_req=True)
    try:
        vm.dirty = True
        # edu writes the mapped address again and again while the exporter goes, up to the
        # revoke and once past it (that DMA must fault): the use must end cleanly.
        # Not under ACPI hotplug: there QEMU 7.2 once aborted in msix_table_mmio_write()
        # (hw/pci/msix.c:218 assertion) during the eject with the loop running.
        loop = None
        if vm.topology.hotplug is HotplugMode.NATIVE:
            # it stops by itself after its first DMA past the revoke: that one faults (~3 uses of
            # the printk rate limit under intel), and a loop of them would hold the limit for
            # _revoked()'s own DMA, 5 s of waiting
            args = {"client": imp.edu, "addr": imp.imp["dma_addr"] + DMA_OFFSET, "id": imp.imp["id"], "after_revoke": 1}
            loop = start_background(vm, "dmaloop", "probe", "dmaloop", args)
            loop.wait_started("looping", timeout=60)
        vm.unplug(roles.exporter)
        if loop is not None:
            loop.signal()
            assert loop.wait_exit(timeout=60) == 0, f"the DMA loop did not end cleanly: {loop.lines()}"
            fault_window(vm)  # the loop's own faults: the next DMA's must not be rate-limited away
            done = loop.lines()[-1]
            assert done.get("ok") and done["dmas"] > 0 and not done["errors"], f"DMAs during the unplug: {done}"
        st = imp.state()
        # the kernel's own order: vfio-pci starts to unbind, tells the importer (the REQ made the
        # session close the fd), finishes unbinding, then the device is deleted
        order = [st["unbind_seq"], st["invalidate_seq"], st["unbound_seq"], st["removed_seq"]]
        assert all(order) and order == sorted(order), (
            f"events (unbind, invalidate_mappings, unbound, deleted) = {order}: invalidate_mappings "
            f"must come while the exporter's driver unbinds, before the device goes ({st})"
        )
        _revoked(imp)
    finally:
        imp.close()


# -- the RFC paths: CPU/KVM mapping of a VFIO dma-buf ------------------------------------------------

RFC_SYMBOLS = re.compile(r"^dma_buf_\w*pfn\w*$|^vfio_pci_dma_buf_\w*pfn\w*$")


def rfc_exports(vm) -> list[str]:
    """The kernel's own export list: dma-buf PFN / CPU-mapping calls an RFC series adds."""
    from testbed.probe import kernel_tree_of

    symvers = kernel_tree_of(vm.plan.runtime.kernel).builddir / "Module.symvers"
    names = [line.split("\t")[1] for line in symvers.read_text().splitlines() if "\t" in line]
    return sorted(n for n in names if RFC_SYMBOLS.match(n))


@pytest.mark.topology("p2pdma-thru-iommu", needs=PEERS)
def test_a_cpu_mmap_of_the_vfio_dma_buf_is_refused(vm, roles):
    """The VFIO exporter refuses a CPU mmap of its dma-buf (-EINVAL). A kernel that exports a
    dma_buf_get_pfn()-style CPU/KVM mapping (an RFC series; this kernel's Module.symvers
    decides) fails here instead: the probe has no case for that path yet, and a pass would
    claim what nothing checked."""
    exports = rfc_exports(vm)
    if exports:
        pytest.fail(
            f"this kernel exports {', '.join(exports)}: the probe has no case for it yet "
            "(add one in testbed/probe/kmod before trusting a pass here)"
        )
    with Guest(vm, roles.exporter, None) as g:
        buf = g.ok("export", ranges=[[0, MiB]])["buf"]
        r = g.ok("mmap_buf", buf=buf, length=MiB)
    vm.agent("probe", "bind", {"bdf": vm.bdf(roles.exporter), "driver": None})  # leave the VM as found
    assert not r["mapped"] and r["errno"] == errno.EINVAL, f"a CPU mmap of the VFIO dma-buf: {r}"


# -- the two-step DMA API ------------------------------------------------------------------------------


# the probe's skip reasons (p2pdma_probe.c, iova_fallback and iova_translated): a page (its RAM
# page, the peer's BAR) above edu's DMA limit and what needs its mapping, or the kernel not
# linking the peer
IOVA_SKIPS_FOR_PLACEMENT = ("above the device's DMA limit", "no RAM mapping", "no MMIO mapping")
IOVA_SKIPS_FOR_NO_P2P = ("the kernel maps this pair BUS_ADDR", "the kernel refuses P2P between these devices")
IOVA_SKIPS_WITHOUT_AN_IOVA = ("no IOVA was allocated",)  # no translating domain: the fallback ran instead


@pytest.mark.topology(
    "p2pdma-thru-iommu",
    "p2pdma-no-iommu",
    matrix=("p2pdma-thru-virtio-iommu", "p2pdma-switch", "p2pdma-host-bridges"),
    needs=vfio_pair(bar_size=MiB, iommu=False),
)
def test_iova_api(vm, roles, kernel_messages):
    """dma_iova_try_alloc/link/sync/unlink/destroy on edu against the ivshmem BAR: every KTAP case
    passes, the peer DMA through the IOVA lands on the host, the one after unlink does not.
    Without a translating domain try_alloc declines and the dma_map_phys() fallback is checked.
    The suite first asks the kernel's own P2P decision for the pair (its map type, equal to
    `testbed explain`'s) and links the peer's BAR only where the kernel would: THRU_HOST_BRIDGE.
    Elsewhere the MMIO cases skip with the kernel's reason and the BAR must stay untouched."""
    iommu = translated(vm.topology)
    verdict = oracle(vm, roles.exporter, roles.dma)
    links_peer = verdict.map_type is MapType.THRU_HOST_BRIDGE
    if iommu and links_peer:
        kernel_messages.expect(FAULT_RE.pattern, "edu writes the unlinked IOVA")
    vm.load_probe()
    edu, shm = vm.bdf(roles.dma), vm.bdf(roles.exporter)
    assert vm.agent("probe", "bind", {"bdf": edu, "driver": "p2pdma_probe"})["ok"]
    seeds = fresh_seed(), fresh_seed()
    linked, unlinked = pattern(seeds[0], DMA_SIZE), pattern(seeds[1], DMA_SIZE)
    offset = 0x10000
    before = bar_bytes(vm, roles.exporter)
    if iommu and links_peer:
        fault_window(vm)  # the DMA after unlink faults inside the ioctl
    try:
        out = vm.agent(
            "probe",
            "iova",
            {
                "client": edu,
                "provider": shm,
                "bar": 2,
                "offset": offset,
                "pattern": linked.hex(),
                "after_unlink": unlinked.hex(),
                "repeats": 3000,
            },
            timeout=300,
        )
    finally:
        vm.agent("probe", "bind", {"bdf": edu, "driver": None})
    reports = parse_ktap(out["ktap"])
    assert reports, f"no KTAP from the iova ioctl: {out}"
    cases = {case.name: case for _, case in reports[-1].walk()}
    failed = [c for c in cases.values() if c.status is not Status.PASS and c.status is not Status.SKIP]
    assert not failed, "\n\n".join(f"{c.name}: {c.status.value}\n{case_log(c)}" for c in failed)
    assert out["used_iova"] == iommu, f"dma_iova_try_alloc used an IOVA: {out['used_iova']}, IOMMU: {iommu}"
    assert out["map_type"] == verdict.map_type.value, (
        f"the kernel's P2P decision for {roles.exporter} -> {roles.dma}: {out['map_type']}, testbed explain: "
        f"{verdict.map_type.value} ({verdict.reason})"
    )
    after = bar_bytes(vm, roles.exporter)
    # a case skips only for where a page lies or, where the kernel does not link the peer, for
    # the kernel's reason (the probe's no_p2p)
    allowed = (
        IOVA_SKIPS_FOR_PLACEMENT
        + (() if links_peer else IOVA_SKIPS_FOR_NO_P2P)
        + (() if iommu else IOVA_SKIPS_WITHOUT_AN_IOVA)
    )
    skips = {c.name: c.directive.removeprefix("SKIP").strip() for c in cases.values() if c.status is Status.SKIP}
    unexplained = {name: why for name, why in skips.items() if not why.startswith(allowed)}
    assert not unexplained, (
        f"cases skipped for another reason (the kernel's map type {verdict.map_type.value}): {unexplained}"
    )
    if not links_peer:
        skipped = list(skips)
        assert "iova_link_mmio" in skipped or "iova_fallback_mmio" in skipped, sorted(cases)
        assert after == before, f"the kernel maps this pair {verdict.map_type.value}: no DMA may reach the BAR"
        return
    # through the IOVA, or dma_map_phys() without one; the DMA after unlink left no trace
    assert_lands(before, after=after, want=linked, offset=offset)
    if iommu:
        # the DMA after unlink was issued and completed (edu_write_to() returned 0) and faulted:
        # its fault line is in this ioctl's own kernel log (out["ktap"] holds every record
        # from the ioctl's start). The DMA through the linked IOVA landed (checked above), so
        # no fault for that address can be its.
        issued = cases.get("iova_dma_after_unlink_issued")
        assert issued is not None and issued.status is Status.PASS, f"the DMA after unlink was not issued: {issued}"
        faults = dma_fault_lines(out["ktap"], edu, out["iova"], DMA_SIZE)
        assert faults, (
            f"edu's DMA to the unlinked IOVA {out['iova']:#x} logged no fault in the ioctl's kernel log:\n  "
            + "\n  ".join(out["ktap"][-15:])
        )
