"""Base fixes: minimal, declared fixes for base-kernel bugs that would blind the debug checks.

kernel-configs/base-fixes/fixes.yaml declares each one (name, patch, config sets, why, upstream,
detect). A build of a listed config set applies it after the user's series, only while the tree
still has the bug: the patch applies (`git apply --check`) and its reverse does not. The
candidates are part of the kernel cache key; what was applied or skipped, and why, goes into the
build's manifest.json. TESTBED_BASE_FIXES=0 (or `testbed kernel build --no-base-fixes`) switches
them all off.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InfraError
from ..hashing import hash_bytes
from ..located import Problem, ProblemsError, load_entry_list
from ..paths import KERNEL_CONFIGS_DIR
from . import patches as patchmod
from .artifact import KernelArtifact, read_manifest
from .configsets import KERNEL_CONFIGS, build_set

log = logging.getLogger(__name__)

FIXES_FILE = KERNEL_CONFIGS_DIR / "base-fixes" / "fixes.yaml"
ENV = "TESTBED_BASE_FIXES"
FIELDS = ("name", "patch", "config_sets", "why", "upstream", "detect")
# the bug is still there when the patch applies and its reverse does not
DETECT_RULES = ("applies-not-reverts",)
_OFF = ("0", "no", "off", "false")
_ON = ("", "1", "yes", "on", "true")


class BaseFixesError(ProblemsError):
    what = "the base fixes file"


@dataclass(frozen=True)
class BaseFix:
    name: str
    patch: patchmod.Patch  # the one patch of the file, as `git am` takes it
    file: Path
    config_sets: tuple[str, ...]
    why: str
    upstream: str
    detect: str
    where: str  # file:line of the entry


@dataclass(frozen=True)
class Decision:
    """What a build did with one candidate fix, and why."""

    fix: BaseFix
    applied: bool
    reason: str

    def record(self) -> dict[str, str]:
        out = {"name": self.fix.name, "patch": self.fix.file.name, "reason": self.reason}
        return out | ({"why": self.fix.why} if self.applied else {})


@dataclass(frozen=True)
class AppliedFix:
    """A base fix a built kernel carries, as the run summary lists it."""

    name: str
    why: str


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Whether base fixes are on: TESTBED_BASE_FIXES unset or 1/yes/on/true; 0/no/off/false: off."""
    value = env.get(ENV, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ConfigError(f"{ENV}={env[ENV]!r}: not understood (allowed: 1, 0, yes, no, on, off, true, false)")


def load_fixes(path: Path = FIXES_FILE) -> tuple[BaseFix, ...]:
    """Every declared fix, or a BaseFixesError listing every problem with file:line."""
    doc, entries, problems = load_entry_list(path, BaseFixesError, "fixes: [{name, patch, why, ...}, ...]", key="fixes")
    out: list[BaseFix] = []
    for i, entry in enumerate(entries):
        at = ("fixes", i)
        found = _shape(entry) or _values(entry, path.parent, out)
        for key, message, allowed in found:
            problems.append(Problem(path, doc.line(at + key), ".".join(map(str, at + key)), message, allowed))
        if not found:
            out.append(_fix(entry, path, f"{path.name}:{doc.line(at)}"))
    if problems:
        raise BaseFixesError(problems)
    return tuple(out)


# a problem of one entry: (key path below the entry, message, allowed)
_Found = list[tuple[tuple[str, ...], str, str]]


def _shape(entry: object) -> _Found:
    if not isinstance(entry, dict):
        return [((), "must be a mapping", ", ".join(FIELDS))]
    found: _Found = [((key,), "unknown key", ", ".join(FIELDS)) for key in sorted(set(entry) - set(FIELDS))]
    found += [((), f"missing '{key}'", "") for key in FIELDS if key not in entry]
    found += [((key,), "must not be empty", "") for key in FIELDS if key in entry and not str(entry[key]).strip()]
    return found


def _values(entry: dict, directory: Path, seen: list[BaseFix]) -> _Found:
    found: _Found = []
    if any(f.name == str(entry["name"]) for f in seen):
        found.append((("name",), f"duplicate name {entry['name']!r}", ""))
    sets = entry["config_sets"]
    if not isinstance(sets, list) or not sets or not all(s in KERNEL_CONFIGS for s in sets):
        found.append(
            (("config_sets",), f"must be a list of config sets, got {sets!r}", ", ".join(sorted(KERNEL_CONFIGS)))
        )
    if entry["detect"] not in DETECT_RULES:
        found.append((("detect",), f"unknown rule {entry['detect']!r}", ", ".join(DETECT_RULES)))
    file = directory / str(entry["patch"])
    if file.parent != directory or not file.is_file():
        return [*found, (("patch",), f"no file {entry['patch']!r} in {directory}", "")]
    try:
        series = patchmod.discover(file)
    except ConfigError as exc:
        return [*found, (("patch",), str(exc), "")]
    if len(series) != 1 or not series[0].is_mail:
        found.append((("patch",), f"must hold exactly one patch in git format-patch form, found {len(series)}", ""))
    return found


def _fix(entry: dict, path: Path, where: str) -> BaseFix:
    file = path.parent / str(entry["patch"])
    return BaseFix(
        name=str(entry["name"]),
        patch=patchmod.discover(file)[0],
        file=file,
        config_sets=tuple(entry["config_sets"]),
        why=" ".join(str(entry["why"]).split()),
        upstream=" ".join(str(entry["upstream"]).split()),
        detect=str(entry["detect"]),
        where=where,
    )


def fixes_for(config_set: str, fixes: tuple[BaseFix, ...]) -> tuple[BaseFix, ...]:
    """The fixes a build of `config_set` carries; a fix may name a --kernel-config profile
    (debug-selftest), which stands for the set it boots."""
    build = build_set(config_set)
    return tuple(f for f in fixes if build in {build_set(s) for s in f.config_sets})


def fixes_hash(fixes: tuple[BaseFix, ...]) -> str:
    """The cache key's part for these candidates ("" for none): names and patch bytes."""
    if not fixes:
        return ""
    return hash_bytes(*(part for f in fixes for part in (f.name.encode(), f.patch.content)))


def _check(tree: Path, fix: BaseFix, *reverse: str) -> subprocess.CompletedProcess[bytes]:
    # on the working tree's files (a user's uncommitted changes count); works outside git too
    return subprocess.run(
        ["git", "-C", str(tree), "apply", "--check", *reverse, "-"], input=fix.patch.content, capture_output=True
    )


def decide(tree: Path, fix: BaseFix) -> Decision:
    """Whether `tree` still has the bug `fix` is for (decided, not applied)."""
    forward, backward = _check(tree, fix), _check(tree, fix, "-R")
    if forward.returncode == 0 and backward.returncode != 0:
        return Decision(fix, True, "the tree still has the bug: the patch applies and its reverse does not")
    if backward.returncode == 0 and forward.returncode != 0:
        return Decision(fix, False, "the tree already has the fix: its reverse applies")
    if forward.returncode == 0:
        return Decision(fix, False, "ambiguous: both the patch and its reverse apply")
    first = next(iter(forward.stderr.decode(errors="replace").strip().splitlines()), "")
    return Decision(fix, False, f"the code it fixes changed: the patch does not apply ({first})")


def decide_all(tree: Path, fixes: tuple[BaseFix, ...]) -> tuple[Decision, ...]:
    return tuple(decide(tree, f) for f in fixes)


def apply_fixes(worktree: Path, fixes: tuple[BaseFix, ...]) -> tuple[Decision, ...]:
    """Commit each fix the worktree still needs, in order (after the user's series)."""
    out = []
    for fix in fixes:
        decision = decide(worktree, fix)
        if decision.applied:
            failure = patchmod.apply_patch(worktree, fix.patch)
            if failure:
                tool, output = failure
                raise InfraError(
                    f"base fix {fix.name} passed 'git apply --check' in {worktree}, then {tool}:\n{output}"
                )
        log.debug("base fix %s in %s: %s", fix.name, worktree, decision.reason)
        out.append(decision)
    return tuple(out)


def switched_off(fixes: tuple[BaseFix, ...]) -> tuple[Decision, ...]:
    return tuple(Decision(f, False, f"switched off ({ENV}=0 or --no-base-fixes)") for f in fixes)


def manifest_record(decisions: tuple[Decision, ...], on: bool) -> dict[str, object]:
    """The manifest.json "base_fixes" entry of a build."""
    return {
        "enabled": on,
        "applied": [d.record() for d in decisions if d.applied],
        "skipped": [d.record() for d in decisions if not d.applied],
    }


def applied_base_fixes(art: KernelArtifact) -> tuple[AppliedFix, ...]:
    """The base fixes a cached kernel was built with (name and why), from its manifest.json;
    none for a kernel built before base fixes existed or without a manifest."""
    manifest = read_manifest(art.bzimage.parent)
    applied = manifest.applied_fixes if manifest is not None else []
    return tuple(AppliedFix(str(a.get("name", "")), str(a.get("why", ""))) for a in applied if isinstance(a, dict))
