"""KCIDB as KernelCI's origins write it: checkouts with git facts, KernelCI's test paths, the
topology in the environment, known failures FAIL with issues and incidents, absolute log
URLs; each document validated by kcidb-io (kcidb() validates before it returns)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from testbed.pytest_plugin.kernelci import kselftest_path, kunit_path, own_test_path
from testbed.report.cells import find_cells
from testbed.report.kcidb import Links, checkout_of, https_url, kcidb, tree_name

CELLS = Path(__file__).resolve().parent.parent / "logs" / "cells"
DEBIAN = "/root/.cache/testbed/kernel/debian/src/linux-source-7.2_7.2.13-1/linux-source-7.2"


def test_kselftest_and_kunit_cases_get_kernelcis_paths():
    assert kselftest_path("iommu", "iommufd", "change_process.account_mm.basic") == (
        "kselftest.iommu.iommu_iommufd_change_process_account_mm_basic"
    )
    assert kselftest_path("vfio", "vfio_pci_device_test", None) == "kselftest.vfio.vfio_vfio_pci_device_test"
    assert kunit_path("amdv1_fmt_test.test_bitops") == "kunit.exec.amdv1_fmt_test.test_bitops"
    assert kunit_path(None) == "kunit.exec"


def test_the_topology_leaves_the_path_of_the_testbeds_own_tests():
    nodeid = "tests/vm/test_p2pdma_api.py::test_census[kselftest-branch-edu0-nvme0]"
    assert own_test_path(nodeid, "kselftest") == "testbed.test_p2pdma_api.test_census.branch-edu0-nvme0"
    assert own_test_path("tests/vm/test_p2p.py::test_x[two-switch]", "two-switch") == "testbed.test_p2p.test_x"
    assert (
        own_test_path("tests/vm/test_p2p.py::test_x[two-switch]@two-switch", "two-switch") == "testbed.test_p2p.test_x"
    )
    assert own_test_path("tests/unit/test_a.py::test_b") == "testbed.test_a.test_b"


def test_git_remotes_become_https_and_known_trees_their_kernelci_names():
    assert https_url("git@github.com:torvalds/linux.git") == "https://github.com/torvalds/linux.git"
    assert https_url("git://git.kernel.org/pub/scm/linux/kernel/git/next/linux-next.git") == (
        "https://git.kernel.org/pub/scm/linux/kernel/git/next/linux-next.git"
    )
    assert https_url("/home/me/linux") is None and https_url("../linux") is None
    assert tree_name("https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git", "x") == "mainline"
    assert tree_name("https://github.com/me/linux-p2p.git", "x") == "linux-p2p"
    assert tree_name(None, "linux") == "linux"


def test_a_git_checkout_with_a_series_carries_commit_describe_and_patchset_hash():
    kernel = {
        "source_tree": "/home/me/linux",
        "patches": ["0001 vfio: a", "0002 vfio: b"],
        "source": {
            "kind": "git",
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "describe": "v7.2-rc3-12-g0123456789ab",
            "branch": "p2p-revoke",
            "remote_url": "git@git.kernel.org:pub/scm/linux/kernel/git/torvalds/linux.git",
            "dirty": False,
            "patch_sha256": ["a" * 64, "b" * 64],
        },
    }
    got = checkout_of(kernel)
    assert got["tree_name"] == "mainline"
    assert got["git_repository_url"] == "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
    assert got["git_commit_hash"] == kernel["source"]["commit"]  # type: ignore[index]
    assert got["git_commit_name"] == "v7.2-rc3-12-g0123456789ab" and got["git_repository_branch"] == "p2p-revoke"
    assert len(got["patchset_hash"]) == 64 and "2 patch(es)" in got["comment"]


def test_debians_source_is_a_debian_checkout_without_patches():
    got = checkout_of({"source_tree": DEBIAN, "patches": []})
    assert got["tree_name"] == "debian" and got["patchset_hash"] == ""
    assert got["misc"] == {"package": "linux-source-7.2", "version": "7.2.13-1"}


def _cells_with_known_failure(tmp_path: Path) -> tuple[Path, str, str]:
    root = tmp_path / "cells"
    shutil.copytree(CELLS, root)
    cell = root / "acs-default-tcg"
    run = cell / "results" / "run.json"
    doc = json.loads(run.read_text())
    xfailed, splatted = sorted(doc["outcomes"])[:2]
    doc["outcomes"][xfailed] = "xfailed"
    doc["tests"] = {
        xfailed: {"topology": "acs", "path": "testbed.test_boot.x", "xfail": "emulation limit: QEMU lacks X"},
        splatted: {"topology": "acs", "path": "kunit.exec.s.c"},
    }
    doc["splats"] = [
        {"signature": "lockdep: A/B", "kind": "lockdep", "where": splatted, "known": "known-splats.yaml:15",
         "console": "c:1"},
    ]  # fmt: skip
    run.write_text(json.dumps(doc))
    vm = cell / "vm" / "acs-20261205-033435-abcd"
    vm.mkdir(parents=True)
    (vm / "console.log").write_text("boot\n")
    return root, xfailed, splatted


def test_known_failures_are_fail_with_issues_and_logs_link_to_the_artifacts(tmp_path: Path):
    root, xfailed, splatted = _cells_with_known_failure(tmp_path)
    doc = kcidb(find_cells([root]), Links((root,), "https://ci.example/run/7/artifacts"))
    tests = {t["misc"]["nodeid"]: t for t in doc["tests"] if t["misc"]["nodeid"] in (xfailed, splatted)}
    assert tests[xfailed]["status"] == "FAIL" and tests[xfailed]["path"] == "testbed.test_boot.x"
    assert tests[splatted]["path"] == "kunit.exec.s.c"
    assert tests[xfailed]["environment"]["misc"]["topology"] == "acs"
    assert tests[xfailed]["log_url"] == (
        "https://ci.example/run/7/artifacts/acs-default-tcg/vm/acs-20261205-033435-abcd/console.log"
    )
    issues = {i["id"]: i for i in doc["issues"]}
    by_test = {inc["test_id"]: issues[inc["issue_id"]] for inc in doc["incidents"] if "test_id" in inc}
    assert by_test[tests[xfailed]["id"]]["culprit"] == {"code": False, "tool": True, "harness": False}
    assert by_test[tests[splatted]["id"]]["culprit"]["code"]
    assert {t["status"] for t in doc["tests"]} <= {"PASS", "FAIL", "ERROR", "SKIP"}


def test_without_a_base_log_urls_are_file_urls(tmp_path: Path):
    root, xfailed, _ = _cells_with_known_failure(tmp_path)
    doc = kcidb(find_cells([root]))
    (test,) = [t for t in doc["tests"] if t["misc"]["nodeid"] == xfailed]
    assert test["log_url"].startswith("file:///") and test["log_url"].endswith("/console.log")


def test_a_parameter_that_slugs_to_nothing_leaves_no_empty_part():
    assert own_test_path("tests/vm/test_p2p.py::test_x[+]") == "testbed.test_p2p.test_x"
    assert kunit_path("suite.") == "kunit.exec.suite"


def test_an_ssh_port_is_not_part_of_the_https_url():
    assert https_url("ssh://git@example.org:2222/linux/linux.git") == "https://example.org/linux/linux.git"
    assert https_url("ssh://example.org/linux.git") == "https://example.org/linux.git"


def test_a_series_on_its_base_commit_names_that_commit_not_head():
    head, base = "1" * 40, "2" * 40
    source = {"kind": "git", "commit": head, "describe": "v7.2-5-g111", "branch": "wip", "dirty": True}
    got = checkout_of(
        {"source_tree": "/x/linux", "patches": ["0001 a"], "source": source | {"series_base_commit": base}}
    )
    assert got["git_commit_hash"] == base and got["misc"]["dirty"] is False
    assert "git_commit_name" not in got and "git_repository_branch" not in got


def test_logs_under_any_of_the_merged_directories_get_the_base(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    (b / "cell" / "vm").mkdir(parents=True)
    log = b / "cell" / "vm" / "console.log"
    log.write_text("x")
    assert Links((a, b), "https://ci/run").url(log) == "https://ci/run/cell/vm/console.log"


def test_a_relative_log_url_is_refused_by_the_schema(tmp_path: Path):
    """KCIDB's URLs are URIs; the check is active (rfc3987, in the kcidb extra), so a base that
    is not absolute is caught here, not by the KCIDB server."""
    import pytest

    from testbed.errors import ConfigError

    root, _, _ = _cells_with_known_failure(tmp_path)
    with pytest.raises(ConfigError, match="does not validate"):
        kcidb(find_cells([root]), Links((root,), "artifacts"))
