"""Size parsing and the kernel command-line parser the oracle relies on."""

from __future__ import annotations

import pytest

from testbed.topology.kernel_args import owned_arg, parse_device_spec, parse_kernel_args
from testbed.topology.units import format_size, is_power_of_two, parse_int, parse_size


@pytest.mark.parametrize(
    "text, value",
    [
        ("64M", 64 << 20),
        ("2G", 2 << 30),
        ("512K", 512 << 10),
        ("1MiB", 1 << 20),
        ("4096", 4096),
        (4096, 4096),
        ("2 G", 2 << 30),
    ],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["lots", "-1M", "1.5G", True, None, "M"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_parse_int_and_powers():
    assert parse_int("0xfffffff") == (1 << 28) - 1 and parse_int(7) == 7
    with pytest.raises(ValueError):
        parse_int("seven")
    assert is_power_of_two(64) and not is_power_of_two(0) and not is_power_of_two(96)
    assert format_size(64 << 20) == "64M" and format_size(1000) == "1000"


def test_device_spec_paths_and_ids():
    spec = parse_device_spec("0000:00:02.0/00.0/01.0")
    assert spec.path == (0, 0, ((2, 0), (0, 0), (1, 0)))
    assert spec.matches("0000:00:02.0/00.0/01.0", "104c:8233")
    assert not spec.matches("0000:00:02.0/00.0", "104c:8232")
    assert parse_device_spec("00:02.0").matches("0000:00:02.0", "1b36:000c")
    assert parse_device_spec("pci:1b36:000c").matches("anything", "1b36:000c")
    assert parse_device_spec("pci:1b36:000c").ids == (0x1B36, 0xC, 0, 0)
    assert parse_device_spec("pci:1b36:000c:1af4:1100").matches("x", "1b36:000c", "1af4:1100")
    assert not parse_device_spec("pci:1b36:000c:1af4:1100").matches("x", "1b36:000c", "1b36:0000")
    assert parse_device_spec("pci:0:0").matches("x", "104c:8233", "0000:0000")  # 0 matches anything
    assert parse_device_spec("rp1") is None


def test_parse_kernel_args():
    opts = parse_kernel_args(["pci=realloc,disable_acs_redir=0000:00:02.0;pci:104c:8233", "quiet"])
    assert [s.text for s in opts.disable_acs_redir] == ["0000:00:02.0", "pci:104c:8233"]
    assert not opts.config_acs and not opts.intel_iommu_off
    assert parse_kernel_args(["intel_iommu=off"]).intel_iommu_off
    assert parse_kernel_args(["pci=config_acs=xx@pci:1:2"]).config_acs
    assert parse_kernel_args(["pci=disable_acs_redir=zz"]).unparsed_acs_redir == ("zz",)


def test_owned_args():
    assert owned_arg("console=tty0") and owned_arg("rw") and owned_arg("root=/dev/sda")
    assert not owned_arg("pci=realloc") and not owned_arg("rootwait")
