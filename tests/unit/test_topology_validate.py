"""Every validation rule: bad input yields one precise problem with file:line and the menu."""

from __future__ import annotations

import pytest

from testbed.topology import TopologyError, load_topology, shipped_names
from testbed.topology.model import EndpointKind, HotplugMode, IommuMode, IommuType

from .topo_helpers import BASE, load_text, one_problem, problems_of


def test_base_is_valid():
    topo = load_text(BASE)
    assert [ep.id for ep in topo.endpoints] == ["nvme0", "nvme1", "nvme2"]
    assert topo.switches[0].downstream == ("sw1-d0", "sw1-d1")
    assert topo.hotplug is HotplugMode.NATIVE
    assert topo.iommu.type is IommuType.NONE


@pytest.mark.parametrize("name", shipped_names())
def test_shipped_topologies_are_valid(name):
    topo = load_topology(name)
    assert topo.description
    assert topo.expectations, "each shipped topology declares its expected verdicts"


def test_defaults():
    topo = load_text(BASE)
    assert topo.machine.cpus == 2 and topo.machine.memory == 2 << 30
    assert (topo.machine.cpu.model, topo.machine.cpu.vendor, topo.machine.cpu.family) == ("qemu64", "AuthenticAMD", 15)
    assert topo.iommu.mode is IommuMode.TRANSLATED
    assert load_text(BASE.replace("hotplug: native\n", "")).hotplug is HotplugMode.ACPI


def test_unknown_top_level_key_reports_line_and_menu():
    text = BASE + "extra_stuff: 1\n"
    one_problem(text, "t.yaml:12:", "extra_stuff: unknown key", "allowed: name, description")


def test_unknown_endpoint_kind():
    text = BASE.replace("kind: nvme, bus: rp2", "kind: nvm, bus: rp2")
    one_problem(text, "t.yaml:11:", "endpoints[2].kind", "unknown value 'nvm'", "nvme, ivshmem, edu, virtio-blk")


def test_unknown_endpoint_key():
    text = BASE.replace("bus: rp2, size: 64M}", "bus: rp2, size: 64M, cmbsize: 2M}")
    one_problem(text, "endpoints[2].cmbsize: unknown key")


def test_key_that_does_not_apply_to_kind():
    text = BASE + "  - {id: edu0, kind: edu, bus: pcie.0, cmb: 4M}\n"
    one_problem(text, "endpoints[3].cmb", "does not apply to a edu endpoint")


def test_every_problem_is_reported_at_once():
    text = BASE.replace("cmb: 64M", "cmb: 3M").replace("bus: rp2", "bus: rp9") + "bogus: 1\n"
    found = problems_of(text)
    assert len(found) == 3, found
    assert any("rp9" in p for p in found) and any("CMB" in p for p in found) and any("bogus" in p for p in found)


def test_duplicate_ids():
    text = BASE.replace("id: nvme1", "id: nvme0")
    found = problems_of(text)
    assert len(found) == 2 and all("duplicate id 'nvme0'" in p for p in found)


def test_duplicate_id_between_port_and_endpoint():
    text = BASE.replace("id: nvme2", "id: sw1-d1")
    assert any("duplicate id 'sw1-d1'" in p for p in problems_of(text))


def test_duplicate_yaml_key():
    text = BASE.replace("hotplug: native\n", "hotplug: native\nhotplug: acpi\n")
    one_problem(text, "t.yaml:3:", "hotplug: duplicate key")


def test_invalid_id():
    text = BASE.replace("id: nvme2", "id: NVMe 2")
    one_problem(text, "invalid id 'NVMe 2'", "lower-case letters")


def test_device_on_missing_port():
    text = BASE.replace("bus: rp2", "bus: rp7")
    one_problem(
        text, "t.yaml:11:", "endpoints[2].bus", "'rp7', which does not exist", "pcie.0, rp1, rp2, sw1-d0, sw1-d1"
    )


def test_device_on_switch_upstream_port():
    text = BASE.replace("bus: rp2", "bus: sw1")
    one_problem(text, "switch's upstream port", "allowed: sw1-d0, sw1-d1")


def test_root_port_on_non_root_bus():
    text = BASE.replace("  - id: rp2\n", "  - {id: rp2, bus: sw1-d1}\n").replace(
        "bus: sw1-d1, size: 64M}", "bus: rp1, size: 64M}"
    )
    assert any("not a root bus" in p for p in problems_of(text))


def test_switch_on_root_bus_is_refused():
    text = BASE.replace("{id: sw1, bus: rp1,", "{id: sw1, bus: pcie.0,")
    one_problem(text, "switches[0].bus", "not a port")


def test_switch_without_downstream_ports():
    text = BASE.replace("downstream: 2", "downstream: []")
    assert any("at least one downstream port" in p for p in problems_of(text))
    text = BASE.replace("downstream: 2", "downstream: 0")
    assert any("at least one downstream port" in p for p in problems_of(text))


def test_switch_with_too_many_downstream_ports():
    text = BASE.replace("downstream: 2", "downstream: 33")
    assert any("do not fit on one bus" in p for p in problems_of(text))


def test_two_devices_on_one_port_function():
    text = BASE + "  - {id: nvme3, kind: nvme, bus: rp2, size: 64M}\n"
    found = problems_of(text)
    assert found and all("more than one device at function 0" in p for p in found)


def test_multifunction_needs_function_zero():
    text = BASE.replace("bus: rp2, size: 64M}", "bus: rp2, function: 1, size: 64M}")
    one_problem(text, "no function 0")


def test_multifunction_on_port_is_valid():
    topo = load_text(BASE + "  - {id: nvme3, kind: nvme, bus: rp2, function: 1, size: 64M}\n")
    assert topo.endpoint("nvme3").function == 1


def test_switch_and_endpoint_share_port():
    text = BASE + "  - {id: nvme3, kind: nvme, bus: rp1, function: 1, size: 64M}\n"
    assert any("holds switch 'sw1'" in p for p in problems_of(text))


def test_reserved_root_bus_slot():
    text = BASE + "  - {id: edu0, kind: edu, bus: pcie.0, slot: 0x1d}\n"
    one_problem(text, "slot 0x1d of pcie.0 is taken by the root disk")


def test_cmb_not_power_of_two():
    one_problem(BASE.replace("cmb: 64M", "cmb: 3M"), "endpoints[0].cmb", "not a power of two")


def test_cmb_below_minimum():
    one_problem(BASE.replace("cmb: 64M", "cmb: 1M"), "below the minimum", "2M or more")


def test_cmb_not_whole_mib():
    one_problem(BASE.replace("cmb: 64M", "cmb: 512K"), "not a power of two in MiB")


def test_size_not_a_size():
    one_problem(BASE.replace("size: 64M, cmb", "size: lots, cmb"), "'lots' is not a size")


def test_nvme_namespace_too_small():
    one_problem(BASE.replace("size: 64M, cmb", "size: 4K, cmb"), "namespace size 4K is too small")


def test_ivshmem_size_power_of_two():
    text = BASE + "  - {id: shm0, kind: ivshmem, bus: pcie.0, size: 3M}\n"
    one_problem(text, "ivshmem size 3M is not a power of two")


def test_edu_dma_mask_form():
    text = BASE + "  - {id: edu0, kind: edu, bus: pcie.0, dma_mask: 0x1000}\n"
    one_problem(text, "dma_mask 0x1000 is not of the form 2^n-1")
    topo = load_text(BASE + "  - {id: edu0, kind: edu, bus: pcie.0, dma_mask: 0xffffffff}\n")
    assert topo.endpoint("edu0").dma_mask == 0xFFFFFFFF


def test_too_many_cpus():
    one_problem(BASE + "machine: {cpus: 16}\n", "machine.cpus", "16 is out of range", "from 1 to 8")


def test_too_little_memory():
    one_problem(BASE + "machine: {memory: 128M}\n", "too little memory")


def test_host_cpu_model_refused():
    one_problem(BASE + "machine: {cpu: host}\n", "follows the host")


def test_unknown_cpu_model_needs_vendor_and_family():
    one_problem(BASE + "machine: {cpu: Opteron_G5}\n", "give vendor and family")
    topo = load_text(BASE + "machine: {cpu: {model: Opteron_G5, vendor: AuthenticAMD, family: 21}}\n")
    assert topo.machine.cpu.family == 21


def test_epyc_defaults_to_family_23():
    topo = load_text(BASE + "machine: {cpu: EPYC}\n")
    assert (topo.machine.cpu.vendor, topo.machine.cpu.family) == ("AuthenticAMD", 23)


def test_unknown_iommu():
    one_problem(
        BASE + "iommu: {type: arm-smmu}\n", "iommu.type", "unknown value 'arm-smmu'", "none, intel, virtio, amd"
    )


def test_passthrough_without_iommu():
    one_problem(BASE + "iommu: {mode: passthrough}\n", "passthrough mode needs an IOMMU")


def test_iommu_shorthand():
    topo = load_text(BASE + "iommu: virtio\n")
    assert topo.iommu.type is IommuType.VIRTIO and topo.iommu.mode is IommuMode.TRANSLATED


def test_unknown_hotplug_mode():
    one_problem(BASE.replace("hotplug: native", "hotplug: shpc"), "unknown value 'shpc'", "native, acpi")


def test_plugged_later_on_port_without_hotplug():
    text = BASE.replace("  - id: rp2\n", "  - {id: rp2, hotplug: false}\n").replace(
        "bus: rp2, size: 64M}", "bus: rp2, size: 64M, plugged: false}"
    )
    one_problem(text, "has hotplug off")


def test_plugged_later_on_root_bus_in_native_mode():
    text = BASE + "  - {id: edu0, kind: edu, bus: pcie.0, plugged: false}\n"
    one_problem(text, "no hot-plug port in native mode")
    load_text(text.replace("hotplug: native", "hotplug: acpi"))


def test_too_many_bridges_for_pxb_bus_numbers():
    text = BASE + "host_bridges:\n  - {id: pxb1, bus_nr: 3}\n"
    one_problem(text, "'pcie.0' needs buses 0..5", "only 0..2 are free")


def test_pxb_bus_nr_out_of_range():
    one_problem(BASE + "host_bridges:\n  - {id: pxb1, bus_nr: 300}\n", "300 is out of range")


def test_too_many_ports_for_bus_numbers():
    ports = "".join(f"  - {{id: sw{n}, bus: sw{n - 1}-d0, downstream: 32}}\n" for n in range(2, 10))
    text = BASE.replace("switches:\n", "switches:\n" + ports)
    text = text.replace("{id: nvme0, kind: nvme, bus: sw1-d0", "{id: nvme0, kind: nvme, bus: sw9-d1")
    found = problems_of(text)
    assert any("needs buses 0.." in p and "0..255" in p for p in found), found


def test_kernel_arg_owned_by_testbed():
    one_problem(BASE + "kernel_args: [console=tty0]\n", "is set by the testbed itself")


def test_disable_acs_redir_must_match_a_port():
    one_problem(BASE + "kernel_args: ['pci=disable_acs_redir=0000:00:09.0']\n", "matches no port")
    load_text(BASE + "kernel_args: ['pci=disable_acs_redir=0000:00:02.0']\n")
    load_text(BASE + "kernel_args: ['pci=disable_acs_redir=pci:1b36:000c']\n")


def test_disable_acs_redir_unparsable():
    one_problem(BASE + "kernel_args: ['pci=disable_acs_redir=rp1']\n", "'rp1' is not a device Linux can parse")


def test_config_acs_not_modeled():
    one_problem(BASE + "kernel_args: ['pci=config_acs=000000@pci:1b36:000c']\n", "not modeled")


def test_expectation_names_unknown_device():
    text = BASE + "expect:\n  - {provider: nvme0, client: nvme9, map_type: BUS_ADDR}\n"
    one_problem(text, "expect[0].client", "unknown device 'nvme9'", "nvme0, nvme1, nvme2")


def test_expectation_provider_without_bar():
    text = BASE + "expect:\n  - {provider: nvme1, client: nvme0, map_type: BUS_ADDR}\n"
    one_problem(text, "'nvme1' has no BAR", "nvme0")


def test_expectation_unknown_map_type():
    text = BASE + "expect:\n  - {provider: nvme0, client: nvme1, map_type: P2P}\n"
    one_problem(text, "unknown value 'P2P'", "BUS_ADDR, THRU_HOST_BRIDGE, NOT_SUPPORTED")


def test_expectation_client_that_cannot_dma():
    text = (
        BASE
        + "  - {id: shm0, kind: ivshmem, bus: pcie.0}\n"
        + "expect:\n  - {provider: nvme0, client: shm0, map_type: BUS_ADDR}\n"
    )
    one_problem(text, "cannot master DMA")


def test_not_yaml():
    with pytest.raises(TopologyError) as info:
        load_text("description: [unclosed\n")
    assert "not valid YAML" in str(info.value)


def test_empty_file():
    with pytest.raises(TopologyError, match="empty"):
        load_text("")


def test_missing_required_keys():
    found = problems_of("name: x\n")
    assert any("missing required key 'description'" in p for p in found)
    assert any("missing required key 'endpoints'" in p for p in found)


def test_unknown_shipped_name_lists_menu():
    from testbed.errors import ConfigError

    with pytest.raises(ConfigError, match="shipped: .*two-switch"):
        load_topology("no-such-topology")


def test_virtio_blk_kind():
    topo = load_text(BASE + "  - {id: vblk0, kind: virtio-blk, bus: pcie.0, size: 8M}\n")
    assert topo.endpoint("vblk0").kind is EndpointKind.VIRTIO_BLK


def test_endpoint_directly_on_a_pxb_is_refused():
    """QEMU: "Only PCI/PCIe bridges can be plugged into pxb-pcie" (found by a user's file)."""
    text = (
        "host_bridges:\n  - {id: pxb1, bus_nr: 32}\nroot_ports:\n  - {id: rp2, bus: pxb1}\n"
        "endpoints:\n  - {id: disk, kind: virtio-blk, bus: pxb1, size: 16M}\n"
    )
    with pytest.raises(TopologyError) as exc:
        load_topology("mine.yaml", text)
    message = str(exc.value)
    assert "mine.yaml:6" in message and "pxb-pcie host bridge" in message and "(rp2)" in message, message


LOOP = """\
description: two switches, each below the other
root_ports:
  - id: rp1
switches:
  - {id: swa, bus: swb-d0, downstream: [swa-d0]}
  - {id: swb, bus: swa-d0, downstream: [swb-d0]}
endpoints:
  - {id: nvme0, kind: nvme, bus: rp1, size: 64M}
"""


@pytest.mark.parametrize("extra", ["", 'kernel_args: ["pci=disable_acs_redir=pci:1b36:000c"]\n'])
def test_a_switch_loop_is_reported_on_a_switch_line_and_never_spins(extra):
    import signal

    def spinning(*_):
        raise AssertionError("validation of a switch loop did not finish")

    old = signal.signal(signal.SIGALRM, spinning)
    signal.alarm(10)
    try:
        problem = one_problem(LOOP + extra, "switches are connected in a loop: swa -> swb -> swa")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert problem.startswith("t.yaml:5: switches[0].bus:"), problem


def test_validate_goes_on_past_a_missing_file(tmp_path, capsys):
    from testbed.cli import main

    bad = tmp_path / "loop.yaml"
    bad.write_text("name: loop\n" + LOOP)
    assert main(["validate", str(tmp_path / "missing.yaml"), str(bad), "two-switch"]) == 2
    out = capsys.readouterr().out
    assert "missing.yaml: topology file not found" in out
    assert "loop.yaml:6: switches[0].bus: switches are connected in a loop" in out
    assert "ok: " in out and "two-switch.yaml" in out


def test_explain_json_has_every_verdict(capsys):
    import json

    from testbed.cli import main

    assert main(["explain", "two-switch", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    pairs = {(v["provider"], v["client"]): v["map_type"] for v in doc["verdicts"]}
    assert pairs[("nvme0", "nvme1")] == "BUS_ADDR" and pairs[("nvme0", "nvme2")] == "NOT_SUPPORTED"
    assert doc["cpu"]["family"] == 15 and doc["disagreements"] == []
