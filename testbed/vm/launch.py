"""From command-line choices to a ready-to-run Machine: kernel, image, overlay, argv."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..kernel.artifact import built_config
from ..kernel.request import KernelRequest
from ..paths import results_root, runtime_dir
from ..render.qdev import BackingFile
from ..render.runtime import Runtime
from ..timeouts import Timeouts
from ..topology import Layout, Topology, build_layout, load_topology
from . import registry
from .accel import AccelDecision, resolve_accel
from .machine import Machine
from .qemu import QemuBinary
from .qemu import probe as probe_qemu
from .tcg_threads import choose_tcg_threads

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LaunchPlan:
    name: str
    argv: list[str]
    runtime: Runtime
    ssh_key: Path
    timeouts: Timeouts
    accel: AccelDecision
    run_dir: Path
    topology: Topology  # the model the argv was rendered from: loaded once, passed down
    layout: Layout

    def machine(self) -> Machine:
        return Machine(self.argv, self.runtime, self.ssh_key, self.timeouts, self.name)


def plan_launch(
    topology: str | Topology,
    accel: str | None = None,
    kernel: KernelRequest | None = None,
    extra_append: tuple[str, ...] = (),
    paused: bool = False,
    progress: Progress = print,
    boot_work_s: float = 0.0,
) -> LaunchPlan:
    """Ensure kernel and image (building them if the cache lacks them), make the per-VM
    overlay and run directory, and render the QEMU argv. Starts nothing. `kernel` (default: the
    default set of Debian's source) names the kernel: a bzImage is booted as it is (the user's
    own build, `--kernel arch/x86/boot/bzImage`), anything else is built or taken from the cache.
    `boot_work_s`: what the guest does before it is reachable (KUnit at boot), KVM seconds."""
    # imported here: `testbed --help` must not pay for the whole stack
    from ..image import ensure_image, make_overlay
    from ..kernel.configsets import boot_args
    from ..render import backing_files, device_models, render_argv

    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    layout = build_layout(topo)  # once: the argv and the VM object share it
    qemu = probe_qemu()
    missing = qemu.missing(device_models(topo, layout))
    if missing:  # before a kernel build or a boot, not as QEMU's exit
        raise ConfigError(f"{topo.name} needs the device model(s) {', '.join(missing)}, which {qemu.describe()} lacks")
    topo = for_qemu(topo, qemu)
    decision = resolve_accel(accel)
    progress(f"accel: {decision.reason}")
    threads = choose_tcg_threads() if decision.accel == "tcg" else None
    if threads is not None and threads.mode != "multi":
        progress(f"accel: {threads.reason}")
    kernel = kernel or KernelRequest()
    bzimage = kernel.bzimage_path(progress)
    extra_append = boot_args(kernel.config_set) + extra_append  # a boot profile's switches (debug: kmemleak=off)
    image = ensure_image(progress=progress)
    name = registry.reserve(topo.name)
    (results_root() / "vm").mkdir(parents=True, exist_ok=True)
    # unique even for two VMs of one name in one second (a name comes free when its VM ends)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=results_root() / "vm"))
    disk = make_overlay(image, run_dir)
    runtime = Runtime(
        accel=decision.accel,
        kernel=bzimage,
        agent_socket=runtime_dir() / f"{name}.agent" if has_agent_port(bzimage) else None,
        disk=disk,
        qmp_socket=runtime_dir() / f"{name}.qmp",
        console_log=run_dir / "console.log",
        backing_dir=run_dir / "backing",
        extra_append=extra_append,
        paused=paused,
        tcg_thread=threads.mode if threads is not None else "multi",
    )
    make_backing_files(backing_files(topo, runtime.backing_dir))
    timeouts = Timeouts.for_accel(decision.accel)
    if boot_work_s:
        timeouts = timeouts.with_boot_work(boot_work_s, decision.accel)
    argv = render_argv(topo, runtime, qemu=qemu.path, layout=layout)
    return LaunchPlan(name, argv, runtime, image.ssh_key, timeouts, decision, run_dir, topo, layout)


def has_agent_port(bzimage: Path) -> bool:
    """Whether the guest agent can answer on a virtio-serial port: a kernel the testbed built
    with CONFIG_VIRTIO_CONSOLE. Any other kernel's agent is reached through SSH."""
    config = built_config(bzimage)
    return config is not None and config.get("CONFIG_VIRTIO_CONSOLE") == "y"


class QemuLacks(ConfigError):
    """The topology asks for something this QEMU does not have."""


def for_qemu(topo: Topology, qemu: QemuBinary) -> Topology:
    """The topology as this QEMU runs it: refused when it asks for switch ACS the binary lacks;
    marked as routing P2P inside switches when the binary does (the oracle reads it)."""
    wanting = [sw.id for sw in topo.switches if sw.acs]
    if wanting and not qemu.features.switch_acs:
        line = next(sw.line for sw in topo.switches if sw.acs)
        raise QemuLacks(
            f"{topo.source}:{line}: switch {', '.join(wanting)} declares acs: true, but the "
            f"xio3130-downstream of {qemu.describe()} has no ACS capability; run it on the "
            "testbed's QEMU (--qemu built) or drop `acs`"
        )
    if topo.peer_routing == qemu.features.peer_routing:
        return topo
    return dataclasses.replace(topo, peer_routing=qemu.features.peer_routing)


def make_backing_files(files: Iterable[BackingFile]) -> None:
    """Sparse files of the declared sizes behind NVMe namespaces and ivshmem BARs (zeroed:
    the host-side byte checks compare against a known start)."""
    for bf in files:
        bf.path.parent.mkdir(parents=True, exist_ok=True)
        with open(bf.path, "wb") as f:
            f.truncate(bf.size)
