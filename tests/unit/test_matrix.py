"""testbed matrix: cells from the shipped topologies, durations from earlier run.json files,
shards that are stable and balanced."""

from __future__ import annotations

import json

import pytest

from testbed.cli import main
from testbed.matrix.cells import DEFAULT_ESTIMATE_S, Cell, _topology_of, cells, measured
from testbed.matrix.shard import parse_shard, shards
from testbed.topology import load_topology, shipped_names
from testbed.topology.load import iommu_modes


def test_every_shipped_topology_and_its_iommu_variants_times_configs():
    found = cells(accels=("kvm", "tcg"))
    topologies = sum(1 + len(iommu_modes(load_topology(n))) for n in shipped_names())
    assert len(found) == topologies * 2 * 2
    assert len({c.id for c in found}) == len(found)
    variant = next(c for c in found if c.id == "two-switch.iommu-intel-pt-default-kvm")
    assert variant.iommu == "intel/passthrough" and variant.pytest_args()[3] == "two-switch.iommu-intel-pt"
    assert len(cells(accels=("kvm",), iommu_variants=False)) == len(shipped_names()) * 2
    two = next(c for c in found if c.id == "two-switch-iommu-pt-debug-full-tcg")
    assert two.iommu == "intel/passthrough"
    assert two.pytest_args() == [
        "tests/vm", "--matrix", "--topology", "two-switch-iommu-pt", "--kernel-config", "debug-full", "--accel", "tcg"
    ]  # fmt: skip


def test_durations_come_from_earlier_runs(tmp_path):
    def run(name: str, config: str, durations: dict, booted_as: str | None = None) -> None:
        d = tmp_path / name
        d.mkdir()
        boots = [{"kernel": {"config_set": config}}]
        if booted_as is not None:
            boots[0]["kernel_config"] = booted_as
        (d / "run.json").write_text(json.dumps({"boots": boots, "durations": durations}))

    run("a", "default", {"t.py::x[two-switch]": 10, "t.py::y[two-switch-iommu-pt-case]": 5, "t.py::unit": 99})
    run("b", "default", {"t.py::x[two-switch]": 30})
    run("c", "debug", {"t.py::x[two-switch]": 100})
    # debug-full boots the debug set's build: the run counts for debug-full, not debug
    run("d", "debug", {"t.py::x[two-switch]": 300}, booted_as="debug-full")
    got = measured(sorted(tmp_path.glob("*/run.json")))
    assert got == {
        ("two-switch", "default"): 20.0,
        ("two-switch-iommu-pt", "default"): 5.0,
        ("two-switch", "debug"): 100.0,
        ("two-switch", "debug-full"): 300.0,
    }
    by_id = {c.id: c.estimate_s for c in cells(["two-switch", "acs"], durations=got)}
    assert by_id["two-switch-default-kvm"] == 20.0 and by_id["acs-default-kvm"] == DEFAULT_ESTIMATE_S


def test_topology_of_picks_the_longest_shipped_name():
    assert _topology_of("tests/vm/t.py::x[two-switch-iommu-pt]") == "two-switch-iommu-pt"
    assert _topology_of("tests/vm/t.py::x[two-switch-0-4096]") == "two-switch"
    assert _topology_of("tests/unit/t.py::x") is None
    assert _topology_of("tests/vm/t.py::x[two-switch.iommu-intel-pt-0-4096]") == "two-switch.iommu-intel-pt"


def _cell(name: str, seconds: float) -> Cell:
    return Cell(name, name, "default", "kvm", "none", seconds)


def test_shards_are_balanced_and_stable():
    found = [_cell(f"c{i:02d}", s) for i, s in enumerate([100, 90, 80, 40, 30, 20, 10, 10])]
    parts = shards(found, 3)
    assert sorted(c.id for part in parts for c in part) == sorted(c.id for c in found)  # each once
    loads = [sum(c.estimate_s for c in part) for part in parts]
    assert max(loads) - min(loads) <= 30
    assert shards(list(reversed(found)), 3) == parts  # the order cells come in does not matter


def test_shard_argument():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_matrix_command(capsys, tmp_path):
    assert (
        main(["matrix", "--json", "--topology", "two-switch", "--config", "default", "--durations", str(tmp_path)]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in doc["include"]] == [
        "two-switch-default-kvm",
        "two-switch.iommu-intel-default-kvm",
        "two-switch.iommu-intel-pt-default-kvm",
        "two-switch.iommu-virtio-default-kvm",
    ]
    argv = ["matrix", "--json", "--topology", "two-switch", "--config", "default", "--iommu", "own"]
    assert main([*argv, "--durations", str(tmp_path)]) == 0
    assert [c["id"] for c in json.loads(capsys.readouterr().out)["include"]] == ["two-switch-default-kvm"]
    assert main(["matrix", "--shard", "9/2"]) == 2
