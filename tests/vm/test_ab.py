"""testbed ab and testbed bisect end to end: kernels built from the demo series in tests/series/
(incrementally, in the patch worktree), real VMs, the P2P oracle test as the selection.

Nightly only (`--matrix`, `make nightly`, or `pytest -m ab --matrix`): on a fresh machine the
first patched build is a full kernel build. Cached, each series costs one incremental build
(~15 s here) and two VM runs of the selection (~17 s each under TCG).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.kernel.build import kernel_root
from testbed.kernel.patches import apply_series
from testbed.kernel.source import debian_tree
from testbed.paths import REPO_ROOT
from testbed.topology.needs import written_for

SERIES = REPO_ROOT / "tests" / "series"
SELECTION = [
    "tests/vm/test_p2p.py",
    "-k",
    "test_every_pair_matches_the_oracle",
    "--topology",
    "two-switch",
    "-p",
    "no:cacheprovider",
]
EVERY_PAIR = "tests/vm/test_p2p.py::test_every_pair_matches_the_oracle[two-switch]"
DEMO_BRANCH = "testbed-bisect-demo"


def _nightly(names: tuple[str, ...]):
    def cases(topology, config):
        return [(name, name if config.getoption("matrix") else None) for name in names]

    return cases


# the demo series' expected changes name two-switch's devices (nvme0 -> nvme2 and so on)
DEMO_SERIES = written_for("two-switch", "the demo series' expected changes name its devices")


def _testbed(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "testbed.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    return proc


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """The selection on the base kernel, once for every series."""
    out = tmp_path_factory.mktemp("ab-base") / "base"
    proc = subprocess.run([sys.executable, "-m", "pytest", *SELECTION, "--results-dir", str(out)], cwd=REPO_ROOT)
    assert proc.returncode == 0 and (out / "run.json").is_file(), "the selection must pass on the base kernel"
    return out


@pytest.mark.ab
@pytest.mark.slow
@pytest.mark.topology(
    "two-switch", needs=DEMO_SERIES, cases=_nightly(("changes-nothing", "adds-warning", "allows-q35"))
)
def test_ab_reports_what_a_series_changed(testbed_topology, topology_case, base_run, tmp_path):
    out = tmp_path / "ab"
    series = SERIES / topology_case
    proc = _testbed(
        "ab", "--patches", str(series), "--base-results", str(base_run), "--out", str(out), "--", *SELECTION
    )
    doc = json.loads((out / "comparison.json").read_text())
    if topology_case == "changes-nothing":
        assert proc.returncode == 0 and not doc["changed"], doc
    elif topology_case == "adds-warning":
        assert proc.returncode == 1
        assert [(s["signature"], s["before"], s["after"]) for s in doc["splats"]] == [
            ("WARNING in p2pmem_alloc_mmap", 0, 1)
        ]
        assert [(t["nodeid"], t["after"]) for t in doc["tests"]] == [(EVERY_PAIR, "failed")]
    else:
        assert proc.returncode == 1 and doc["splats"] == []
        assert {(v["pair"], v["before"], v["after"]) for v in doc["verdicts"]} == {
            ("two-switch nvme0->nvme2 to_p2pmem", "EINVAL", "transferred"),
            ("two-switch nvme0->nvme2 from_p2pmem", "EINVAL", "transferred"),
        }


def _demo_history() -> tuple[Path, str]:
    """Debian's tree (a testbed-made git repository) with a branch of the three commits in
    tests/series/bisect-history on top of its base; returns the tree and that base."""
    source = debian_tree(kernel_root() / "debian", progress=lambda _: None)
    apply_series(source, (), kernel_root() / "trees")  # makes the tree a repository once
    tree = source.path
    base = (tree / ".git" / "testbed-base").read_text().strip()
    scratch = kernel_root() / "trees" / "bisect-demo-scratch"
    subprocess.run(["rm", "-rf", str(scratch)], check=True)
    git = ["git", "-c", "user.name=testbed", "-c", "user.email=testbed@localhost"]
    subprocess.run([*git, "clone", "-q", "--shared", "--no-checkout", str(tree), str(scratch)], check=True)
    subprocess.run([*git, "-C", str(scratch), "checkout", "-q", base], check=True)
    patches = sorted((SERIES / "bisect-history").glob("*.patch"))
    subprocess.run([*git, "-C", str(scratch), "am", "-q", *map(str, patches)], check=True)
    subprocess.run([*git, "-C", str(tree), "fetch", "-q", str(scratch), f"+HEAD:refs/heads/{DEMO_BRANCH}"], check=True)
    subprocess.run(["rm", "-rf", str(scratch)], check=True)
    return tree, base


@pytest.mark.ab
@pytest.mark.slow
@pytest.mark.topology("two-switch", needs=DEMO_SERIES, cases=_nightly(("history",)))
def test_bisect_finds_the_commit_that_flips_a_verdict(testbed_topology, topology_case, tmp_path):
    tree, base = _demo_history()
    out = tmp_path / "bisect"
    proc = _testbed(
        "bisect", "--ksrc", str(tree), "--good", base, "--bad", DEMO_BRANCH, "--out", str(out), "--", *SELECTION
    )
    assert proc.returncode == 0
    report = json.loads((out / "report.json").read_text())
    first = report["first_bad"]
    assert first["subject"] == "PCI/P2PDMA: allow P2P through the QEMU q35 host bridge"
    assert first["failed"] == [EVERY_PAIR]
    assert report["steps"] and {s["verdict"] for s in report["steps"]} <= {"good", "bad"}  # every step built
