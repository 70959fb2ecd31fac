"""The guest side: SSH to a booted VM, and helper modules that run under the guest's python3."""
