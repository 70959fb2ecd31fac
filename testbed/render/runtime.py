"""The per-launch parts of a QEMU command that are not the topology: kernel, disk, sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Runtime:
    """Everything a launch adds to a topology's devices. Paths are absolute.

    `ssh_host_port` 0 lets the host pick a free port (read back over QMP after start), so
    parallel VMs cannot collide.
    """

    accel: str  # "kvm" | "tcg"
    kernel: Path | None  # None: no -kernel (firmware-only runs such as the PCI tree check)
    disk: Path  # the per-VM qcow2 overlay, never the base image
    qmp_socket: Path
    console_log: Path
    backing_dir: Path  # host files behind NVMe namespaces and ivshmem BARs
    extra_append: tuple[str, ...] = field(default_factory=tuple)
    ssh_host_port: int = 0
    paused: bool = False  # -S: stop before the firmware runs (tree checks)
    # the guest agent's virtio-serial port, a QEMU socket here; None: the agent is reached
    # through SSH (a kernel without CONFIG_VIRTIO_CONSOLE, a firmware-only run)
    agent_socket: Path | None = None
    # under TCG: a host thread per vCPU ("multi") or one for all ("single"; testbed/vm/tcg_threads.py)
    tcg_thread: str = "multi"
