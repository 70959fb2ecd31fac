"""Which launches get the guest agent's virtio-serial port: kernels the testbed built with
CONFIG_VIRTIO_CONSOLE, never a bzImage from elsewhere (its agent keeps the SSH channel)."""

from __future__ import annotations

from testbed.kernel.kconfig import load_fragment
from testbed.paths import KERNEL_CONFIGS_DIR
from testbed.vm.launch import has_agent_port


def _entry(tmp_path, config: str | None, manifest: bool = True):
    entry = tmp_path / "kernel"
    entry.mkdir()
    (entry / "bzImage").write_bytes(b"bz")
    if manifest:
        (entry / "manifest.json").write_text('{"key": "k", "release": "7.2.13-testbed"}')
    if config is not None:
        (entry / ".config").write_text(config)
    return entry / "bzImage"


def test_a_testbed_kernel_with_the_virtio_console_gets_the_port(tmp_path):
    assert has_agent_port(_entry(tmp_path, "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_CONSOLE=y\n"))


def test_a_kernel_without_it_or_from_elsewhere_keeps_ssh(tmp_path):
    (tmp_path / "a").mkdir()
    assert not has_agent_port(_entry(tmp_path / "a", "# CONFIG_VIRTIO_CONSOLE is not set\n"))
    (tmp_path / "b").mkdir()
    assert not has_agent_port(_entry(tmp_path / "b", "CONFIG_VIRTIO_CONSOLE=y\n", manifest=False))
    (tmp_path / "c").mkdir()
    assert not has_agent_port(_entry(tmp_path / "c", None))


def test_every_config_set_builds_the_port_in():
    options = {o.name: o.value for o in load_fragment(KERNEL_CONFIGS_DIR / "base.config")}
    assert options.get("CONFIG_VIRTIO_CONSOLE") == "y"
