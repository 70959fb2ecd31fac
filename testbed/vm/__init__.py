"""The VM layer: launch QEMU, talk QMP, read the console, reach the guest over SSH."""

from ..timeouts import Deadline, Timeouts
from .accel import AccelDecision, resolve_accel
from .machine import BootStalled, Machine

__all__ = ["AccelDecision", "BootStalled", "Deadline", "Machine", "Timeouts", "resolve_accel"]
