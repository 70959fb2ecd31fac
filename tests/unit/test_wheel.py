"""The built wheel carries the testbed's data: installed into a fresh venv, away from the checkout,
`testbed topologies` lists the shipped topologies from the installed copy (not an empty listing).

The wheel is built from a copy of the checkout (so no build/ or egg-info lands in the work tree),
without build isolation when this venv's setuptools can build a wheel on its own (offline), else
with it (pip fetches the [build-system] setuptools from the configured index). The fresh venv sees
this venv's installed dependencies through a .pth line naming its site-packages: a plain path line
does not run that directory's own .pth files, so the editable install of the checkout stays out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from testbed import paths
from testbed.errors import ConfigError
from testbed.hashing import hash_files
from testbed.image.recipe import load_recipe, recipe_key
from testbed.probe import build as probe_build

ROOT = Path(__file__).resolve().parents[2]
# the checkout's data, as the wheel installs it under share/testbed/
DATA = ("topologies", "kernel-configs", "guest-images", "upstream-fixes", "qemu")
DATA_FILES = (
    "known-splats.yaml",
    "known-failures.yaml",
    "coverage-scope.yaml",
    "coverage-uncovered.yaml",
    "mutation-equivalents.yaml",
)
# the checkout's outputs and caches: not what a clone builds from
NOT_COPIED_TOP = {".git", ".venv", "results", "build", "testbed.egg-info"}
NOT_COPIED = shutil.ignore_patterns("__pycache__", ".*_cache")


def _builds_wheels_offline() -> bool:
    """setuptools >= 70.1 has bdist_wheel; an older one needs the `wheel` package beside it."""
    try:
        major, minor = (int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    if (major, minor) >= (70, 1):
        return True
    try:
        metadata.version("wheel")
    except metadata.PackageNotFoundError:
        return False
    return True


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _files(root: Path) -> dict[str, bool]:
    """Relative path -> executable, for every file under root but bytecode (pip compiles the
    data's .py files as it installs them)."""
    return {
        p.relative_to(root).as_posix(): bool(p.stat().st_mode & 0o111)
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _not_copied(directory: str, names: list[str]) -> set[str]:
    top = NOT_COPIED_TOP if Path(directory) == ROOT else set()
    return set(NOT_COPIED(directory, names)) | (top & set(names))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_not_copied, symlinks=True)
    isolation = ["--no-build-isolation"] if _builds_wheels_offline() else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", tmp / "dist", src], cwd=tmp)
    (built,) = (tmp / "dist").glob("testbed-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel installed and this venv's dependencies importable."""
    env_dir = tmp_path_factory.mktemp("fresh").resolve() / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python]  # our pip, into that venv
    _run([*pip, "install", "-q", "--no-deps", "--no-index", wheel], cwd=env_dir)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_run([python, "-c", purelib], cwd=env_dir).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "project_deps.pth").write_text("".join(f"{path}\n" for path in ours))
    return env_dir


def _env() -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TESTBED_RESULTS")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONNOUSERSITE": "1"}


def test_wheel_holds_package_data_and_data_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "testbed-0.1.0.data/data/share/testbed/"
    for name in probe_build.SOURCES:
        assert f"testbed/probe/kmod/{name}" in names
    agent = sorted(p.name for p in (ROOT / "testbed" / "in_guest").glob("*.py"))
    assert agent and all(f"testbed/in_guest/{name}" in names for name in agent)
    assert not any(n.startswith("testbed/render/templates") for n in names)
    for rel in _files(ROOT / "kernel-configs"):
        assert f"{data}kernel-configs/{rel}" in names
    for rel in DATA_FILES:
        assert data + rel in names
    assert not any(n.startswith(("tests/", "testbed/tests/")) for n in names)  # the suites stay in the checkout


def test_installed_testbed_runs_from_its_own_data(fresh: Path, tmp_path: Path) -> None:
    testbed = fresh / "bin" / "testbed"
    python = fresh / "bin" / "python"
    shipped = sorted(p.stem for p in (ROOT / "topologies").glob("*.yaml"))
    installed_data = fresh / "share" / "testbed"

    listing = _run([testbed, "topologies"], cwd=tmp_path, env=_env()).stdout
    assert [line.split()[0] for line in listing.splitlines() if line.strip()] == shipped

    ok = _run([testbed, "validate", "two-switch"], cwd=tmp_path, env=_env()).stdout
    assert f"ok: {installed_data / 'topologies' / 'two-switch.yaml'}" in ok
    _run([testbed, "validate"], cwd=tmp_path, env=_env())  # every shipped topology

    # which testbed that venv imports, where its data and the package's own files are, and every
    # module importing (the ones that run the checkout's suites too)
    probe = """
import importlib, json, pkgutil, sys, testbed
from testbed import paths
from testbed.hashing import hash_files
from testbed.image.recipe import load_recipe, recipe_key
from testbed.probe import build
from testbed.guestvm import guest
for mod in pkgutil.walk_packages(testbed.__path__, "testbed."):
    importlib.import_module(mod.name)
print(json.dumps({
    "module": testbed.__file__, "data": str(paths.DATA_ROOT), "results": str(paths.results_root()),
    "agent": sorted(p.name for p in guest.AGENT_DIR.glob("*.py")),
    "kmod": hash_files(build._sources()), "recipe": recipe_key(load_recipe(paths.GUEST_IMAGES_DIR)),
    "editable": sorted(name for name in sys.modules if name.startswith("__editable__")),
}))
"""
    seen = json.loads(_run([python, "-c", probe], cwd=tmp_path, env=_env()).stdout)
    assert Path(seen["module"]).is_relative_to(fresh), seen["module"]
    assert not Path(seen["module"]).is_relative_to(ROOT)
    assert seen["editable"] == []  # the checkout's editable finder (a .pth of our venv) never ran
    assert Path(seen["data"]) == installed_data
    assert Path(seen["results"]).resolve() == tmp_path.resolve() / "results"  # not site-packages
    assert seen["agent"] == sorted(p.name for p in (ROOT / "testbed" / "in_guest").glob("*.py"))
    assert seen["kmod"] == hash_files(probe_build._sources())
    # contents and exec bits alike: the same recipe key, so the same cached guest image
    assert seen["recipe"] == recipe_key(load_recipe(paths.GUEST_IMAGES_DIR))


@pytest.mark.parametrize("name", DATA)
def test_installed_data_tree_is_the_checkouts(fresh: Path, name: str) -> None:
    """Every file of the checkout's data directory, with its exec bit (data-files list them one
    directory at a time in pyproject.toml: a file added here and not there shows up by name)."""
    assert _files(fresh / "share" / "testbed" / name) == _files(ROOT / name)


def test_no_data_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert paths.find_data_root([tmp_path]) is None
    assert paths.find_data_root([tmp_path, ROOT]) == ROOT
    monkeypatch.setattr(paths, "_FOUND", None)
    with pytest.raises(ConfigError, match="testbed's data"):
        paths.data_root()
