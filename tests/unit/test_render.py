"""Rendering: golden argv per shipped topology, and the decisions behind the options."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from testbed.render import Runtime, backing_files, hotplug_device, kernel_append, preview_runtime, render_argv
from testbed.topology import load_topology, shipped_names

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
REGEN = os.environ.get("TESTBED_REGEN_GOLDEN") == "1"


@pytest.mark.parametrize("name", shipped_names())
def test_golden_argv(name):
    """Set TESTBED_REGEN_GOLDEN=1 to rewrite tests/golden/*.argv after an intended change."""
    argv = render_argv(load_topology(name), preview_runtime())
    text = "\n".join(argv) + "\n"
    path = GOLDEN / f"{name}.argv"
    if REGEN:
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with TESTBED_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"rendered argv of {name} differs from {path}"


def test_every_golden_file_has_a_topology():
    assert sorted(p.stem for p in GOLDEN.glob("*.argv")) == shipped_names()


def test_rendering_is_deterministic():
    topo = load_topology("pxb")
    assert render_argv(topo, preview_runtime()) == render_argv(load_topology("pxb"), preview_runtime())


def test_argv_is_a_list_of_plain_strings_without_newlines():
    for name in shipped_names():
        argv = render_argv(load_topology(name), preview_runtime())
        assert argv[0] == "qemu-system-x86_64"
        assert all(isinstance(a, str) and a and "\n" not in a for a in argv)


def _option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


def test_native_hotplug_global():
    argv = render_argv(load_topology("two-switch"), preview_runtime())
    assert "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off" in _option_values(argv, "-global")


def test_acpi_hotplug_has_no_global():
    from .topo_helpers import BASE, load_text

    argv = render_argv(load_text(BASE.replace("hotplug: native", "hotplug: acpi")), preview_runtime())
    assert _option_values(argv, "-global") == []


def test_cpu_is_pinned_with_vendor_and_family():
    argv = render_argv(load_topology("amd-zen"), preview_runtime())
    assert _option_values(argv, "-cpu") == ["qemu64,vendor=AuthenticAMD,family=23"]


def test_intel_iommu_first_and_split_irqchip_only_under_kvm():
    topo = load_topology("two-switch-iommu")
    tcg = render_argv(topo, preview_runtime("tcg"))
    kvm = render_argv(topo, preview_runtime("kvm"))
    assert _option_values(tcg, "-device")[0].startswith("intel-iommu")
    assert _option_values(tcg, "-machine") == ["q35"]
    assert _option_values(kvm, "-machine") == ["q35,kernel-irqchip=split"]
    assert _option_values(kvm, "-accel") == ["kvm"] and _option_values(tcg, "-accel") == ["tcg,thread=multi"]


def test_kernel_command_line():
    rt = preview_runtime()
    assert "intel_iommu=on iommu.passthrough=0 iommu.strict=1" in kernel_append(load_topology("two-switch-iommu"), rt)
    assert "iommu.passthrough=1" in kernel_append(load_topology("two-switch-iommu-pt"), rt)
    acs = kernel_append(load_topology("acs"), rt)
    assert acs.endswith("pci=disable_acs_redir=0000:00:03.0")
    assert "iommu" not in kernel_append(load_topology("two-switch"), rt)
    extra = Runtime(**{**rt.__dict__, "extra_append": ("nvme.use_cmb_sqes=0",)})
    assert kernel_append(load_topology("two-switch"), extra).endswith("nvme.use_cmb_sqes=0")


def test_root_port_options():
    argv = render_argv(load_topology("acs"), preview_runtime())
    rp3 = next(d for d in _option_values(argv, "-device") if d.startswith("pcie-root-port,id=rp3,"))
    assert "disable-acs=on" in rp3
    rp4 = next(
        d
        for d in _option_values(render_argv(load_topology("root-ports"), preview_runtime()), "-device")
        if d.startswith("pcie-root-port,id=rp4,")
    )
    assert f"mem-reserve={2 << 20}" in rp4 and f"pref64-reserve={128 << 20}" in rp4


def test_multifunction_flag_on_function_zero_only():
    devices = _option_values(render_argv(load_topology("acs"), preview_runtime()), "-device")
    nvme0 = next(d for d in devices if d.startswith("nvme,id=nvme0,"))
    nvme1 = next(d for d in devices if d.startswith("nvme,id=nvme1,"))
    assert "multifunction=on" in nvme0 and "addr=0x00.0" in nvme0
    assert "multifunction" not in nvme1 and "addr=0x00.1" in nvme1


def test_unplugged_endpoint_has_backend_but_no_device():
    topo = load_topology("root-ports")
    argv = render_argv(topo, preview_runtime())
    assert not any(d.startswith("nvme,id=nvme3,") for d in _option_values(argv, "-device"))
    assert any("node-name=drv-nvme3" in d for d in _option_values(argv, "-blockdev"))
    spec = hotplug_device(topo, "nvme3")
    assert spec.qmp_args() == {
        "driver": "nvme",
        "id": "nvme3",
        "serial": "nvme3",
        "drive": "drv-nvme3",
        "cmb_size_mb": 64,  # typed: QEMU 10.0's device_add refuses "64" ("expects uint64")
        "bus": "rp4",
        "addr": "0x00.0",
    }


def test_every_property_the_renderer_emits_has_a_qmp_type():
    """device_add sends typed JSON: a property missing from the tables would go as a string and
    a newer QEMU would refuse the hot-add (cmb_size_mb did, on the built QEMU)."""
    import dataclasses

    from testbed.render.argv import device_specs
    from testbed.render.qdev import BOOL_PROPS, INT_PROPS, STRING_PROPS, iommu_spec
    from testbed.topology import build_layout

    for name in shipped_names():
        topo = dataclasses.replace(load_topology(name), peer_routing=True)
        layout = build_layout(topo)
        specs = [*device_specs(topo, layout), *(hotplug_device(topo, ep.id) for ep in topo.endpoints)]
        specs += [s for s in [iommu_spec(topo)] if s is not None]
        for spec in specs:
            unknown = {k for k, _ in spec.props} - INT_PROPS - BOOL_PROPS - STRING_PROPS
            assert not unknown, f"{name}: {spec.driver} renders {sorted(unknown)} without a QMP type"
            spec.qmp_args()  # every value converts


def test_ivshmem_backend_is_a_shared_host_file():
    argv = render_argv(load_topology("vfio-dmabuf"), preview_runtime())
    (obj,) = _option_values(argv, "-object")
    assert obj == f"memory-backend-file,id=mem-shm0,mem-path=RUNDIR/backing/shm0.mem,size={1 << 20},share=on"
    files = backing_files(load_topology("vfio-dmabuf"), Path("/b"))
    assert [(f.endpoint, str(f.path), f.size) for f in files] == [("shm0", "/b/shm0.mem", 1 << 20)]


def test_paths_with_commas_are_escaped():
    rt = Runtime(**{**preview_runtime().__dict__, "disk": Path("/tmp/a,b/disk.qcow2")})
    argv = render_argv(load_topology("two-switch"), rt)
    assert any(d.startswith("file=/tmp/a,,b/disk.qcow2,") for d in _option_values(argv, "-drive"))


def test_paused_and_no_kernel():
    rt = Runtime(**{**preview_runtime().__dict__, "paused": True, "kernel": None})
    argv = render_argv(load_topology("two-switch"), rt)
    assert argv[-1] == "-S" and "-kernel" not in argv and "-append" not in argv


def test_render_command_prints_shell_quoted(capsys):
    from testbed.cli import main

    assert main(["render", "two-switch"]) == 0
    out = capsys.readouterr().out.strip()
    assert shlex.split(out) == render_argv(load_topology("two-switch"), preview_runtime())


def test_the_agent_port_is_rendered_only_with_its_socket():
    """A launch with an agent socket gets the virtio-serial port the guest's listener opens
    (nr=1, the name it checks); one without (a kernel from elsewhere) gets no such device."""
    topo = load_topology("two-switch")
    with_port = render_argv(topo, preview_runtime())
    assert "socket,id=agent,path=RUNDIR/agent.sock,server=on,wait=off" in with_port
    assert "virtio-serial-pci,id=agent-serial,bus=pcie.0,addr=0x1b.0" in with_port
    assert "virtserialport,id=agent-port,bus=agent-serial.0,nr=1,chardev=agent,name=org.testbed.agent" in with_port
    from dataclasses import replace

    without = render_argv(topo, replace(preview_runtime(), agent_socket=None))
    assert not [a for a in without if "virtio-serial" in a or "id=agent" in a]


def test_the_agent_slot_is_refused_to_a_topology(tmp_path):
    from testbed.errors import ConfigError

    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nroot_ports:\n  - id: rp1\n    slot: 0x1b\nendpoints:\n  - id: nvme0\n    kind: nvme\n"
        "    parent: rp1\n"
    )
    with pytest.raises(ConfigError, match="slot 0x1b of pcie.0 is taken by the guest agent's virtio-serial port"):
        load_topology(path)
