"""Rendering: topology + runtime → QEMU argv (a list, never a shell string)."""

from .argv import device_models, hotplug_device, inherited_monitor_args, kernel_append, preview_runtime, render_argv
from .qdev import BackingFile, DeviceSpec, backing_files
from .runtime import Runtime

__all__ = [
    "device_models",
    "BackingFile",
    "DeviceSpec",
    "Runtime",
    "backing_files",
    "hotplug_device",
    "inherited_monitor_args",
    "kernel_append",
    "preview_runtime",
    "render_argv",
]
