"""testbed mutate's loop, the parts decided before any build: which mutants, which tests run on
each (the coverage index), equivalents and uncovered mutants judged without building."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testbed.coverage.scope import load_scope
from testbed.errors import ConfigError
from testbed.mutate import run
from testbed.mutate.equivalents import Equivalent
from testbed.mutate.judge import Status
from testbed.runs.results import RunResults

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mutate"
DMABUF = "drivers/vfio/pci/vfio_pci_dmabuf.c"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "linux"
    (root / DMABUF).parent.mkdir(parents=True)
    shutil.copy(FIXTURES / DMABUF, root / DMABUF)
    (root / "Makefile").write_text("")
    (root / "Kconfig").write_text("")
    return root


@pytest.fixture
def options(tree: Path, tmp_path: Path) -> run.MutateOptions:
    scope_file = tmp_path / "scope.yaml"
    scope_file.write_text(f"files:\n  - path: {DMABUF}\n    why: the exporter\n")
    return run.MutateOptions(scope=load_scope(scope_file), selection=("-m", "vfio"), ksrc=tree)


def _quiet(_: str) -> None:
    pass


def test_mutants_of_one_function_sampled_and_sharded(options: run.MutateOptions):
    every = run.all_mutants(options, _quiet)
    assert {m.path for m in every} == {DMABUF} and len(every) == 164
    move = run.all_mutants(run.MutateOptions(**{**options.__dict__, "functions": ("vfio_pci_dma_buf_move",)}), _quiet)
    assert len(move) == 23 and {m.function for m in move} == {"vfio_pci_dma_buf_move"}
    sampled = run.all_mutants(run.MutateOptions(**{**options.__dict__, "sample": 10, "seed": 3}), _quiet)
    assert len(sampled) == 10
    assert sampled == run.all_mutants(run.MutateOptions(**{**options.__dict__, "sample": 10, "seed": 3}), _quiet)
    shards = [run.all_mutants(run.MutateOptions(**{**options.__dict__, "shard": (k, 3)}), _quiet) for k in (1, 2, 3)]
    assert sorted(m.id for s in shards for m in s) == sorted(m.id for m in every)


def test_an_unknown_function_is_refused(options: run.MutateOptions):
    with pytest.raises(ConfigError, match="no such function"):
        run.all_mutants(run.MutateOptions(**{**options.__dict__, "functions": ("nope",)}), _quiet)


BASE = RunResults(Path("/r"), {"tests/vm/test_vfio.py::test_revoke[x]": "passed"}, (), (), {}, {}, (), "", (), {})


def test_a_mutant_no_test_executes_is_not_covered_without_a_build(options: run.MutateOptions, tmp_path: Path):
    mutant = run.all_mutants(options, _quiet)[0]
    index = {DMABUF: {str(mutant.first_line + 500): ["tests/vm/test_vfio.py::test_revoke[x]"]}}
    result = run.test_one(mutant, options, BASE, index, tmp_path / "run", _quiet)
    assert result.status is Status.NOT_COVERED
    assert (tmp_path / "run" / result.patch_file).read_text() == mutant.patch


def test_a_declared_equivalent_is_listed_not_built(options: run.MutateOptions, tmp_path: Path):
    mutant = next(m for m in run.all_mutants(options, _quiet) if m.operator == "drop-call")
    removed = next(line[1:] for line in mutant.patch.splitlines() if line.startswith("-\t"))
    declared = (Equivalent(DMABUF, mutant.function, "drop-call", removed.strip(), "no test can see it", "eq.yaml:3"),)
    opts = run.MutateOptions(**{**options.__dict__, "equivalents": declared})
    result = run.test_one(mutant, opts, BASE, None, tmp_path / "run", _quiet)
    assert result.status is Status.EQUIVALENT
    assert result.reasons == ("eq.yaml:3: no test can see it",)


def test_index_node_ids_of_an_xdist_run_find_their_tests(options: run.MutateOptions, tmp_path: Path, monkeypatch):
    mutant = run.all_mutants(options, _quiet)[0]
    index = {DMABUF: {str(mutant.first_line): ["tests/vm/test_vfio.py::test_revoke[x]@vfio-dmabuf"]}}
    seen = {}

    def no_build(*args, **kwargs):
        seen["tests"] = True
        raise ConfigError("does not build")

    monkeypatch.setattr(run, "ensure_kernel", no_build)
    result = run.test_one(mutant, options, BASE, index, tmp_path / "run", _quiet)
    assert seen and result.status is Status.INVALID  # it went on to build: its test was found


def test_one_mutant_by_its_id(options: run.MutateOptions):
    wanted = "vfio_pci_dmabuf:vfio_pci_dma_buf_move:358:drop-call:1"
    (m,) = run.all_mutants(run.MutateOptions(**{**options.__dict__, "ids": (wanted,)}), _quiet)
    assert m.id == wanted and "wait_for_completion" in m.description
    with pytest.raises(ConfigError, match="--mutant nope: no such mutant"):
        run.all_mutants(run.MutateOptions(**{**options.__dict__, "ids": ("nope",)}), _quiet)


def test_a_mutant_on_a_continuation_line_finds_the_tests_of_its_statement(options: run.MutateOptions, tree: Path):
    from testbed.mutate.cfunc import code_mask

    code = code_mask((tree / DMABUF).read_text()).splitlines()
    # dma_resv_wait_timeout(priv->dmabuf->resv,\n DMA_RESV_USAGE_BOOKKEEP, false,\n MAX_SCHEDULE_TIMEOUT);
    mutant = run.all_mutants(
        run.MutateOptions(**{**options.__dict__, "ids": ("vfio_pci_dmabuf:vfio_pci_dma_buf_move:353:swap-sibling:1",)}),
        _quiet,
    )[0]
    assert run.statement_start(code, mutant.first_line) == 352
    assert run.statement_start(code, 352) == 352  # a statement's own first line


def test_lines_gcov_folds_into_the_line_before_are_looked_up_there():
    index = {DMABUF: {"356": ["t::a"], "357": ["t::a"], "358": ["t::a", "t::b"], "371": []}}
    assert run.counted_from(index, DMABUF, 368, 368, floor=336) == 358  # kref_init() after wait_for_completion()
    assert run.counted_from(index, DMABUF, 357, 357, floor=336) == 357
    assert run.counted_from(index, DMABUF, 340, 340, floor=339) == 340  # nothing counted above: as it was


def test_a_judged_mutants_kernel_and_its_probe_module_leave_the_cache(tmp_path: Path, monkeypatch):
    import json

    from testbed.paths import cache_dir
    from testbed.probe.build import kernel_tree_of, probe_key

    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    entry = run.kernel_root() / "k1"
    (entry / "extmod").mkdir(parents=True)
    for name in ("Module.symvers", "Makefile"):
        (entry / "extmod" / name).write_text("")
    (entry / "bzImage").write_bytes(b"")
    (entry / "manifest.json").write_text(json.dumps({"key": "k1", "build_dir": "/gone"}))
    probe = cache_dir("probe") / probe_key(kernel_tree_of(entry / "bzImage"))
    probe.mkdir(parents=True)
    other = cache_dir("probe") / "of-another-kernel"
    other.mkdir()
    run._forget_kernel(entry)
    assert not entry.exists() and not probe.exists() and other.exists()
    run._forget_kernel(tmp_path / "elsewhere")  # outside the kernel cache: never touched


def test_a_mutants_deadline_scales_with_what_the_base_run_spent_in_its_tests(options: run.MutateOptions):
    timed = RunResults(
        Path("/r"), {"t::a": "passed", "t::b": "passed"}, (), (), {}, {}, (), "", (), {}, durations={"t::a": 40.0}
    )
    deadline, why = run.mutant_deadline(options, timed, ("t::a", "t::b"))
    assert deadline == 2 * 40 + 60 and why == "2 x the base run's 40 s in these tests + 60 s"
    long = RunResults(Path("/r"), {"t::a": "passed"}, (), (), {}, {}, (), "", (), {}, durations={"t::a": 600.0})
    assert run.mutant_deadline(options, long, ()) == (900.0, "--mutant-timeout")
    assert run.mutant_deadline(options, BASE, ()) == (900.0, "--mutant-timeout")  # no durations recorded


def test_a_harness_that_changes_during_the_run_stops_it(tmp_path: Path):
    """A probe edit that no longer built made every later mutant's tests fail: each was counted
    killed. The run stops instead, once the testbed's own files differ from the base run's."""
    from testbed.errors import InfraError

    (tmp_path / "testbed" / "probe").mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    probe = tmp_path / "testbed" / "probe" / "p2pdma_probe.c"
    probe.write_text("int x;\n")
    (tmp_path / "known-skips.yaml").write_text("known: []\n")
    key = run.harness_key(tmp_path)
    run.check_harness(tmp_path, key)  # unchanged
    (tmp_path / "tests" / "__pycache__").mkdir()
    (tmp_path / "tests" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    run.check_harness(tmp_path, key)  # bytecode written by the runs themselves
    probe.write_text("int x\n")
    with pytest.raises(InfraError, match="changed during the mutation run"):
        run.check_harness(tmp_path, key)
    probe.write_text("int x;\n")
    (tmp_path / "known-skips.yaml").write_text("known: [{}]\n")
    with pytest.raises(InfraError, match="changed during the mutation run"):
        run.check_harness(tmp_path, key)
