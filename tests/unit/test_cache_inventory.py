"""Cache inventory and prune decisions over a fake cache tree (no kernels built)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from testbed.inventory import Entry, image_entries, kernel_entries, mark_used, prune_plan

DAY = 86400.0
NOW = 1_800_000_000.0


def _kernel(root: Path, key: str, age_days: float, build: str, built_in: Path, source: Path, patches: int = 0) -> None:
    d = root / key
    d.mkdir(parents=True)
    (d / "bzImage").write_bytes(b"x" * 4096)
    (d / "manifest.json").write_text(
        json.dumps(
            {
                "release": "7.2.13-testbed",
                "config_set": "default",
                "build_dir": str(root / "builds" / build),
                "built_in": str(built_in),
                "source_tree": str(source),
                "patches": ["p"] * patches,
            }
        )
    )
    os.utime(d / "manifest.json", (NOW - age_days * DAY,) * 2)
    (root / "builds" / build).mkdir(parents=True, exist_ok=True)


def _cache(tmp_path: Path) -> tuple[Path, Path]:
    kroot = tmp_path / "kernel"
    source = kroot / "debian" / "src" / "linux-source-7.2_7.2.13-1" / "linux-source-7.2"
    old_source = kroot / "debian" / "src" / "linux-source-7.2_7.2.9-1" / "linux-source-7.2"
    for s in (source, old_source):
        s.mkdir(parents=True)
    worktree = kroot / "trees" / "wt-aaaa"
    worktree.mkdir(parents=True)
    (kroot / "trees" / "copy-bbbb").mkdir()
    _kernel(kroot, "current0", 40, "src-default", source, source)
    _kernel(kroot, "recent01", 2, "wt-default", worktree, source, patches=3)
    _kernel(kroot, "ancient1", 30, "old-default", old_source, old_source)
    (kroot / "builds" / "orphan-debug").mkdir()
    return kroot, source


def _paths(entries: Iterable[Entry]) -> set[str]:
    return {e.path.name for e in entries}


def test_inventory_finds_every_kind(tmp_path):
    kroot, _ = _cache(tmp_path)
    entries = kernel_entries(kroot, current={"current0"})
    kinds = {(e.kind, e.path.name) for e in entries}
    assert ("kernel", "current0") in kinds and ("kernel-build", "orphan-debug") in kinds
    assert ("kernel-tree", "wt-aaaa") in kinds and ("kernel-source", "linux-source-7.2_7.2.9-1") in kinds
    recent = next(e for e in entries if e.path.name == "recent01")
    assert "+ 3 patch(es)" in recent.label and not recent.current and recent.size >= 4096


def test_prune_keeps_current_and_recent_and_what_they_were_built_from(tmp_path):
    kroot, source = _cache(tmp_path)
    entries = kernel_entries(kroot, current={"current0"})
    doomed = _paths(prune_plan(entries, NOW, 14 * DAY, keep_paths=(source,)))
    # current though 40 days old; recent (2 days) with its worktree, git copy and build dir
    assert doomed == {"ancient1", "old-default", "orphan-debug", "linux-source-7.2_7.2.9-1"}


def test_prune_to_zero_days_keeps_only_the_current(tmp_path):
    kroot, source = _cache(tmp_path)
    entries = kernel_entries(kroot, current={"current0"})
    doomed = _paths(prune_plan(entries, NOW, 0, keep_paths=(source,)))
    assert doomed == {
        "ancient1",
        "recent01",
        "old-default",
        "orphan-debug",
        "wt-default",
        "wt-aaaa",
        "copy-bbbb",
        "linux-source-7.2_7.2.9-1",
    }


def test_images_age_by_their_manifest(tmp_path):
    iroot = tmp_path / "image"
    for key, age in (("cur", 100), ("old", 30), ("new", 1)):
        (iroot / key).mkdir(parents=True)
        (iroot / key / "manifest.json").write_text("{}")
        os.utime(iroot / key / "manifest.json", (NOW - age * DAY,) * 2)
    entries = image_entries(iroot, current={"cur"})
    assert _paths(prune_plan(entries, NOW, 14 * DAY)) == {"old"}
    mark_used(iroot / "old")
    fresh = image_entries(iroot, current={"cur"})
    assert _paths(prune_plan(fresh, (iroot / "old" / "manifest.json").stat().st_mtime, 14 * DAY)) == set()


def test_cache_commands_list_and_prune(tmp_path, monkeypatch, capsys):
    from testbed.cli import main

    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # no VMs of this machine
    kroot = tmp_path / "cache" / "kernel"
    _kernel(kroot, "stale123", 0, "gone-default", tmp_path / "src", tmp_path / "src")
    month_ago = time.time() - 30 * DAY
    os.utime(kroot / "stale123" / "manifest.json", (month_ago, month_ago))
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "stale123" in out and "prunable" in out
    assert main(["cache", "prune", "--dry-run"]) == 0
    assert (kroot / "stale123").is_dir()
    assert main(["cache", "prune"]) == 0
    assert "freed" in capsys.readouterr().out
    assert not (kroot / "stale123").exists() and not (kroot / "builds" / "gone-default").exists()
    assert main(["cache", "prune", "--older-than", "-1"]) == 2


def test_prune_refuses_while_a_vm_runs(tmp_path, monkeypatch):
    from testbed.cli import main
    from testbed.vm import registry

    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    registry.register(registry.VmRecord("busy", os.getpid(), 2222, "k", "q", "c", 0.0))
    assert main(["cache", "prune"]) == 2
    assert main(["cache", "prune", "--dry-run"]) == 0


def test_a_held_build_lock_is_seen_from_another_process(tmp_path: Path):
    import subprocess
    import sys

    from testbed.kernel.lock import is_locked

    lock = tmp_path / ".lock"
    assert not is_locked(lock)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl,sys,time; f=open({str(lock)!r},'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_locked(lock)
    finally:
        holder.kill()
        holder.wait()
    assert not is_locked(lock)
