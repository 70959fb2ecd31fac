"""The host's QEMU is probed, not assumed: its version and device models from the binary, and a
topology whose models it lacks is refused before any kernel build or boot."""

from __future__ import annotations

import pytest

from testbed.errors import ConfigError
from testbed.render import device_models
from testbed.topology import load_topology
from testbed.vm import launch
from testbed.vm.qemu import QemuBinary, parse_devices, parse_version

HELP = """Controller/Bridge/Hub devices:
name "pcie-root-port", bus PCI
name "xio3130-downstream", bus PCI, desc "TI X3130 Downstream Port of PCI Express Switch"

Misc devices:
name "edu", bus PCI
name "ivshmem-plain", bus PCI, desc "Inter-VM shared memory"
"""


def test_versions_of_debian_and_ubuntu_banners():
    assert parse_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)") == (7, 2, 22)
    assert parse_version("QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1.4)") == (8, 2, 2)
    assert parse_version("QEMU emulator version 10.1") == (10, 1, 0)
    with pytest.raises(ConfigError, match="cannot read a QEMU version"):
        parse_version("qemu, some build")


def test_device_models_from_device_help():
    assert parse_devices(HELP) == {"pcie-root-port", "xio3130-downstream", "edu", "ivshmem-plain"}


def test_a_topology_names_every_model_it_uses_hot_plugged_ones_too():
    models = device_models(load_topology("two-switch"))
    assert {"x3130-upstream", "xio3130-downstream", "nvme"} <= models
    assert "intel-iommu" in device_models(load_topology("p2pdma-thru-iommu"))


def test_a_missing_model_is_refused_before_the_kernel_is_built(monkeypatch: pytest.MonkeyPatch):
    lacking = QemuBinary("/opt/qemu", "QEMU emulator version 6.0.0", (6, 0, 0), parse_devices(HELP))
    monkeypatch.setattr(launch, "probe_qemu", lambda: lacking)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the kernel was asked for")

    monkeypatch.setattr("testbed.kernel.ensure_kernel", no_build)
    with pytest.raises(ConfigError, match=r"two-switch needs the device model\(s\) .*x3130-upstream.*6\.0\.0"):
        launch.plan_launch("two-switch", accel="tcg")
