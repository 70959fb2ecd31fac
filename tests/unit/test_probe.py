"""The probe module's host side: ioctl layouts agree with the C header, the kernel tree behind a
bzImage is found (or refused with what to pass), the C source passes checkpatch --strict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.probe.build import KMOD_DIR, kernel_tree_of, probe_key

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "in_guest"))
import probe_uapi as P  # noqa: E402 - the guest's module, imported as the guest does

LAYOUTS = {"census": P.CENSUS, "import": P.IMPORT, "state": P.STATE, "dma": P.DMA, "iova": P.IOVA, "watch": P.WATCH}
IOCTLS = {
    "CENSUS": P.P2PDMA_PROBE_CENSUS,
    "IMPORT": P.P2PDMA_PROBE_IMPORT,
    "STATE": P.P2PDMA_PROBE_STATE,
    "REMAP": P.P2PDMA_PROBE_REMAP,
    "RELEASE": P.P2PDMA_PROBE_RELEASE,
    "DMA": P.P2PDMA_PROBE_DMA,
    "IOVA": P.P2PDMA_PROBE_IOVA,
    "WATCH": P.P2PDMA_PROBE_WATCH,
}


def _c_values(tmp_path: Path) -> dict[str, int]:
    """sizeof every struct and the value of every ioctl number, as the C compiler sees them."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (make deps installs build-essential)")
    lines = [f'printf("{name} %zu\\n", sizeof(struct p2pdma_probe_{name}));' for name in LAYOUTS]
    lines += [
        f'printf("{name}.{field} %zu\\n", offsetof(struct p2pdma_probe_{name}, {field}));'
        for name in LAYOUTS
        for field, _ in P.FIELDS[name]
    ]
    lines += [f'printf("{name} %lu\\n", (unsigned long)P2PDMA_PROBE_{name});' for name in IOCTLS]
    src = tmp_path / "sizes.c"
    src.write_text(
        '#include <stddef.h>\n#include <stdio.h>\n#include "p2pdma_probe.h"\n'
        f"int main(void) {{ {' '.join(lines)} return 0; }}\n"
    )
    exe = tmp_path / "sizes"
    subprocess.run(["cc", "-I", str(KMOD_DIR), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_struct_layouts_match_the_header(tmp_path):
    values = _c_values(tmp_path)
    for name, layout in LAYOUTS.items():
        assert layout.size == values[name], f"struct p2pdma_probe_{name}: python {layout.size}, C {values[name]}"
        for field, offset in P.offsets(name).items():
            assert offset == values[f"{name}.{field}"], (
                f"p2pdma_probe_{name}.{field}: python offset {offset}, C {values[f'{name}.{field}']}"
            )
    for name, number in IOCTLS.items():
        assert number == values[name], f"P2PDMA_PROBE_{name}: python {number:#x}, C {values[name]:#x}"


def _fake_build(tmp_path: Path, same: bool = True) -> Path:
    builddir = tmp_path / "builds" / "b"
    (builddir / "arch" / "x86" / "boot").mkdir(parents=True)
    (builddir / "arch" / "x86" / "boot" / "bzImage").write_bytes(b"kernel" if same else b"another")
    art = tmp_path / "kernel" / "k1"
    art.mkdir(parents=True)
    (art / "bzImage").write_bytes(b"kernel")
    (art / "manifest.json").write_text(json.dumps({"build_dir": str(builddir), "built_in": "/src", "key": "k1"}))
    return art / "bzImage"


def test_tree_of_a_testbed_kernel(tmp_path):
    tree = kernel_tree_of(_fake_build(tmp_path))
    assert (tree.srctree, tree.builddir.name, tree.identity) == (Path("/src"), "b", "k1")


def test_the_kept_module_kit_serves_modules_and_the_source_serves_selftests(tmp_path):
    """A kernel entry with its install-extmod-build copy: a module builds against the copy, but
    the tree's own tests need the source tree (the copy has no selftests and, built in place,
    cannot export uAPI headers: CI failed collecting kselftests against it)."""
    bzimage = _fake_build(tmp_path)
    kit = bzimage.parent / "extmod"
    kit.mkdir()
    (kit / "Module.symvers").write_text("")
    (kit / "Makefile").write_text("")
    assert kernel_tree_of(bzimage).srctree == kit
    assert kernel_tree_of(bzimage, for_modules=False).srctree == Path("/src")


def test_build_dir_that_moved_on_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has since built another kernel"):
        kernel_tree_of(_fake_build(tmp_path, same=False))


def test_users_own_build_tree(tmp_path):
    boot = tmp_path / "linux" / "arch" / "x86" / "boot"
    boot.mkdir(parents=True)
    (boot / "bzImage").write_bytes(b"k")
    (tmp_path / "linux" / "Module.symvers").write_text("")
    tree = kernel_tree_of(boot / "bzImage")
    assert tree.builddir == tree.srctree == (tmp_path / "linux").resolve()


def test_a_lone_bzimage_says_what_to_pass(tmp_path):
    (tmp_path / "bzImage").write_bytes(b"k")
    with pytest.raises(ConfigError, match="Pass the source tree instead"):
        kernel_tree_of(tmp_path / "bzImage")


def test_key_follows_kernel_and_sources(tmp_path):
    tree = kernel_tree_of(_fake_build(tmp_path))
    other = type(tree)(tree.srctree, tree.builddir, "k2")
    assert probe_key(tree) != probe_key(other)


def _checkpatch() -> Path | None:
    """checkpatch.pl of the Debian source the default kernel is built from, once fetched."""
    from testbed.kernel.source import pinned_debian_tree
    from testbed.paths import cache_dir

    tree = pinned_debian_tree(cache_dir("kernel") / "debian")
    script = tree.path / "scripts" / "checkpatch.pl" if tree else None
    return script if script and script.is_file() else None


def test_module_source_is_checkpatch_strict_clean():
    script = _checkpatch()
    if script is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kernel source not fetched: `make test` builds the kernel before the tests")
        pytest.skip("kernel source not fetched yet (testbed kernel build fetches it)")
    files = [str(KMOD_DIR / "p2pdma_probe.c"), str(KMOD_DIR / "p2pdma_probe.h")]
    proc = subprocess.run(
        ["perl", str(script), "--strict", "--no-tree", "--no-summary", "--terse", "-f", *files],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_structs_are_packed_and_read_by_field_name():
    """pack() puts the given fields in header order and zeroes the rest (b"" for strings);
    unpack() names what an ioctl handed back."""
    values = P.pack("watch", {"client": b"0000:01:00.0", "stop": 1})
    assert len(values) == len(P.FIELDS["watch"]) and P.WATCH.size == len(P.WATCH.pack(*values))
    out = P.unpack("watch", P.WATCH.unpack(P.WATCH.pack(*values)))
    assert out["client"].rstrip(b"\0") == b"0000:01:00.0" and out["stop"] == 1 and out["calls"] == 0
    assert out["map_type_name"] == bytes(32)
