"""Image cache behaviour without building anything: hits, failed builds, overlays."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testbed.errors import InfraError
from testbed.image import GuestImage, cached_image, make_overlay
from testbed.image import build as build_mod
from testbed.image.recipe import load_recipe, recipe_key
from testbed.paths import GUEST_IMAGES_DIR


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TESTBED_DEBIAN_MIRROR", "http://mirror.example/debian")
    return tmp_path / "cache" / "image"


def _fake_entry(cache: Path) -> GuestImage:
    recipe = load_recipe(GUEST_IMAGES_DIR)
    key = recipe_key(recipe)
    entry = build_mod.image_dir(key)
    (entry / build_mod.base_name(recipe.format)).write_bytes(b"")
    (entry / build_mod.SSH_KEY).write_text("key\n")
    return GuestImage(entry / f"base.{recipe.format}", recipe.format, entry / "id_ed25519", key)


def test_cache_hit_does_not_build(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_mod.image_dir(recipe_key(load_recipe(GUEST_IMAGES_DIR))).mkdir(parents=True)
    expected = _fake_entry(cache)

    def no_build(*args: object) -> None:
        raise AssertionError("built although cached")

    monkeypatch.setattr(build_mod, "_build", no_build)
    monkeypatch.setattr(build_mod, "check_host", no_build)
    assert build_mod.ensure_image(progress=lambda line: None) == expected
    assert cached_image() == expected


def test_not_built_means_no_cached_image(cache: Path) -> None:
    assert cached_image() is None


def test_failed_build_leaves_no_entry_and_keeps_the_log(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "check_host", lambda: None)
    monkeypatch.setattr(build_mod, "mmdebstrap_argv", lambda *a: ["sh", "-c", "echo mirror down; exit 7"])
    lines: list[str] = []
    with pytest.raises(InfraError, match=r"bootstrap failed \(exit 7\); build log: ") as err:
        build_mod.ensure_image(progress=lines.append)
    log = Path(str(err.value).rsplit("build log: ", 1)[1])
    assert "mirror down" in log.read_text()
    assert any("build log" in line for line in lines)
    key = recipe_key(load_recipe(GUEST_IMAGES_DIR))
    assert not build_mod.image_dir(key).exists()
    assert not list(cache.glob(".build-*"))


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_make_overlay_backs_onto_the_base(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    with open(base, "wb") as f:
        f.truncate(1 << 20)
    base.chmod(0o444)
    image = GuestImage(base, "raw", tmp_path / "id_ed25519", "k")
    overlay = make_overlay(image, tmp_path / "vm")
    assert overlay == tmp_path / "vm" / "overlay.qcow2"
    header = overlay.read_bytes()[:4096]
    assert header.startswith(b"QFI\xfb") and str(base.resolve()).encode() in header
    assert make_overlay(image, tmp_path / "vm") == overlay  # replaced, not an error


def test_make_overlay_without_base_is_infra_error(tmp_path: Path) -> None:
    image = GuestImage(tmp_path / "gone.qcow2", "qcow2", tmp_path / "k", "k")
    with pytest.raises(InfraError, match="testbed image build"):
        make_overlay(image, tmp_path / "vm")
