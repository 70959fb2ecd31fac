"""The probe names map types from the tree's own enum: reordered, renamed or added members
are named as that tree declares them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.probe.map_types import GENERATED, HEADER, generate, member_names, render

ENUM_7_2 = """
enum pci_p2pdma_map_type {
	/*
	 * PCI_P2PDMA_MAP_UNKNOWN: Used internally as an initial state before
	 * the mapping type has been calculated.
	 */
	PCI_P2PDMA_MAP_UNKNOWN = 0,

	/* Not a PCI P2PDMA transfer. */
	PCI_P2PDMA_MAP_NONE,
	PCI_P2PDMA_MAP_NOT_SUPPORTED,
	PCI_P2PDMA_MAP_BUS_ADDR, // a switch
	PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
};
"""


def test_the_7_2_enum_is_read_in_order():
    assert member_names(ENUM_7_2) == (
        "PCI_P2PDMA_MAP_UNKNOWN",
        "PCI_P2PDMA_MAP_NONE",
        "PCI_P2PDMA_MAP_NOT_SUPPORTED",
        "PCI_P2PDMA_MAP_BUS_ADDR",
        "PCI_P2PDMA_MAP_THRU_HOST_BRIDGE",
    )


def test_a_reordered_enum_with_a_new_member_names_each_by_its_own_value(tmp_path: Path):
    """Compiled with the generated table: each number prints the name the enum gives it."""
    series = "enum pci_p2pdma_map_type {\n\tPCI_P2PDMA_MAP_BUS_ADDR = 7,\n\tPCI_P2PDMA_MAP_NONE = 1,\n" \
        "\tPCI_P2PDMA_MAP_SWITCH_LOCAL,\n};\n"  # fmt: skip
    (tmp_path / "t.c").write_text(
        "#include <stdio.h>\n" + series + render(member_names(series)) + "int main(void)\n{\n"
        '\tprintf("%s %s %s\\n", probe_map_type_names[7], probe_map_type_names[1],'
        " probe_map_type_names[2]);\n\treturn 0;\n}\n"
    )
    subprocess.run(["cc", "-o", str(tmp_path / "t"), str(tmp_path / "t.c")], check=True)
    out = subprocess.run([str(tmp_path / "t")], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["BUS_ADDR", "NONE", "SWITCH_LOCAL"]


def test_a_tree_without_the_enum_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="missing"):
        generate(tmp_path, tmp_path)
    (tmp_path / HEADER).parent.mkdir(parents=True)
    (tmp_path / HEADER).write_text("/* no enum here */\n")
    with pytest.raises(ConfigError, match="no `enum pci_p2pdma_map_type"):
        generate(tmp_path, tmp_path)


def test_generate_writes_the_table_beside_the_module(tmp_path: Path):
    (tmp_path / HEADER).parent.mkdir(parents=True)
    (tmp_path / HEADER).write_text(ENUM_7_2)
    out = generate(tmp_path, tmp_path)
    assert out == tmp_path / GENERATED
    assert '[PCI_P2PDMA_MAP_THRU_HOST_BRIDGE] = "THRU_HOST_BRIDGE",' in out.read_text()
