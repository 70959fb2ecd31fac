"""Booted VMs shared across tests: one per topology, rebooted only when a test dirtied it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..guestvm import GuestVM
from ..guestvm.fingerprint import take as take_fingerprint
from ..logs.known import KnownSplat, find_known, kernel_release
from ..logs.splat import Splat, scan_lines
from ..logs.windows import outside_windows
from ..topology import load_topology
from ..vm import Machine
from ..vm.launch import plan_launch

MAX_SHARED = 2  # 24 GiB hosts and 2 GiB guests: keep memory for a fresh VM beside them


@dataclass(frozen=True)
class BootOptions:
    accel: str | None
    kernel_config: str
    bzimage: Path | None
    ksrc: Path | None
    patches: Path | None


@dataclass(frozen=True)
class VmVariant:
    """How one VM differs from the session's: the kselftest VM boots another config set, with
    KUnit on the command line and time for it before SSH."""

    kernel_config: str | None = None  # None: the session's
    extra_append: tuple[str, ...] = ()
    boot_work_s: float = 0.0  # what the guest does before SSH, KVM seconds


DEFAULT_VARIANT = VmVariant()


@dataclass(frozen=True)
class StraySplat:
    vm: str
    console_log: Path
    splat: Splat
    known: KnownSplat | None = None  # declared in known-splats.yaml: reported, not failed


class VmPool:
    def __init__(self, options: BootOptions, progress: Callable[[str], None], known: tuple[KnownSplat, ...] = ()):
        self.options = options
        self.known = known
        self.progress = progress
        self.shared: OrderedDict[tuple, GuestVM] = OrderedDict()
        self.stray_splats: list[StraySplat] = []
        self.boot_seconds: list[tuple[str, float]] = []
        self.launches: list[tuple[str, str, Path | None, str, Path | None]] = []  # (topology, vm, bzImage, accel, fp)

    def boot(self, topology: str, variant: VmVariant = DEFAULT_VARIANT) -> GuestVM:
        """A fresh VM of `topology`, booted the session's way unless `variant` says otherwise."""
        o = self.options
        topo = load_topology(topology)
        plan = plan_launch(
            topology,
            accel=o.accel,
            kernel_config=variant.kernel_config or o.kernel_config,
            ksrc=o.ksrc,
            patches=o.patches,
            extra_append=variant.extra_append,
            progress=self.progress,
            bzimage=o.bzimage,
            boot_work_s=variant.boot_work_s,
        )
        machine = plan.machine()
        machine.__enter__()
        try:
            machine.wait_ssh()
            vm = GuestVM(topo, plan, machine)
            vm.install_agent()
            vm.fingerprint = take_fingerprint(vm)
        except BaseException:
            self.release(None, machine)
            raise
        self.boot_seconds.append((topology, machine.ssh_ready_seconds or 0.0))
        fingerprint = vm.fingerprint.path if vm.fingerprint else None
        self.launches.append((topology, plan.name, plan.runtime.kernel, plan.accel.accel, fingerprint))
        return vm

    def shared_vm(self, topology: str, variant: VmVariant = DEFAULT_VARIANT) -> GuestVM:
        key = (topology, variant)
        vm = self.shared.get(key)
        if vm is not None and (vm.dirty or not vm.machine.process.alive()):
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

    def release(self, vm: GuestVM | None, machine: Machine | None = None) -> None:
        """Shut down, then scan the console outside every test window: a splat there fails
        the session (it happened during boot, between tests or at shutdown)."""
        if machine is None:
            assert vm is not None, "release() needs the VM or its machine"
            machine = vm.machine
        try:
            machine.shutdown()
        finally:
            lines = _read_lines(machine.console_log)
            release = kernel_release(lines)
            for first, last in outside_windows(lines):
                for splat in scan_lines(lines[first - 1 : last], first_line=first):
                    self.stray_splats.append(
                        StraySplat(machine.name, machine.console_log, splat, find_known(splat, release, self.known))
                    )

    def close(self) -> None:
        while self.shared:
            _, vm = self.shared.popitem()
            self.release(vm)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
