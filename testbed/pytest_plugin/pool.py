"""Booted VMs shared across tests: one per topology, rebooted only when a test dirtied it; and
fresh VMs for destructive tests, each booted as a warm spare while the tests before it run (the
shared ones of its topology, or the destructive one before it)."""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from ..errors import GuestError, TestbedError
from ..guestvm import GuestVM
from ..kernel.request import KernelRequest
from ..logs.kmemleak import KMEMLEAK_SCAN, KMEMLEAK_TIMEOUT_S, NO_KMEMLEAK, KmemleakScan, parse_kmemleak
from ..logs.known import KnownSplat, console_splats
from ..topology import load_topology_once
from ..vm import BootStalled, Machine, console
from ..vm.launch import plan_launch
from .strays import StraySplat, judge_outside_windows

MAX_SHARED = 2  # 24 GiB hosts and 2 GiB guests: keep memory for a fresh VM (and its spare) beside them
# How long a destructive test waits for a spare still booting before it boots its own: a boot
# takes seconds, and a spare whose guest stopped answering would keep it for the boot deadline
# (minutes). At least this, or 5 times the slowest boot this process has seen (debug kernels).
SPARE_PATIENCE_S = 60.0


@dataclass(frozen=True)
class BootOptions:
    accel: str | None
    kernel: KernelRequest = KernelRequest()  # the run's --kernel/--ksrc/--patches/--kernel-config


@dataclass(frozen=True)
class VmVariant:
    """How one VM differs from the session's: the kselftest VM boots another config set, with
    KUnit on the command line and time for it before SSH."""

    kernel_config: str | None = None  # None: the session's
    extra_append: tuple[str, ...] = ()
    boot_work_s: float = 0.0  # what the guest does before SSH, KVM seconds


DEFAULT_VARIANT = VmVariant()


@dataclass(frozen=True)
class FreshWait:
    """How long one destructive test waited for its VM, and where the VM came from."""

    topology: str
    seconds: float
    how: str  # "spare" | "booted" | "spare failed" | "spare rejected" | "spare stuck"


def fresh_summary(waits: list[FreshWait]) -> str | None:
    """How long destructive tests waited for their VM: spares handed over, median wait."""
    if not waits:
        return None
    warm = sum(1 for w in waits if w.how == "spare")
    seconds = [w.seconds for w in waits]
    return (
        f"fresh VMs: {len(seconds)} for destructive tests, {warm} of them warm spares; waited median "
        f"{statistics.median(seconds):.1f} s, max {max(seconds):.1f} s, {sum(seconds):.0f} s in all"
    )


@dataclass(frozen=True)
class Launch:
    """One VM this process booted, for run.json."""

    topology: str
    vm: str
    bzimage: Path | None
    accel: str
    fingerprint: Path | None
    kernel_config: str  # the --kernel-config name ("debug-full"), not only its build's set


class VmPool:
    def __init__(self, options: BootOptions, progress: Callable[[str], None], known: tuple[KnownSplat, ...] = ()):
        self.options = options
        self.known = known
        self.progress = progress
        self.shared: OrderedDict[tuple, GuestVM] = OrderedDict()
        self.stray_splats: list[StraySplat] = []
        self.boot_seconds: list[tuple[str, float]] = []
        self.launches: list[Launch] = []
        # One warm spare at a time, booted on one thread (QEMU itself is forked on the VM
        # layer's launcher thread, so its parent-death signal does not depend on this one).
        self._spare_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spare-vm")
        self.spares: dict[tuple, Future[GuestVM]] = {}
        self.fresh_waits: list[FreshWait] = []
        # called with each VM before it shuts down, while its guest still answers (coverage)
        self.before_shutdown: Callable[[GuestVM], None] | None = None
        self.boot_retries: list[str] = []  # boots that stalled and were tried again: why
        self.leaks_unchecked: list[str] = []  # VMs of a kmemleak kernel shut down without their scan: why

    def boot(self, topology: str, variant: VmVariant = DEFAULT_VARIANT) -> GuestVM:
        """A fresh VM of `topology`, booted the session's way unless `variant` says otherwise.
        A boot that stalled (BootStalled: a TCG vCPU starved of host CPU) is tried once more,
        and the end of the run says so; a second stall is the kernel's (GuestError), with its
        reports counted as splats."""
        try:
            return self._boot_once(topology, variant, may_retry=True)
        except BootStalled as exc:
            first_line = str(exc).splitlines()[0]
            self.progress(f"{first_line}; booting it once more")
            self.boot_retries.append(first_line)
        try:
            return self._boot_once(topology, variant, may_retry=False)
        except BootStalled as exc:
            raise GuestError(f"stalled while booting twice in a row, so not only a starved host: {exc}") from None

    def _boot_once(self, topology: str, variant: VmVariant, may_retry: bool) -> GuestVM:
        o, k = self.options, self.options.kernel
        kernel = k.with_config(variant.kernel_config) if variant.kernel_config else k
        plan = plan_launch(
            load_topology_once(topology),  # the object collection loaded; the plan and the VM carry it
            accel=o.accel,
            kernel=kernel,
            extra_append=variant.extra_append,
            progress=self.progress,
            boot_work_s=variant.boot_work_s,
        )
        machine = plan.machine()
        machine.__enter__()
        try:
            vm = GuestVM.boot(plan, machine)
        except BaseException as exc:
            self.release(None, machine, boot_stalled=may_retry and isinstance(exc, BootStalled))
            raise
        self.boot_seconds.append((plan.topology.name, machine.ready_seconds or 0.0))
        fingerprint = vm.fingerprint.path if vm.fingerprint else None
        kernel_config = variant.kernel_config or o.kernel.config_set
        self.launches.append(
            Launch(topology, plan.name, plan.runtime.kernel, plan.accel.accel, fingerprint, kernel_config)
        )
        return vm

    def fresh(self, topology: str, spare_next: bool, variant: VmVariant = DEFAULT_VARIANT) -> GuestVM:
        """A VM of its own for a destructive test: the warm spare if one was booted for this
        topology and it came up clean, else one booted now. `spare_next`: another destructive
        test of this topology follows, so boot its VM while this one is used."""
        key = (topology, variant)
        start = time.monotonic()
        vm, how = None, "booted"
        spare = self.spares.pop(key, None)
        if spare is not None:
            vm, how = self._take_spare(spare)
        if vm is None:
            vm = self.boot(topology, variant)
        self.fresh_waits.append(FreshWait(topology, time.monotonic() - start, how))
        if spare_next:
            self.prefetch_spare(topology, variant)
        return vm

    def prefetch_spare(self, topology: str, variant: VmVariant = DEFAULT_VARIANT) -> None:
        """Boot the warm spare the next destructive test of `topology` will take, now, unless
        one is booted or booting: its boot runs beside the tests before it, not in its setup."""
        key = (topology, variant)
        if key not in self.spares:
            self.spares[key] = self._spare_thread.submit(self.boot, topology, variant)

    def _take_spare(self, spare: Future[GuestVM]) -> tuple[GuestVM | None, str]:
        """The spare, if it booted cleanly: QEMU alive, no splat on its console so far (a known
        one is fine), the guest the model describes. Otherwise it is released (its splat is
        reported as outside any test) and (None, why) sends the caller to a boot of its own."""
        patience = max([SPARE_PATIENCE_S] + [5 * seconds for _, seconds in self.boot_seconds])
        try:
            vm = spare.result(timeout=patience)
        except FutureTimeout:
            self.progress(f"spare VM still booting after {patience:.0f} s; booting one now (the spare goes when done)")
            spare.add_done_callback(self._release_late_spare)
            return None, "spare stuck"
        except TestbedError as exc:
            self.progress(f"spare VM did not boot ({exc}); booting one now")
            return None, "spare failed"
        splats = [s for s, k in console_splats(_read_lines(vm.machine.console_log), self.known) if k is None]
        why = (
            f"QEMU ended: {vm.machine.gone()}"
            if not vm.machine.process.alive()
            else f"a splat during its boot: {splats[0].signature}"
            if splats
            else "the guest differs from the model"
            if vm.model_problems
            else None
        )
        if why is None:
            return vm, "spare"
        self.progress(f"spare VM {vm.machine.name} not handed over: {why}; booting one now")
        self.release(vm)
        return None, "spare rejected"

    def _release_late_spare(self, spare: Future[GuestVM]) -> None:
        """A spare given up on, once its boot ends: released if it came up (a failed boot
        released its machine itself), so its console is judged like any other's."""
        if spare.exception() is None:
            self.release(spare.result())

    def shared_vm(self, topology: str, variant: VmVariant = DEFAULT_VARIANT) -> GuestVM:
        key = (topology, variant)
        vm = self.shared.get(key)
        if vm is not None and (vm.dirty or not vm.machine.process.alive()):
            if not vm.machine.process.alive():
                self.progress(f"{vm.machine.name} is gone: {vm.machine.gone()}; booting another")
            self.release(self.shared.pop(key))
            vm = None
        if vm is None:
            while len(self.shared) >= MAX_SHARED:
                _, oldest = self.shared.popitem(last=False)
                self.release(oldest)
            vm = self.boot(topology, variant)
            self.shared[key] = vm
        self.shared.move_to_end(key)
        return vm

    def release(self, vm: GuestVM | None, machine: Machine | None = None, boot_stalled: bool = False) -> None:
        """Scan for leaks (kmemleak kernels), shut down, then scan the console outside every
        test window: a splat there, or a leak, fails the session (it happened during boot,
        between tests or at shutdown, or was never freed in the VM's life). `boot_stalled`:
        the boot ended in an RCU stall, which boot() reports with its retry; the stall's own
        reports are not counted twice, any other splat still is."""
        if machine is None:
            assert vm is not None, "release() needs the VM or its machine"
            machine = vm.machine
        if vm is not None and self.before_shutdown is not None and machine.process.alive():
            try:
                self.before_shutdown(vm)
            except (TestbedError, OSError) as exc:  # a guest that cannot answer any more
                self.progress(f"before the shutdown of {machine.name}: {exc}")
        leaks = self._kmemleak(vm) if vm is not None else None
        if vm is not None:
            vm.close_agent()  # its channel's files closed by us, not by the garbage collector
        if machine.process.alive():
            console.settle(machine.console_log)  # delayed kobject releases print their splats
        try:
            machine.shutdown()
        finally:
            lines = _read_lines(machine.console_log)
            self.stray_splats += judge_outside_windows(
                machine.name, machine.console_log, lines, leaks, boot_stalled, self.known
            )

    def _kmemleak(self, vm: GuestVM) -> KmemleakScan | None:
        """kmemleak's verdict on the VM's whole life, before it shuts down (None: no kmemleak in
        this kernel, or the guest cannot be asked). Each leak is printed with its backtrace."""
        if not vm.machine.process.alive():
            return None
        try:
            if vm.kmemleak_scannable() is False:
                return None
        except (TestbedError, OSError):  # the agent cannot answer: ask over SSH below
            pass
        mark = len(_read_lines(vm.machine.console_log))
        start = time.monotonic()
        try:
            result = vm.run(KMEMLEAK_SCAN, timeout=KMEMLEAK_TIMEOUT_S)
        except (TestbedError, OSError) as exc:  # a guest that cannot answer any more
            self._leaks_unchecked(vm, str(exc))
            return None
        if result.status == NO_KMEMLEAK:
            return None
        if result.status != 0:
            # kmemleak disabled itself (its log says why) or debugfs is missing: say so, loudly
            self._leaks_unchecked(vm, result.stderr.strip() or f"the scan exited {result.status}")
            return None
        report = vm.machine.console_log.parent / "kmemleak.txt"
        report.write_text(result.stdout)
        splats = parse_kmemleak(result.stdout)
        took = time.monotonic() - start
        self.progress(f"kmemleak: {vm.machine.name}: {len(splats)} leak(s) after its whole life (scan {took:.1f}s)")
        for splat in splats:
            self.progress(f"kmemleak: {vm.machine.name}: {splat.signature} ({report}:{splat.first_line})")
            for line in splat.excerpt.splitlines():
                self.progress(f"  {line}")
        return KmemleakScan(report, mark, tuple(splats))

    def _leaks_unchecked(self, vm: GuestVM, why: str) -> None:
        """A VM whose leaks nobody checked: said now and listed at the end of the run."""
        self.progress(f"kmemleak: no leak check of {vm.machine.name}: {why}")
        self.leaks_unchecked.append(f"{vm.machine.name}: {' '.join(why.split())[:300]}")

    def close(self) -> None:
        while self.shared:
            _, vm = self.shared.popitem()
            self.release(vm)
        for spare in self.spares.values():  # booted for a test that did not come (deselected, failed early)
            try:
                self.release(spare.result())
            except TestbedError:
                pass  # its boot failed: nothing runs, nothing to scan beyond what boot() reported
        self.spares.clear()
        self._spare_thread.shutdown()


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
