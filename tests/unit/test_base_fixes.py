"""Base fixes: the manifest (file:line errors), the still-needed decision on a tiny git tree,
where a build applies them, the cache key, and what a built kernel says it carries."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.kernel import basefixes, build, patches
from testbed.kernel.artifact import artifact_in
from testbed.kernel.cachekey import KeyInputs
from testbed.kernel.configsets import load_config_set
from testbed.kernel.source import user_tree

from .git_repos import git, tiny_kernel

QUIET = lambda _: None  # noqa: E731


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tiny "kernel" with a bug in lock.c: it takes the locks in the wrong order."""
    return tiny_kernel(tmp_path / "linux", {"lock.c": "lock(b);\nlock(a);\nwork();\n"})


def _format_patch(tree: Path, path: str, text: str, subject: str) -> str:
    """The change as `git format-patch` writes it; the tree is left as it was."""
    before = (tree / path).read_text()
    (tree / path).write_text(text)
    git(tree, "commit", "-q", "-a", "-m", subject)
    mail = git(tree, "format-patch", "-1", "--stdout")
    git(tree, "reset", "-q", "--hard", "HEAD~1")
    assert (tree / path).read_text() == before
    return mail


FIXED = "lock(a);\nlock(b);\nwork();\n"


@pytest.fixture
def fix_dir(tree: Path, tmp_path: Path) -> Path:
    d = tmp_path / "base-fixes"
    d.mkdir()
    (d / "lock-order.patch").write_text(_format_patch(tree, "lock.c", FIXED, "lock: take a before b"))
    (d / "fixes.yaml").write_text(
        "fixes:\n"
        "  - name: lock-order\n"
        "    patch: lock-order.patch\n"
        "    config_sets: [debug, debug-selftest]\n"
        "    why: >\n"
        "      lockdep reports a b-a cycle and switches itself off\n"
        "    upstream: not upstream\n"
        "    detect: applies-not-reverts\n"
    )
    return d


@pytest.fixture
def fix(fix_dir: Path) -> basefixes.BaseFix:
    (only,) = basefixes.load_fixes(fix_dir / "fixes.yaml")
    return only


# -- the manifest ------------------------------------------------------------------------------


def test_shipped_manifest_declares_the_pciehp_fix_for_the_debug_sets():
    fixes = basefixes.load_fixes()
    names = [f.name for f in fixes]
    assert len(set(names)) == len(names)
    (pciehp,) = (f for f in fixes if f.name == "pciehp-reset-lock-order")
    assert pciehp.config_sets == ("debug",)  # its selftest profiles boot the same build
    assert pciehp.patch.is_mail and b"drivers/pci/hotplug/pciehp_pci.c" in pciehp.patch.content
    assert "reset_lock" in pciehp.why and pciehp.upstream and pciehp.detect == "applies-not-reverts"
    assert basefixes.fixes_for("debug", fixes) == (pciehp,)
    assert basefixes.fixes_for("default", fixes) == basefixes.fixes_for("selftest", fixes) == ()


def test_a_fix_is_loaded_with_its_fields(fix: basefixes.BaseFix, fix_dir: Path):
    assert fix.name == "lock-order" and fix.file == fix_dir / "lock-order.patch"
    assert fix.why == "lockdep reports a b-a cycle and switches itself off"
    assert fix.where == "fixes.yaml:2" and fix.patch.name.endswith("lock: take a before b")


def test_every_problem_is_reported_with_file_and_line(fix_dir: Path):
    (fix_dir / "two.patch").write_text((fix_dir / "lock-order.patch").read_text() * 2)
    bad = fix_dir / "bad.yaml"
    bad.write_text(
        "fixes:\n"
        "  - name: lock-order\n"  # 2
        "    patch: lock-order.patch\n"
        "    config_sets: [debug, nightly]\n"  # 4: unknown config set
        "    why: ''\n"  # 5: empty
        "    upstream: no\n"
        "    detect: grep\n"  # 7: unknown rule
        "    colour: red\n"  # 8: unknown key
        "  - name: second\n"  # 9: missing why
        "    patch: missing.patch\n"
        "    config_sets: [debug]\n"
        "    upstream: no\n"
        "    detect: applies-not-reverts\n"
        "  - name: third\n"  # 14
        "    patch: ../lock-order.patch\n"  # 15: outside the directory
        "    config_sets: []\n"  # 16: none
        "    why: w\n"
        "    upstream: no\n"
        "    detect: applies-not-reverts\n"
        "  - name: fourth\n"  # 20
        "    patch: two.patch\n"  # 21: two patches in one file
        "    config_sets: [debug]\n"
        "    why: w\n"
        "    upstream: no\n"
        "    detect: applies-not-reverts\n"
        "  - just a string\n"  # 26
    )
    with pytest.raises(basefixes.BaseFixesError) as err:
        basefixes.load_fixes(bad)
    text = str(err.value)
    assert text.startswith("7 problems in the base fixes file:")
    for expected in (
        f"{bad}:5: fixes.0.why: must not be empty",
        f"{bad}:8: fixes.0.colour: unknown key (allowed: name, patch, config_sets, why, upstream, detect)",
        f"{bad}:9: fixes.1: missing 'why'",
        f"{bad}:15: fixes.2.patch: no file '../lock-order.patch' in {fix_dir}",
        "fixes.2.config_sets: must be a list of config sets, got [] "
        "(allowed: coverage, coverage-selftest, debug, debug-full, debug-full-selftest, debug-selftest, default,",
        f"{bad}:21: fixes.3.patch: must hold exactly one patch in git format-patch form, found 2",
        f"{bad}:26: fixes.4: must be a mapping",
    ):
        assert expected in text, text
    # a missing or unknown key hides the entry's other problems until it is fixed
    bad.write_text(bad.read_text().replace("    why: ''\n", "    why: w\n").replace("    colour: red\n", ""))
    with pytest.raises(basefixes.BaseFixesError) as err:
        basefixes.load_fixes(bad)
    assert f"{bad}:4: fixes.0.config_sets: must be a list of config sets, got ['debug', 'nightly']" in str(err.value)
    assert f"{bad}:7: fixes.0.detect: unknown rule 'grep' (allowed: applies-not-reverts)" in str(err.value)


def test_duplicate_names_and_file_shape(fix_dir: Path, tmp_path: Path):
    dup = fix_dir / "dup.yaml"
    entry = (fix_dir / "fixes.yaml").read_text().removeprefix("fixes:\n")
    dup.write_text("fixes:\n" + entry + entry)
    with pytest.raises(basefixes.BaseFixesError, match=r"dup.yaml:9: fixes.1.name: duplicate name 'lock-order'"):
        basefixes.load_fixes(dup)
    with pytest.raises(ConfigError, match="does not exist"):
        basefixes.load_fixes(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(basefixes.BaseFixesError, match=r"list.yaml:1: must be a mapping with 'fixes:'"):
        basefixes.load_fixes(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("fixes: [\n")
    with pytest.raises(basefixes.BaseFixesError, match="not valid YAML"):
        basefixes.load_fixes(tmp_path / "broken.yaml")


@pytest.mark.parametrize(
    "value, on", [(None, True), ("", True), ("1", True), ("yes", True), ("0", False), ("off", False)]
)
def test_switch(value, on):
    assert basefixes.enabled({} if value is None else {basefixes.ENV: value}) is on


def test_switch_rejects_what_it_does_not_understand():
    with pytest.raises(ConfigError, match="TESTBED_BASE_FIXES='maybe'"):
        basefixes.enabled({basefixes.ENV: "maybe"})


# -- applies or not -----------------------------------------------------------------------------


def test_a_tree_with_the_bug_gets_the_fix(tree: Path, fix: basefixes.BaseFix):
    decision = basefixes.decide(tree, fix)
    assert decision.applied and "still has the bug" in decision.reason
    assert (tree / "lock.c").read_text() == "lock(b);\nlock(a);\nwork();\n"  # decided, not applied


def test_a_tree_that_has_the_fix_gets_none(tree: Path, fix: basefixes.BaseFix):
    (tree / "lock.c").write_text(FIXED)  # uncommitted: the working tree's files count
    decision = basefixes.decide(tree, fix)
    assert not decision.applied and "already has the fix" in decision.reason


def test_a_tree_whose_code_changed_gets_none(tree: Path, fix: basefixes.BaseFix):
    (tree / "lock.c").write_text("mutex_lock(b);\nmutex_lock(a);\nwork();\n")
    decision = basefixes.decide(tree, fix)
    assert not decision.applied and decision.reason.startswith("the code it fixes changed: the patch does not apply")
    assert "lock.c" in decision.reason


def test_a_plain_tree_is_decided_too(tree: Path, tmp_path: Path, fix: basefixes.BaseFix):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "lock.c").write_text((tree / "lock.c").read_text())
    assert basefixes.decide(plain, fix).applied


def test_fixes_go_after_the_series_in_the_worktree(tree: Path, tmp_path: Path, fix: basefixes.BaseFix):
    source = user_tree(tree, progress=QUIET)
    bump = patches.Patch("0001 bump", _format_patch(tree, "Makefile", "VERSION = 8\n", "bump").encode(), True)
    wt = patches.apply_series(source, (bump,), tmp_path / "trees")
    (decision,) = basefixes.apply_fixes(wt, (fix,))
    assert (
        decision.applied and (wt / "lock.c").read_text() == FIXED and (wt / "Makefile").read_text() == "VERSION = 8\n"
    )
    assert git(wt, "log", "-1", "--format=%s").strip() == "lock: take a before b"  # committed as the mail says
    assert (tree / "lock.c").read_text() != FIXED  # never in the user's tree
    # a series that fixes the bug itself wins: the base fix is skipped, the worktree starts over
    own = patches.Patch("0001 own", fix.patch.content, True)
    wt = patches.apply_series(source, (own,), tmp_path / "trees")
    (decision,) = basefixes.apply_fixes(wt, (fix,))
    assert not decision.applied and "already has the fix" in decision.reason
    assert git(wt, "log", "--format=%s").splitlines()[:2] == ["lock: take a before b", "base"]


def _plan(tree: Path, config_set: str, fixes: tuple[basefixes.BaseFix, ...], on: bool = True) -> build.Plan:
    inputs = KeyInputs("s", "", "f", "gcc", config_set, basefixes.fixes_hash(fixes) if on else "")
    return build.Plan(config_set, load_config_set(config_set), user_tree(tree, QUIET), (), inputs, fixes, on)


def test_a_build_without_series_uses_a_worktree_only_when_a_fix_applies(tree, tmp_path, fix):
    root = tmp_path / "kernel"
    srctree, decisions = build._source_tree(_plan(tree, "debug", (fix,)), root, QUIET)
    assert srctree.parent == root / "trees" / "base-fixes" and (srctree / "lock.c").read_text() == FIXED
    assert [d.applied for d in decisions] == [True]
    # the tree has the fix: built in place, so its build directory stays incremental
    (tree / "lock.c").write_text(FIXED)
    git(tree, "commit", "-q", "-a", "-m", "fixed upstream")
    srctree, decisions = build._source_tree(_plan(tree, "debug", (fix,)), root, QUIET)
    assert srctree == tree and [d.applied for d in decisions] == [False]


def test_switched_off_fixes_are_recorded_as_skipped(tree, tmp_path, fix):
    srctree, decisions = build._source_tree(_plan(tree, "debug", (fix,), on=False), tmp_path / "k", QUIET)
    assert srctree == tree
    record = basefixes.manifest_record(decisions, on=False)
    assert record == {
        "enabled": False,
        "applied": [],
        "skipped": [
            {
                "name": "lock-order",
                "patch": "lock-order.patch",
                "reason": "switched off (TESTBED_BASE_FIXES=0 or --no-base-fixes)",
            }
        ],
    }


# -- the cache key ------------------------------------------------------------------------------


BASE = KeyInputs(source="debian:x", patches="", fragment="CONFIG_A=y\n", compiler="gcc 12", config_set="debug")


def test_no_fixes_keep_the_key_a_build_always_had():
    # the key of these inputs before base fixes and coverage builds existed (neither field at all)
    from testbed.hashing import hash_bytes, short
    from testbed.kernel.cachekey import RECIPE_VERSION

    fields = {k: v for k, v in dataclasses.asdict(BASE).items() if k not in ("base_fixes", "coverage")}
    legacy = short(
        hash_bytes(RECIPE_VERSION.encode(), *(p for k in sorted(fields) for p in (k.encode(), fields[k].encode())))
    )
    assert BASE.key() == legacy
    assert basefixes.fixes_hash(()) == ""


def test_the_key_follows_the_fix_set(fix: basefixes.BaseFix):
    with_fix = dataclasses.replace(BASE, base_fixes=basefixes.fixes_hash((fix,)))
    assert with_fix.key() != BASE.key()
    changed = dataclasses.replace(fix, patch=dataclasses.replace(fix.patch, content=fix.patch.content + b"\n"))
    assert dataclasses.replace(BASE, base_fixes=basefixes.fixes_hash((changed,))).key() != with_fix.key()
    renamed = dataclasses.replace(fix, name="other")
    assert basefixes.fixes_hash((renamed,)) != basefixes.fixes_hash((fix,))


def test_plan_keys_the_debug_set_by_its_fixes_and_leaves_default_alone(tree: Path):
    on, off = (build.plan("debug", ksrc=tree, progress=QUIET, base_fixes=b) for b in (True, False))
    assert on is not None and off is not None
    assert on.base_fixes and on.base_fixes_on and not off.base_fixes_on
    assert on.key != off.key and off.inputs.base_fixes == ""
    d_on, d_off = (build.plan("default", ksrc=tree, progress=QUIET, base_fixes=b) for b in (True, False))
    assert d_on is not None and d_off is not None and d_on.key == d_off.key


# -- what a built kernel carries ----------------------------------------------------------------


def test_applied_base_fixes_come_from_the_manifest(tmp_path: Path, fix: basefixes.BaseFix):
    art = artifact_in(tmp_path, "k", "7.2.13")
    assert basefixes.applied_base_fixes(art) == ()  # no manifest: a user's own build
    (tmp_path / "manifest.json").write_text(json.dumps({"release": "7.2.13"}))
    assert basefixes.applied_base_fixes(art) == ()  # built before base fixes existed
    decisions = (
        basefixes.Decision(fix, True, "needed"),
        basefixes.Decision(dataclasses.replace(fix, name="x"), False, "no"),
    )
    record = basefixes.manifest_record(decisions, on=True)
    assert [s["name"] for s in record["skipped"]] == ["x"]  # type: ignore[index]
    (tmp_path / "manifest.json").write_text(json.dumps({"release": "7.2.13", "base_fixes": record}))
    assert basefixes.applied_base_fixes(art) == (basefixes.AppliedFix("lock-order", fix.why),)
