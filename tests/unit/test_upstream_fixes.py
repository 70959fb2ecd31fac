"""Known kernel bugs and their candidate fixes: where a case is an expected failure."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from testbed.errors import ConfigError
from testbed.kernel.artifact import built_patches
from testbed.kernel.upstream_fixes import BugSite, KernelBug, KnownKernelBug, expectation
from testbed.paths import UPSTREAM_FIXES_DIR

from .test_needs_walk import VM_TESTS

BUG = KernelBug("0001-vfio-pci-un-revoke-dma-bufs-when-a-wake-up-ends-low-.patch", r"7\.2\.", "stays revoked")
SUBJECT = "vfio/pci: un-revoke dma-bufs when a wake-up ends low power"


def test_the_subject_is_read_from_the_fix():
    assert BUG.subject == SUBJECT


@pytest.mark.parametrize(
    ("release", "patches", "xfail", "strict"),
    [
        ("7.2.13-testbed", [], True, True),  # the base kernel: a strict expected failure
        ("7.2.13-testbed", [BUG.fix], False, False),  # built with the fix: must pass
        ("7.2.13-testbed", [f"0003 {SUBJECT}"], False, False),  # the fix as a mail of a series
        ("7.2.13-testbed", ["0001 mm: something else"], True, False),  # a series: may fix it
        ("7.2.13", None, True, False),  # the user's own build: what it carries is unknown
        ("7.3.0-testbed", [], False, False),  # another release: the case must pass
    ],
)
def test_where_a_case_that_found_a_bug_is_expected_to_fail(release, patches, xfail, strict):
    want = expectation(BUG, release, patches)
    assert (want.xfail, want.strict) == (xfail, strict)
    if xfail:
        assert "upstream-fixes/0001-" in want.reason and "stays revoked" in want.reason


def test_a_missing_or_malformed_fix_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="candidate fix of a known kernel bug is missing"):
        _ = KernelBug("no-such.patch", "7", "x").subject
    bad = UPSTREAM_FIXES_DIR / "no-such.patch"
    monkeypatch.setattr(KernelBug, "path", property(lambda self: tmp_path / "x.patch"))
    (tmp_path / "x.patch").write_text("diff --git a/x b/x\n")
    with pytest.raises(ConfigError, match="not a git format-patch file"):
        _ = KernelBug(bad.name, "7", "x").subject


def test_the_patches_a_kernel_was_built_with(tmp_path):
    entry = tmp_path / "k1"
    entry.mkdir()
    assert built_patches(entry / "bzImage") is None  # not the testbed's: unknown
    (entry / "manifest.json").write_text('{"patches": ["0001 vfio/pci: x"]}')
    assert built_patches(entry / "bzImage") == ["0001 vfio/pci: x"]


def test_every_known_bug_of_the_suites_has_its_fix_in_the_tree():
    bugs = []
    for path in sorted(VM_TESTS.glob("test_*.py")):
        module = importlib.import_module(f"tests.vm.{path.stem}")
        bugs += [v for v in vars(module).values() if isinstance(v, KernelBug)]
    assert bugs, "no KernelBug declared in tests/vm"
    for bug in bugs:
        text = bug.path.read_text()
        assert text.startswith("From ") and "\n---\n" in text and "diff --git" in text, bug.fix
        assert bug.subject
    shipped = {p.name for p in UPSTREAM_FIXES_DIR.glob("*.patch")}
    assert shipped <= {b.fix for b in bugs}, "a candidate fix no case reproduces"


EXPECTED = expectation(BUG, "7.2.13-testbed", [])  # the base kernel: the bug is there
FIXED = expectation(BUG, "7.2.13-testbed", [BUG.fix])


def test_an_assertion_at_the_bug_site_is_the_known_bug_where_it_is_expected():
    with pytest.raises(KnownKernelBug, match="stays revoked") as caught:
        with BugSite(EXPECTED):
            raise AssertionError("remap: -ENODEV")
    assert "remap: -ENODEV" in str(caught.value)


def test_an_assertion_at_the_bug_site_stays_itself_where_the_bug_is_fixed():
    with pytest.raises(AssertionError) as caught:
        with BugSite(FIXED):
            raise AssertionError("remap: -ENODEV")
    assert not isinstance(caught.value, KnownKernelBug)


def test_other_errors_pass_through_the_bug_site():
    with pytest.raises(TimeoutError):
        with BugSite(EXPECTED):
            raise TimeoutError("the guest did not answer")
    with BugSite(EXPECTED):
        pass  # the bug did not show: the strict mark makes the pass red


# what the kernel_bug fixture's mark does with the site, run by pytest itself
XFAIL_MODULE = """
import pytest
from testbed.kernel.upstream_fixes import BugSite, KnownKernelBug, expectation, KernelBug

BUG = KernelBug({fix!r}, r"7\\.2\\.", "stays revoked")
SITE = BugSite(expectation(BUG, "7.2.13-testbed", []))
MARK = pytest.mark.xfail(strict=True, reason="kernel bug", raises=KnownKernelBug)


@MARK
def test_the_bug_shows():
    with SITE:
        assert False, "still revoked"


@MARK
def test_something_else_breaks_first():
    assert False, "the exporter never suspended"


@MARK
def test_the_bug_does_not_show():
    with SITE:
        pass
"""


def test_the_mark_takes_only_the_bug_sites_failure(tmp_path):
    (tmp_path / "test_marked.py").write_text(XFAIL_MODULE.format(fix=BUG.fix))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:testbed", "-rA", "-q", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    out = run.stdout
    assert "XFAIL test_marked.py::test_the_bug_shows" in out, out
    assert "FAILED test_marked.py::test_something_else_breaks_first" in out, out
    assert "FAILED test_marked.py::test_the_bug_does_not_show" in out and "XPASS(strict)" in out, out
