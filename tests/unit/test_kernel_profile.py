"""Coverage builds: GCOV_PROFILE for the scope's files only, added in the testbed's worktree, and
what a report needs kept with the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.coverage.scope import load_scope
from testbed.errors import ConfigError
from testbed.kernel import profile
from testbed.kernel.configsets import COVERAGE_SETS, build_set, load_config_set

SCOPE = """files:
  - path: drivers/pci/p2pdma.c
    why: the provider
  - path: drivers/pci/remove.c
    why: unplug
  - path: kernel/dma/mapping.c
    why: dma_map_phys
    functions: [dma_map_phys]
"""


@pytest.fixture
def scope(tmp_path: Path):
    file = tmp_path / "scope.yaml"
    file.write_text(SCOPE)
    return load_scope(file)


def _tree(root: Path) -> Path:
    for directory in ("drivers/pci", "kernel/dma"):
        (root / directory).mkdir(parents=True)
        (root / directory / "Makefile").write_text("obj-y += x.o\n")
    for path in ("drivers/pci/p2pdma.c", "drivers/pci/remove.c", "kernel/dma/mapping.c"):
        (root / path).write_text(f"/* {path} */\n")
    return root


def test_profiling_lines_go_to_each_directory_once(scope, tmp_path: Path):
    tree = _tree(tmp_path / "tree")
    assert profile.add_profiling(tree, scope) == ("drivers/pci/Makefile", "kernel/dma/Makefile")
    pci = (tree / "drivers/pci/Makefile").read_text()
    assert pci.startswith("obj-y += x.o\n")
    assert "GCOV_PROFILE_p2pdma.o := y\nGCOV_PROFILE_remove.o := y\n" in pci
    assert "GCOV_PROFILE_mapping.o := y" in (tree / "kernel/dma/Makefile").read_text()
    assert "GCOV_PROFILE :=" not in pci  # never the whole directory
    assert profile.add_profiling(tree, scope) == ()  # a worktree not reset since: nothing twice
    assert pci == (tree / "drivers/pci/Makefile").read_text()


def test_a_directory_without_a_makefile_is_the_scopes_fault(scope, tmp_path: Path):
    tree = _tree(tmp_path / "tree")
    (tree / "kernel/dma/Makefile").unlink()
    with pytest.raises(ConfigError, match=r"kernel/dma/ has no kbuild Makefile"):
        profile.add_profiling(tree, scope)


def test_missing_sources_are_named(scope, tmp_path: Path):
    tree = _tree(tmp_path / "tree")
    (tree / "drivers/pci/remove.c").unlink()
    assert profile.missing_sources(tree, scope) == ("drivers/pci/remove.c",)


def test_notes_and_sources_are_kept_and_files_not_built_are_said(scope, tmp_path: Path):
    tree, build, dest = _tree(tmp_path / "tree"), tmp_path / "build", tmp_path / "keep"
    (build / "drivers/pci").mkdir(parents=True)
    (build / "drivers/pci/p2pdma.gcno").write_bytes(b"notes")
    assert profile.keep_for_reports(scope, tree, build, dest) == ("drivers/pci/remove.c", "kernel/dma/mapping.c")
    assert (dest / "gcno/drivers/pci/p2pdma.gcno").read_bytes() == b"notes"
    assert (dest / "src/drivers/pci/p2pdma.c").read_text() == "/* drivers/pci/p2pdma.c */\n"


def test_the_coverage_sets_add_gcov_to_their_companions():
    for name in COVERAGE_SETS:
        assert load_config_set(name).get("CONFIG_GCOV_KERNEL").value == "y"
    assert load_config_set(build_set("coverage-selftest")).get("CONFIG_KUNIT").value == "y"
    assert load_config_set("default").get("CONFIG_GCOV_KERNEL") is None


def test_pytest_coverage_boots_the_coverage_twin_of_the_default_set_only(tmp_path: Path):
    from testbed.kernel.request import KernelRequest
    from testbed.pytest_plugin.options import _coverage_kernel

    assert _coverage_kernel(KernelRequest()).config_set == "coverage"
    assert _coverage_kernel(KernelRequest("coverage")).config_set == "coverage"
    with pytest.raises(pytest.UsageError, match="does not combine with --kernel-config debug"):
        _coverage_kernel(KernelRequest("debug"))
    bzimage = tmp_path / "bzImage"
    bzimage.write_bytes(b"")
    with pytest.raises(pytest.UsageError, match="give the tree"):
        _coverage_kernel(KernelRequest(bzimage=bzimage))
