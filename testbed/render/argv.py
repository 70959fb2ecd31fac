"""Topology + Runtime → the QEMU argv, as a list (one element per argument, never split again)."""

from __future__ import annotations

from pathlib import Path

from ..topology.layout import Layout, NodeKind, build_layout
from ..topology.model import HotplugMode, IommuMode, IommuType, Topology
from .qdev import DeviceSpec, agent_port, backend_options, bridge_spec, disk_and_net, endpoint_spec, iommu_spec
from .runtime import Runtime

QEMU_BINARY = "qemu-system-x86_64"
BASE_APPEND = (
    "root=/dev/vda",
    "rw",
    "console=ttyS0",
    "init=/sbin/testbed-init",
    # a panic ends QEMU at once (-no-reboot) instead of hanging until a deadline
    "panic=-1",
    # under TCG the IO-APIC timer check can miss its window, and with interrupt
    # remapping (intel-iommu) check_timer() then panics the boot ("timer doesn't
    # work through Interrupt-remapped IO-APIC"): seen once in a CI-style run
    "no_timer_check",
)


def kernel_append(topo: Topology, runtime: Runtime) -> str:
    args = list(BASE_APPEND)
    if topo.iommu.type is IommuType.INTEL:
        args.append("intel_iommu=on")
    if topo.iommu.type is not IommuType.NONE:
        # strict unless the topology asks for lazy flushes: an unmap is flushed before it returns,
        # so a revoked mapping faults on the next DMA
        strict = f"iommu.strict={int(topo.iommu.strict)}"
        args.append(
            "iommu.passthrough=1" if topo.iommu.mode is IommuMode.PASSTHROUGH else f"iommu.passthrough=0 {strict}"
        )
    args += topo.kernel_args
    args += runtime.extra_append
    return " ".join(args)


def machine_option(topo: Topology, runtime: Runtime) -> str:
    option = "q35"
    if runtime.accel == "kvm" and topo.iommu.type in (IommuType.INTEL, IommuType.AMD):
        # interrupt remapping under KVM needs the IOAPIC in QEMU
        option += ",kernel-irqchip=split"
    return option


def accel_option(runtime: Runtime) -> str:
    return f"tcg,thread={runtime.tcg_thread}" if runtime.accel == "tcg" else runtime.accel


def global_options(topo: Topology) -> list[tuple[str, str]]:
    if topo.hotplug is HotplugMode.NATIVE:
        # q35 in QEMU 7.2 hot-plugs through ACPI by default; this hands slots to pciehp
        return [("ICH9-LPC.acpi-pci-hotplug-with-bridge-support", "off")]
    return []


def device_specs(topo: Topology, layout: Layout) -> list[DeviceSpec]:
    """Bridges and endpoints present at boot, parents first (QEMU needs a bus before its devices)."""
    endpoints = {ep.id: ep for ep in topo.endpoints}
    specs = []
    for p in layout.in_order():
        if not p.plugged:
            continue
        if p.kind is NodeKind.ENDPOINT:
            specs.append(endpoint_spec(layout, endpoints[p.id]))
        else:
            specs.append(bridge_spec(topo, layout, p))
    return specs


def device_models(topo: Topology, layout: Layout | None = None) -> frozenset[str]:
    """Every QEMU device model the topology uses, at boot or by hot-plug (what the binary that
    runs it must have)."""
    layout = layout or build_layout(topo)
    endpoints = {ep.id: ep for ep in topo.endpoints}
    specs = [endpoint_spec(layout, endpoints[p.id]) if p.kind is NodeKind.ENDPOINT else bridge_spec(topo, layout, p)
             for p in layout.in_order()]  # fmt: skip
    iommu = iommu_spec(topo)
    return frozenset(s.driver for s in [*specs, *([iommu] if iommu else [])])


def render_argv(topo: Topology, runtime: Runtime, qemu: str = QEMU_BINARY, layout: Layout | None = None) -> list[str]:
    layout = layout or build_layout(topo)
    backends, infra_devices = disk_and_net(runtime.disk, runtime.ssh_host_port)
    if runtime.agent_socket is not None:
        agent_backends, agent_devices = agent_port(runtime.agent_socket)
        backends, infra_devices = backends + agent_backends, infra_devices + agent_devices
    devices = []
    iommu = iommu_spec(topo)
    if iommu is not None:
        devices.append(iommu)  # before the devices it translates for
    devices += device_specs(topo, layout) + infra_devices
    cpu = topo.machine.cpu
    argv = [qemu, "-name", f"testbed-{topo.name}", "-machine", machine_option(topo, runtime)]
    argv += ["-accel", accel_option(runtime), "-cpu", f"{cpu.model},vendor={cpu.vendor},family={cpu.family}"]
    argv += ["-smp", str(topo.machine.cpus), "-m", f"{topo.machine.memory // (1 << 20)}M"]
    argv += ["-nodefaults", "-display", "none", "-no-reboot", "-serial", f"file:{runtime.console_log}"]
    argv += ["-qmp", f"unix:{runtime.qmp_socket},server=on,wait=off"]
    if runtime.kernel:
        argv += ["-kernel", str(runtime.kernel), "-append", kernel_append(topo, runtime)]
    for name, value in global_options(topo):
        argv += ["-global", f"{name}={value}"]
    for option, spec in backend_options(topo, runtime.backing_dir) + backends:
        argv += [option, spec]
    for device in devices:
        argv += ["-device", device.option()]
    if runtime.paused:
        argv.append("-S")
    return argv


INHERITED_MONITOR_ID = "testbed-qmp"


def inherited_monitor_args(fd: int) -> list[str]:
    """A QMP monitor on a connected socket QEMU inherits as descriptor `fd` (its end of a
    socketpair; the launcher keeps the other). Added at start, when the number is known: it
    is not part of the rendered command, which keeps the path-based `-qmp` for everyone else."""
    if fd < 3:
        raise ValueError(f"fd {fd}: QEMU's stdin/stdout/stderr cannot carry a monitor")
    return [
        "-chardev",
        f"socket,id={INHERITED_MONITOR_ID},fd={fd}",
        "-mon",
        f"chardev={INHERITED_MONITOR_ID},mode=control",
    ]


def hotplug_device(topo: Topology, endpoint_id: str) -> DeviceSpec:
    """What `device_add` needs to plug an endpoint (declared `plugged: false`, or unplugged before)."""
    layout = build_layout(topo)
    return endpoint_spec(layout, topo.endpoint(endpoint_id))


def preview_runtime(accel: str = "tcg", workdir: Path = Path("RUNDIR")) -> Runtime:
    """Stand-in paths for `testbed render` and the golden files: the shape of a real launch."""
    return Runtime(
        accel=accel,
        kernel=Path("BZIMAGE"),
        disk=workdir / "disk.qcow2",
        qmp_socket=workdir / "qmp.sock",
        console_log=workdir / "console.log",
        backing_dir=workdir / "backing",
        agent_socket=workdir / "agent.sock",
    )


__all__ = ["hotplug_device", "inherited_monitor_args", "kernel_append", "preview_runtime", "render_argv"]
