"""testbed matrix: cells from the shipped topologies, durations from earlier run.json files,
shards that are stable and balanced."""

from __future__ import annotations

import json

import pytest

from testbed.cli import main
from testbed.errors import ConfigError
from testbed.matrix import run as matrix_run
from testbed.matrix.cells import (
    CONFIGS,
    DEFAULT_ESTIMATE_S,
    PRESETS,
    QEMUS,
    Cell,
    _topology_of,
    cell_from_json,
    cells,
    measured,
)
from testbed.matrix.plan import Plan, load_plan
from testbed.matrix.run import prepare
from testbed.matrix.shard import parse_shard, shards
from testbed.topology import load_topology, shipped_names
from testbed.topology.variants import iommu_modes


def test_every_shipped_topology_and_its_iommu_variants_times_configs():
    found = cells(accels=("kvm", "tcg"))
    distro = [n for n in shipped_names() if not any(sw.acs for sw in load_topology(n).switches)]
    topologies = sum(1 + len(iommu_modes(load_topology(n))) for n in distro)
    assert len(found) == topologies * 2 * 2
    assert len({c.id for c in found}) == len(found)
    variant = next(c for c in found if c.id == "two-switch.iommu-intel-pt-default-kvm")
    assert variant.iommu == "intel/passthrough" and variant.pytest_args()[3] == "two-switch.iommu-intel-pt"
    assert len(cells(accels=("kvm",), iommu_variants=False)) == len(distro) * 2
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
        main(
            ["matrix", "--json", "--topology", "two-switch", "--kernel-config", "default", "--durations", str(tmp_path)]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in doc["include"]] == [
        "two-switch-default-kvm",
        "two-switch.iommu-intel-default-kvm",
        "two-switch.iommu-intel-pt-default-kvm",
        "two-switch.iommu-virtio-default-kvm",
        "two-switch.iommu-virtio-lazy-default-kvm",
        "two-switch.iommu-intel-lazy-default-kvm",
    ]
    argv = ["matrix", "--json", "--topology", "two-switch", "--kernel-config", "default", "--iommu", "own"]
    assert main([*argv, "--durations", str(tmp_path)]) == 0
    assert [c["id"] for c in json.loads(capsys.readouterr().out)["include"]] == ["two-switch-default-kvm"]
    assert main(["matrix", "--shard", "9/2"]) == 2


# -- presets, the plan file and the step outputs a CI run is wired with ---------------------------


def test_presets_choose_the_cells_of_a_trigger(capsys, tmp_path):
    assert main(["matrix", "--json", "--preset", "fast", "--durations", str(tmp_path)]) == 0
    fast = [c["id"] for c in json.loads(capsys.readouterr().out)["include"]]
    args = ["--topology", "p2pdma-switch-iommu", "--iommu", "own", "--kernel-config", "default"]
    assert main(["matrix", "--json", *args, "--qemu", "distro", "--qemu", "built", "--durations", str(tmp_path)]) == 0
    both = [c["id"] for c in json.loads(capsys.readouterr().out)["include"]]
    assert both == ["p2pdma-switch-iommu-default-kvm", "p2pdma-switch-iommu-default-kvm-qemu-built"]
    assert fast == ["two-switch-default-kvm", "p2pdma-thru-iommu-default-kvm"]
    assert main(["matrix", "--json", "--preset", "nightly", "--durations", str(tmp_path)]) == 0
    nightly = json.loads(capsys.readouterr().out)["include"]
    assert {c["config"] for c in nightly} == {"default", "debug-full"}
    # every topology cell, and the hot-unplug suite on debug-full without the base fixes (a base
    # fix changes locking and could hide a deadlock a series adds), each test on its own topologies
    assert len(nightly) == len(cells(qemus=QEMUS)) + 1 and all(c["base_fixes"] for c in nightly[:-1])
    # the QEMU axis: the testbed's QEMU where it changes outcomes, within GitHub's 256 jobs
    assert len(nightly) <= 256
    built = [c for c in nightly if c.get("qemu") == "built"]
    assert built and all(
        c["id"].endswith("-qemu-built") and c["pytest_args"][-2:] == ["--qemu", "built"] for c in built
    )
    assert {c["topology"] for c in nightly if c["topology"].startswith("switch-acs")} == {
        c["topology"] for c in built if c["topology"].startswith("switch-acs")
    }  # switch ACS only on the QEMU that has it
    assert "p2pdma-switch-iommu" in {c["topology"] for c in built}
    unfixed = nightly[-1]
    assert (unfixed["suite"], unfixed["config"], unfixed["base_fixes"]) == ("hotunplug", "debug-full", False)
    assert unfixed["pytest_args"] == [
        "tests/vm", "--kernel-config", "debug-full", "--accel", "kvm", "-m", "hotunplug", "--no-base-fixes",
    ]  # fmt: skip
    assert cell_from_json(unfixed, "t").id == "hotunplug-debug-full-no-base-fixes-kvm"
    kernels = Plan(tuple(cell_from_json(c, "t") for c in nightly)).kernel_jobs()["include"]
    assert {"config": "debug-full", "selftest": "debug-full-selftest", "base_fixes": "0"} in kernels
    assert len(kernels) == 3
    # an explicit option overrides its part of the preset
    assert main(["matrix", "--json", "--preset", "fast", "--iommu", "all", "--durations", str(tmp_path)]) == 0
    assert len(json.loads(capsys.readouterr().out)["include"]) > len(fast)
    assert PRESETS["nightly"].configs == CONFIGS


def test_the_plan_file_and_the_github_outputs(capsys, tmp_path):
    plan_file, outputs = tmp_path / "plan" / "matrix-plan.json", tmp_path / "github-output"
    outputs.write_text("earlier=1\n")
    argv = ["matrix", "--preset", "fast", "--config", "debug-full", "--kernel-config", "default"]
    assert main([*argv, "--plan", str(plan_file), "--github-output", str(outputs), "--durations", str(tmp_path)]) == 0
    assert "4 cells" in capsys.readouterr().out  # the table still goes to the log
    plan = load_plan(plan_file)
    assert plan.ids[:2] == ("two-switch-debug-full-kvm", "two-switch-default-kvm") and len(plan.ids) == 4
    lines = outputs.read_text().splitlines()
    assert lines[0] == "earlier=1" and len(lines) == 3  # appended, one line each
    name, _, value = lines[1].partition("=")
    assert name == "cells" and json.loads(value) == plan.document() == json.loads(plan_file.read_text())
    name, _, value = lines[2].partition("=")
    assert name == "kernels" and json.loads(value) == {
        "include": [
            {"config": "debug-full", "selftest": "debug-full-selftest", "base_fixes": "1"},
            {"config": "default", "selftest": "selftest", "base_fixes": "1"},
        ]
    }


def test_a_cell_reads_back_from_its_json():
    cell = cells(["two-switch"], ["default"], iommu_variants=False)[0]
    assert cell_from_json(json.loads(json.dumps(cell.as_json())), "t") == cell
    with pytest.raises(ConfigError, match="lacks 'accel'"):
        cell_from_json({k: v for k, v in cell.as_json().items() if k != "accel"}, "t")
    with pytest.raises(ConfigError, match="malformed topology"):
        cell_from_json(cell.as_json() | {"topology": ""}, "t")
    with pytest.raises(ConfigError, match="JSON object"):
        cell_from_json([cell.id], "t")
    # a plan written before cells could name a suite or drop the base fixes still reads
    older = {k: v for k, v in cell.as_json().items() if k not in ("suite", "base_fixes")}
    assert cell_from_json(older, "t") == cell
    with pytest.raises(ConfigError, match="malformed base_fixes"):
        cell_from_json(cell.as_json() | {"base_fixes": "no"}, "t")


def test_a_plan_that_is_not_one(tmp_path):
    path = tmp_path / "plan.json"
    for text, why in (("{", "not valid JSON"), ('{"cells": []}', "no include list")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=why):
            load_plan(path)
    cell = cells(["two-switch"], ["default"], iommu_variants=False)[0].as_json()
    path.write_text(json.dumps({"include": [cell, cell]}))
    with pytest.raises(ConfigError, match="planned twice: two-switch-default-kvm"):
        load_plan(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_plan(tmp_path / "none.json")


def test_matrix_run_lays_a_cell_out_for_the_merge(tmp_path, monkeypatch):
    kvm, tcg = cells(["two-switch"], ["default"], ("kvm", "tcg"), iommu_variants=False)
    run = prepare(kvm, tmp_path / "artifacts", python="py")
    cell_dir = (tmp_path / "artifacts" / kvm.id).resolve()
    assert run.directory == cell_dir
    # a kvm cell takes KVM where it works and TCG where not; the results go where merge looks
    assert run.argv[:3] == ("py", "-m", "pytest") and run.argv[3:11] == tuple(kvm.pytest_args("auto"))
    assert "--accel" in run.argv and run.argv[run.argv.index("--accel") + 1] == "auto"
    assert run.argv[-4:] == ("--junitxml", str(cell_dir / "junit.xml"), "--results-dir", str(cell_dir / "results"))
    assert dict(run.env) == {"CI": "true", "TESTBED_RESULTS": str(cell_dir)}
    assert prepare(tcg, tmp_path).argv[10] == "tcg"

    seen = {}

    def fake_run(argv, cwd, env):
        seen.update(argv=argv, cwd=cwd, env=env)
        return 1

    monkeypatch.setattr(matrix_run, "run_child", fake_run)
    assert main(["matrix", "run", "--cell", json.dumps(kvm.as_json()), "--out", str(tmp_path / "artifacts")]) == 1
    assert json.loads((cell_dir / "cell.json").read_text())["id"] == kvm.id
    assert seen["env"]["TESTBED_RESULTS"] == str(cell_dir) and seen["env"]["CI"] == "true"
    assert main(["matrix", "run", "--cell", "{", "--out", str(tmp_path)]) == ConfigError.exit_code
