"""Hints for dropped options, read from a small Kconfig tree written to tmp."""

from __future__ import annotations

from pathlib import Path

from testbed.kernel import kconfig_deps

MM = """\
menu "Memory"

config MEMORY_HOTPLUG
	bool "Memory hotplug"
	depends on SPARSEMEM

config ZONE_DEVICE
	bool "Device memory"
	depends on MEMORY_HOTPLUG
	depends on MEMORY_HOTREMOVE && \\
		   SPARSEMEM_VMEMMAP
	help
	  if you say Y here then
	  depends on nothing in prose.

endmenu
"""

DMABUF = """\
config DMA_SHARED_BUFFER
	bool
	default n

config SYNC_FILE
	bool "Explicit Synchronization Framework"
	select DMA_SHARED_BUFFER
"""

VFIO = """\
menu "VFIO"
	depends on PCI

if MMU
config VFIO_PCI_DMABUF
	def_bool y if VFIO_PCI_CORE && PCI_P2PDMA && !NO_DMABUF
endif

endmenu
"""


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "Kconfig").write_text(MM)
    (tmp_path / "drivers").mkdir()
    (tmp_path / "drivers" / "Kconfig").write_text(DMABUF)
    (tmp_path / "drivers" / "Kconfig.vfio").write_text(VFIO)
    return tmp_path


def test_parse_collects_depends_joined_and_not_help():
    (hotplug, zone) = kconfig_deps.parse_kconfig(MM, "mm/Kconfig")
    assert hotplug.depends == ("SPARSEMEM",) and hotplug.has_prompt
    assert zone.where == "mm/Kconfig:7"
    assert zone.depends == ("MEMORY_HOTPLUG", "MEMORY_HOTREMOVE && SPARSEMEM_VMEMMAP")


def test_enclosing_if_menu_and_def_bool_condition():
    (info,) = kconfig_deps.parse_kconfig(VFIO, "k")
    assert info.depends == ("PCI", "MMU", "VFIO_PCI_CORE && PCI_P2PDMA && !NO_DMABUF")
    assert not info.has_prompt


def test_hint_names_unset_dependencies(tmp_path: Path):
    tree = _tree(tmp_path)
    final = {"CONFIG_MEMORY_HOTPLUG": "y", "CONFIG_SPARSEMEM_VMEMMAP": "y"}
    hint = kconfig_deps.hint(tree, "ZONE_DEVICE", final)
    assert "mm/Kconfig:7" in hint and "MEMORY_HOTREMOVE not set" in hint
    assert "SPARSEMEM_VMEMMAP not set" not in hint


def test_hint_negation_is_not_a_missing_dependency(tmp_path: Path):
    hint = kconfig_deps.hint(_tree(tmp_path), "VFIO_PCI_DMABUF", {"CONFIG_PCI": "y", "CONFIG_MMU": "y"})
    assert "(VFIO_PCI_CORE, PCI_P2PDMA not set)" in hint


def test_hint_promptless_symbol_names_selectors(tmp_path: Path):
    hint = kconfig_deps.hint(_tree(tmp_path), "DMA_SHARED_BUFFER", {})
    assert "no prompt" in hint and "SYNC_FILE" in hint


def test_hint_unknown_symbol(tmp_path: Path):
    assert "not defined" in kconfig_deps.hint(_tree(tmp_path), "REFCOUNT_FULL", {})
