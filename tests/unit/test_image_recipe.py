"""Guest image recipe: parsing, validation and cache-key stability."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.image.recipe import load_recipe, parse_packages, recipe_files, recipe_key
from testbed.paths import GUEST_IMAGES_DIR

RECIPE = """\
suite = "bookworm"
variant = "minbase"
architecture = "amd64"
components = ["main"]
size = "2G"
format = "qcow2"
"""


def _recipe_dir(tmp_path: Path, recipe: str = RECIPE) -> Path:
    d = tmp_path / "guest-images"
    (d / "rootfs/sbin").mkdir(parents=True)
    (d / "recipe.toml").write_text(recipe)
    (d / "packages.txt").write_text("openssh-server  # sshd\n\npython3\nopenssh-server\n")
    init = d / "rootfs/sbin/testbed-init"
    init.write_text("#!/bin/sh\n")
    init.chmod(0o755)
    return d


def test_repo_recipe_loads_with_required_packages() -> None:
    recipe = load_recipe(GUEST_IMAGES_DIR)
    assert recipe.suite == "bookworm"
    assert recipe.variant == "minbase"
    assert recipe.format in ("qcow2", "raw")
    for needed in ("openssh-server", "python3", "pciutils", "nvme-cli", "kmod", "iproute2",
                   "util-linux", "procps", "busybox"):  # fmt: skip
        assert needed in recipe.packages
    assert "systemd" not in recipe.packages and "systemd-sysv" not in recipe.packages


def test_repo_recipe_ships_an_executable_init_and_sshd_config() -> None:
    init = GUEST_IMAGES_DIR / "rootfs/sbin/testbed-init"
    assert init.read_text().startswith("#!/bin/sh\n")
    assert init.stat().st_mode & 0o111
    text = (GUEST_IMAGES_DIR / "rootfs/etc/ssh/sshd_config").read_text()
    settings = {
        line.split()[0]: " ".join(line.split()[1:])
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert settings["PermitRootLogin"] == "prohibit-password"
    assert settings["PasswordAuthentication"] == "no"
    assert settings["UseDNS"] == "no"
    # sshd_config has no trailing comments: a '#' after a value would become part of it.
    assert not any("#" in value for value in settings.values())


def test_init_prints_the_ready_marker() -> None:
    text = (GUEST_IMAGES_DIR / "rootfs/sbin/testbed-init").read_text()
    assert 'log "sshd ready"' in text and "testbed-init: $*" in text


def test_packages_comments_blank_lines_and_duplicates() -> None:
    assert parse_packages("a0 # x\n\n# y\nb-1.2+x\na0\n") == ("a0", "b-1.2+x")


def test_package_with_version_is_rejected_with_line() -> None:
    with pytest.raises(ConfigError, match=r"packages.txt:2: 'python3=3.11'"):
        parse_packages("ok\npython3=3.11\n")


def test_unknown_key_lists_allowed(tmp_path: Path) -> None:
    d = _recipe_dir(tmp_path, RECIPE + 'mirror = "http://mirror.example/debian"\n')
    with pytest.raises(ConfigError, match="unknown key 'mirror'; allowed: suite"):
        load_recipe(d)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('format = "qcow2"', 'format = "vmdk"', "format 'vmdk'; allowed: qcow2, raw"),
        ('size = "2G"', 'size = "2 GB"', "size '2 GB'"),
        ('components = ["main"]', "components = []", "components must be"),
        ('suite = "bookworm"', "suite = 12", "suite must be a str"),
        ('suite = "bookworm"\n', "", "missing suite"),
    ],
)
def test_bad_recipe_values(tmp_path: Path, old: str, new: str, message: str) -> None:
    d = _recipe_dir(tmp_path, RECIPE.replace(old, new))
    with pytest.raises(ConfigError, match=message):
        load_recipe(d)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    d = _recipe_dir(tmp_path)
    (d / "packages.txt").unlink()
    with pytest.raises(ConfigError, match="packages.txt: missing"):
        load_recipe(d)


def test_key_is_stable_and_location_independent(tmp_path: Path) -> None:
    a = _recipe_dir(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert recipe_key(load_recipe(a)) == recipe_key(load_recipe(a))
    assert recipe_key(load_recipe(a)) == recipe_key(load_recipe(b))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: (d / "packages.txt").write_text("openssh-server\npython3\nstrace\n"),
        lambda d: (d / "rootfs/sbin/testbed-init").write_text("#!/bin/sh\necho hi\n"),
        lambda d: (d / "rootfs/sbin/testbed-init").chmod(0o644),
        lambda d: (d / "rootfs/etc").mkdir() or (d / "rootfs/etc/motd").write_text("hi\n"),
        lambda d: (d / "recipe.toml").write_text(RECIPE.replace("2G", "3G")),
        lambda d: (d / "recipe.toml").write_text(RECIPE.replace("bookworm", "trixie")),
    ],
    ids=["package", "init-content", "init-mode", "new-file", "size", "suite"],
)
def test_any_recipe_change_changes_the_key(tmp_path: Path, change) -> None:
    d = _recipe_dir(tmp_path)
    before = recipe_key(load_recipe(d))
    change(d)
    assert recipe_key(load_recipe(d)) != before


def test_mirror_is_not_a_key_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _recipe_dir(tmp_path)
    monkeypatch.setenv("TESTBED_DEBIAN_MIRROR", "http://one.example/debian")
    first = recipe_key(load_recipe(d))
    monkeypatch.setenv("TESTBED_DEBIAN_MIRROR", "http://two.example/debian")
    assert recipe_key(load_recipe(d)) == first


def test_bytecode_caches_are_not_part_of_the_recipe(tmp_path: Path) -> None:
    """A listener run from a checkout, or pip installing the data, writes __pycache__ beside a
    rootfs module: the same recipe, the same image (the build compiles the guest's own)."""
    d = _recipe_dir(tmp_path)
    before = recipe_key(load_recipe(d))
    cache = d / "rootfs/usr/local/lib/testbed/__pycache__"
    cache.mkdir(parents=True)
    (cache / "agent_listen.cpython-311.pyc").write_bytes(b"\xa7\r\r\n")
    assert recipe_key(load_recipe(d)) == before
    assert all("__pycache__" not in p.parts for p in recipe_files(d))
