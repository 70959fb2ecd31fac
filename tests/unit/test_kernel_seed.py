"""A series' first build seeded from the base build: which base build, which files differ,
command files rewritten and objects that name the old tree dropped, timestamps that let make
rebuild exactly what differs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from testbed.kernel import seed


def _repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "base"], check=True)
    return path


def _build(path: Path, srctree: Path) -> Path:
    path.mkdir(parents=True)
    (path / "vmlinux").write_bytes(b"\x7fELF")
    (path / ".a.o.cmd").write_text(f"savedcmd_a.o := gcc -I{srctree}/include -c {srctree}/a.c\n")
    (path / ".a.o.d").write_text(f"a.o: {srctree}/a.c {srctree}/include/x.h\n")
    (path / "a.o").write_bytes(b"object without paths")
    (path / "setup.o").write_bytes(b"\0assert failed in " + str(srctree).encode() + b"/arch/x86/boot/a20.c\0")
    (path / "source").symlink_to(srctree)
    (path / "tools" / "objtool").mkdir(parents=True)
    (path / "tools" / "objtool" / ".check.o.cmd").write_text(f"cmd_{path}/tools/objtool/check.o := gcc -I{srctree}\n")
    (path / "tools" / "objtool" / "objtool").write_bytes(b"\0host program built in " + str(srctree).encode())
    return path


def test_the_newest_series_less_build_of_the_same_source_and_set(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()

    def kernel(key: str, when: str, **doc: object) -> None:
        d = tmp_path / "kernel" / key
        d.mkdir(parents=True)
        build = _build(tmp_path / "builds" / key, src)
        base = {"key": key, "config_set": "default", "source_tree": str(src), "patches": [], "built_at": when}
        (d / "manifest.json").write_text(json.dumps(base | {"build_dir": str(build), "built_in": str(src)} | doc))

    kernel("old", "2026-12-01T00:00:00Z")
    kernel("new", "2026-12-04T00:00:00Z")
    kernel("series", "2026-12-05T00:00:00Z", patches=["0001 x"])
    kernel("debug", "2026-12-05T00:00:00Z", config_set="debug")
    found = seed.find_base_build(tmp_path / "kernel", src, "default")
    assert found is not None and found.key == "new"
    assert seed.find_base_build(tmp_path / "kernel", tmp_path / "other", "default") is None


def test_changed_files_are_the_series_and_anything_uncommitted(tmp_path: Path):
    base = _repo(tmp_path / "base", {"a.c": "a", "b.c": "b", "include/x.h": "x"})
    tree = _repo(tmp_path / "tree", {"a.c": "a", "b.c": "B", "include/x.h": "x", "new.c": "n"})
    (tree / "a.c").write_text("edited, not committed")
    assert seed.changed_files(base, tree) == {"a.c", "b.c", "new.c"}


def test_seeding_rewrites_commands_drops_path_bearing_objects_and_ages_unchanged_files(tmp_path: Path):
    base_tree = _repo(tmp_path / "base", {"a.c": "a", "b.c": "b", "include/x.h": "x"})
    tree = _repo(tmp_path / "tree", {"a.c": "a", "b.c": "B", "include/x.h": "x"})
    base_build = _build(tmp_path / "builds" / "base", base_tree)
    before = {p.name: p.read_bytes() for p in base_build.iterdir() if p.is_file() and not p.is_symlink()}
    mtime = (base_build / ".a.o.cmd").stat().st_mtime_ns
    out = tmp_path / "builds" / "series"
    said: list[str] = []
    seed.seed(seed.BaseBuild(base_tree, base_build, "k1"), tree, out, said.append)
    assert seed.seeded_from(out) == "k1"  # a newer base later seeds it again
    assert (out / ".a.o.cmd").read_text() == f"savedcmd_a.o := gcc -I{tree}/include -c {tree}/a.c\n"
    assert (out / ".a.o.cmd").stat().st_mtime_ns == mtime  # rewritten, not touched
    assert str(base_tree) not in (out / ".a.o.d").read_text()
    assert not (out / "setup.o").exists() and (out / "a.o").exists()  # rebuilt with the new path
    assert (out / "tools" / "objtool" / "objtool").exists()  # a host program: kept, or all would rebuild
    assert (
        out / "tools" / "objtool" / ".check.o.cmd"
    ).read_text() == f"cmd_{out}/tools/objtool/check.o := gcc -I{tree}\n"
    assert os.readlink(out / "source") == str(tree)
    assert (tree / "a.c").stat().st_mtime == seed.OLD and (tree / "include/x.h").stat().st_mtime == seed.OLD
    assert (tree / "b.c").stat().st_mtime > (out / "a.o").stat().st_mtime - 1  # the series' file: current
    assert {p.name: p.read_bytes() for p in base_build.iterdir() if p.is_file() and not p.is_symlink()} == before
    status = subprocess.run(["git", "-C", str(tree), "diff-files", "--name-only"], capture_output=True, text=True)
    assert status.stdout == ""  # the index knows the new timestamps: a checkout rewrites nothing
    assert "1 file(s) differ" in said[0] and "1 objects that name the old tree dropped" in said[0]


def test_an_interrupted_seeding_leaves_no_build_directory(tmp_path: Path, monkeypatch):
    """The copy is renamed into place last: a build directory with the copied vmlinux but the
    tree's timestamps not yet set would later skip seeding and miss rebuilds."""
    base_tree = _repo(tmp_path / "base", {"a.c": "a"})
    tree = _repo(tmp_path / "tree", {"a.c": "A"})
    base_build = _build(tmp_path / "builds" / "base", base_tree)

    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(seed, "_age", interrupted)
    out = tmp_path / "builds" / "series"
    try:
        seed.seed(seed.BaseBuild(base_tree, base_build, "k1"), tree, out, lambda _: None)
    except KeyboardInterrupt:
        pass
    assert not out.exists() and not out.with_name("series.seeding").exists()


def test_only_debians_tree_seeds_and_the_series_trees_other_builds_are_dropped(tmp_path: Path, monkeypatch):
    """A user's tree built in place may hold objects of other commits; and seeding moves the
    series tree's timestamps, so its build directories of other sets are dropped."""
    from types import SimpleNamespace

    from testbed.kernel import build

    seeded: list[Path] = []
    base = seed.BaseBuild(tmp_path / "debian", tmp_path / "builds" / "base", "k0")
    monkeypatch.setattr(seed, "find_base_build", lambda root, source, config: base)
    monkeypatch.setattr(seed, "seed", lambda b, srctree, builddir, progress: seeded.append(builddir))
    series_tree = tmp_path / "trees" / "wt-1"
    debug_dir = build._build_dir(tmp_path, series_tree, "debug")
    debug_dir.mkdir(parents=True)
    target = build._build_dir(tmp_path, series_tree, "default")
    user = SimpleNamespace(source=SimpleNamespace(kind="git", path=tmp_path / "linux"), config_set="default")
    build._seed_from_base(user, tmp_path, series_tree, target, lambda _: None)  # type: ignore[arg-type]
    assert seeded == [] and debug_dir.exists()
    debian = SimpleNamespace(source=SimpleNamespace(kind="debian", path=tmp_path / "debian"), config_set="default")
    build._seed_from_base(debian, tmp_path, series_tree, target, lambda _: None)  # type: ignore[arg-type]
    assert seeded == [target] and not debug_dir.exists()


def test_a_series_build_is_seeded_again_when_its_base_build_is_not_the_newest(tmp_path: Path, monkeypatch):
    """After a config fragment changed, the base rebuilt a handful of objects; the series'
    directory, seeded from the old base, would rebuild all the change reaches (1543 objects)."""
    from types import SimpleNamespace

    from testbed.kernel import build

    seeded: list[str] = []
    newest = {"key": "k1"}
    monkeypatch.setattr(
        seed,
        "find_base_build",
        lambda root, source, config: seed.BaseBuild(
            tmp_path / "debian", tmp_path / "builds" / newest["key"], newest["key"]
        ),
    )

    def fake_seed(base: seed.BaseBuild, srctree: Path, builddir: Path, progress) -> None:
        seeded.append(base.key)
        builddir.mkdir(parents=True, exist_ok=True)
        (builddir / "vmlinux").write_bytes(b"\x7fELF")
        (builddir / seed.SEEDED_FROM).write_text(base.key + "\n")

    monkeypatch.setattr(seed, "seed", fake_seed)
    series_tree = tmp_path / "trees" / "wt-1"
    target = build._build_dir(tmp_path, series_tree, "default")
    plan = SimpleNamespace(source=SimpleNamespace(kind="debian", path=tmp_path / "debian"), config_set="default")
    said: list[str] = []
    for _ in range(2):  # the first build seeds; the next builds on, incrementally
        build._seed_from_base(plan, tmp_path, series_tree, target, said.append)  # type: ignore[arg-type]
    assert seeded == ["k1"] and seed.seeded_from(target) == "k1"
    newest["key"] = "k2"  # the base was rebuilt with another configuration
    build._seed_from_base(plan, tmp_path, series_tree, target, said.append)  # type: ignore[arg-type]
    assert seeded == ["k1", "k2"] and any("started from kernel k1; the base is k2 now" in s for s in said)
    (target / seed.SEEDED_FROM).unlink()  # built from nothing once: kbuild decides, as before
    build._seed_from_base(plan, tmp_path, series_tree, target, said.append)  # type: ignore[arg-type]
    assert seeded == ["k1", "k2"]
