"""One kernel request from the same options everywhere: bad combinations fail before anything runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.kernel.configsets import KERNEL_CONFIGS, boot_args, build_set
from testbed.kernel.request import SUITE_SETS, KernelRequest, add_options, from_options, selftest_set


def _parse(*argv: str) -> KernelRequest:
    parser = argparse.ArgumentParser()
    add_options(parser.add_argument)
    args = parser.parse_args(argv)
    return from_options(lambda name: getattr(args, name))


def test_kernel_is_a_bzimage_or_a_tree(tmp_path):
    bz = tmp_path / "bzImage"
    bz.write_bytes(b"x")
    assert _parse("--kernel", str(bz)).bzimage == bz.resolve()
    assert _parse("--kernel", str(tmp_path)).ksrc == tmp_path
    assert _parse("--ksrc", str(tmp_path)) == _parse("--kernel", str(tmp_path))
    assert _parse().describe() == "default set, Debian's linux-source"


def test_bad_combinations_fail_early(tmp_path):
    bz = tmp_path / "bzImage"
    bz.write_bytes(b"x")
    (tmp_path / "s.mbox").write_text("x")
    with pytest.raises(ConfigError, match="is a built kernel"):
        _parse("--kernel", str(bz), "--patches", str(tmp_path / "s.mbox"))
    with pytest.raises(ConfigError, match="no such bzImage or kernel tree"):
        _parse("--kernel", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="name two trees"):
        _parse("--kernel", str(tmp_path), "--ksrc", str(Path("/")))
    with pytest.raises(ConfigError, match="no such file"):
        _parse("--patches", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="unknown kernel config set"):
        KernelRequest("nonsense")


def test_suite_sets_and_their_selftest_companions():
    assert SUITE_SETS == ("default", "debug", "coverage", "debug-full")
    assert [selftest_set(s) for s in SUITE_SETS] == [
        "selftest",
        "debug-selftest",
        "coverage-selftest",
        "debug-full-selftest",
    ]
    assert all(selftest_set(s) in KERNEL_CONFIGS for s in SUITE_SETS)


def test_debug_full_boots_the_debug_build_with_kmemleak_on():
    names = ("default", "debug", "debug-full", "selftest", "debug-selftest", "debug-full-selftest")
    assert [(build_set(n), boot_args(n)) for n in names] == [
        ("default", ()),
        ("debug", ("kmemleak=off",)),
        ("debug", ()),
        ("default", ()),  # one build serves the VM suites and the tree's own tests
        ("debug", ("kmemleak=off",)),
        ("debug", ()),
    ]
    assert _parse("--kernel-config", "debug-full").config_set == "debug-full"
    assert _parse("--no-base-fixes").base_fixes is False and _parse().base_fixes is None
