"""The CI workflow's promises that linters do not check: every action pinned to a commit with
its version beside it, no merge after a cancel, reruns that replace their artifacts, no disk
images in them, cache keys that do not need the kernel source."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "matrix.yml"
# `uses: owner/repo[/path]@<40 hex> # vN[.N[.N]]`
PINNED = re.compile(
    r"^\s*(?:- )?uses: (?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40}) # (?P<version>v\d+(?:\.\d+)*)$"
)


def _jobs() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def _steps(job: str) -> list[dict]:
    return _jobs()[job]["steps"]


def _uses(step: dict) -> str:
    return str(step.get("uses", "")).split("@")[0]


def test_every_action_is_pinned_to_a_commit_with_its_version():
    lines = [line for line in WORKFLOW.read_text().splitlines() if re.match(r"^\s*(- )?uses:", line)]
    steps = [s for job in _jobs().values() for s in job.get("steps", []) if "uses" in s]
    assert lines and len(lines) == len(steps)  # no `uses:` the line check cannot see
    unpinned = [line.strip() for line in lines if not PINNED.match(line)]
    assert unpinned == []
    # one version of each action repository everywhere (actions/cache and actions/cache/restore too)
    pins: dict[str, set[tuple[str, str]]] = {}
    for line in lines:
        m = PINNED.match(line)
        assert m is not None
        repo = "/".join(m["action"].split("/")[:2])
        pins.setdefault(repo, set()).add((m["sha"], m["version"]))
    assert {repo: len(found) for repo, found in pins.items()} == dict.fromkeys(pins, 1)


def test_merge_does_not_run_after_a_cancel():
    merge = _jobs()["merge"]
    assert "always()" not in str(merge.get("if", ""))
    assert re.fullmatch(r"\$\{\{\s*!cancelled\(\)\s*\}\}", str(merge["if"]))
    assert "always()" not in WORKFLOW.read_text()  # no step uploads or merges after a cancel either


def test_merge_holds_the_cells_to_the_plan():
    plan_steps = _steps("plan")
    assert any("--plan matrix-plan.json" in str(s.get("run", "")) for s in plan_steps)
    assert any(s.get("with", {}).get("name") == "matrix-plan" for s in plan_steps if "upload-artifact" in _uses(s))
    merge_runs = [str(s["run"]) for s in _steps("merge") if "run" in s]
    assert any("testbed merge" in r and "--plan plan/matrix-plan.json" in r for r in merge_runs)


def test_uploads_replace_their_artifacts_on_a_rerun():
    uploads = [s for job in _jobs().values() for s in job["steps"] if _uses(s) == "actions/upload-artifact"]
    assert len(uploads) == 3 and all(s["with"].get("overwrite") is True for s in uploads)


def test_cell_artifacts_hold_no_disk_images():
    (upload,) = [s for s in _steps("cells") if _uses(s) == "actions/upload-artifact"]
    paths = str(upload["with"]["path"]).split()
    assert paths[0] == "artifacts/"
    assert {"!artifacts/**/*.qcow2", "!artifacts/**/backing/**"} <= set(paths)


def test_cache_keys_come_from_testbed_without_root():
    # as root the key step would leave root-owned files for the cache restore to trip over
    for job in ("kernels", "cells"):
        (key,) = [s for s in _steps(job) if s.get("id") == "key"]
        assert key["run"].startswith(".venv/bin/testbed cache key ") and "--selftest" in key["run"]
        assert "sudo" not in key["run"]


REHEARSAL = WORKFLOW.parents[2] / "scripts" / "ci-rehearsal"
# `testbed <command> [<subcommand>] [--option ...]`, as the workflow and the rehearsal call it
TESTBED_CALL = re.compile(r"testbed ((?:[a-z][\w-]*\s*)+)((?:\s*--[\w-]+)*)")


def _calls(text: str) -> set[tuple[str, frozenset[str]]]:
    text = re.sub(r"\\\n\s*", " ", text).replace('"$TB"', "testbed")  # continued lines; the script's $TB
    text = re.sub(r'"?\$\{?\w+\}?"?', "X", text)  # variables: the values differ, not the words
    calls = set()
    for m in TESTBED_CALL.finditer(text):
        words = m[1].split()
        options = frozenset(re.findall(r"--[\w-]+", text[m.start() : text.find("\n", m.start())]))
        calls.add((" ".join(words[:2] if words[0] in ("matrix", "cache", "kernel", "image") else words[:1]), options))
    return calls


def test_the_rehearsal_runs_every_testbed_command_of_the_workflow_with_its_options():
    """make ci-rehearsal is only worth its name if it runs what the runners run."""
    workflow = "\n".join(str(s["run"]) for job in _jobs().values() for s in job["steps"] if "run" in s)
    script = REHEARSAL.read_text()
    ours = _calls(script)
    missing = [(cmd, sorted(opts)) for cmd, opts in _calls(workflow) if not any(
        cmd == c and opts <= o for c, o in ours)]  # fmt: skip
    assert missing == []
    for make_target in re.findall(r"\bmake (check|unit|deps|venv)\b", workflow):
        assert f"make {make_target}" in script or make_target in ("deps", "venv")  # the make target's prerequisites
    env_names = set(re.findall(r"^\s+(TESTBED_\w+):", WORKFLOW.read_text(), re.MULTILINE))
    assert env_names and all(name in script for name in env_names)


def test_the_workflow_names_the_debian_mirror_and_runs_on_a_pinned_ubuntu():
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert "TESTBED_DEBIAN_MIRROR" in doc["env"]
    assert {job["runs-on"] for job in doc["jobs"].values()} == {"ubuntu-24.04"}
