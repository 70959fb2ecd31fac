"""Command lines of the image build (pure functions), and chroot-style path handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.image import GuestImage
from testbed.image.recipe import Recipe
from testbed.image.rootfs import (
    inside,
    install_file,
    install_symlink,
    install_tree,
    installed_packages,
    mounts_under,
)
from testbed.image.steps import (
    compile_argv,
    convert_argv,
    mke2fs_argv,
    mmdebstrap_argv,
    overlay_argv,
    ssh_keygen_argv,
)

RECIPE = Recipe(
    directory=Path("/r"),
    suite="bookworm",
    variant="minbase",
    architecture="amd64",
    components=("main",),
    size="2G",
    format="qcow2",
    packages=("openssh-server", "python3"),
)


def test_mmdebstrap_argv() -> None:
    argv = mmdebstrap_argv(RECIPE, "http://mirror.example/debian", Path("/w/rootfs"))
    assert argv[0] == "mmdebstrap"
    assert argv[-3:] == ["bookworm", "/w/rootfs", "http://mirror.example/debian"]
    for opt in ("--mode=root", "--format=directory", "--variant=minbase",
                "--architectures=amd64", "--components=main",
                "--include=openssh-server,python3"):  # fmt: skip
        assert opt in argv
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    assert all(isinstance(a, str) for a in argv)


def test_mmdebstrap_argv_without_extra_packages() -> None:
    bare = Recipe(**{**RECIPE.__dict__, "packages": ()})
    argv = mmdebstrap_argv(bare, "http://mirror.example/debian", Path("/w/rootfs"))
    assert not any(a.startswith("--include") for a in argv)


def test_mke2fs_argv_populates_from_directory_without_loop_mount() -> None:
    argv = mke2fs_argv(Path("/w/rootfs"), Path("/w/image.raw"), "2G")
    assert argv[:2] == ["mke2fs", "-q"]
    assert argv[argv.index("-t") + 1] == "ext4"
    assert argv[argv.index("-d") + 1] == "/w/rootfs"
    assert argv[argv.index("-E") + 1] == "root_owner=0:0"
    assert argv[-2:] == ["/w/image.raw", "2G"]
    assert "-F" in argv


def test_convert_and_overlay_argv(tmp_path: Path) -> None:
    assert convert_argv(Path("/w/a.raw"), Path("/w/b.qcow2")) == [
        "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "/w/a.raw", "/w/b.qcow2",
    ]  # fmt: skip
    base = tmp_path / "base.qcow2"
    argv = overlay_argv(base, "qcow2", Path("/vm/overlay.qcow2"))
    assert argv[:3] == ["qemu-img", "create", "-q"]
    assert argv[argv.index("-f") + 1] == "qcow2"
    assert argv[argv.index("-F") + 1] == "qcow2"
    assert argv[argv.index("-b") + 1] == str(base.resolve())
    assert argv[-1] == "/vm/overlay.qcow2"


def test_ssh_keygen_argv_has_empty_passphrase() -> None:
    argv = ssh_keygen_argv(Path("/o/id_ed25519"), "testbed-root")
    assert argv[argv.index("-t") + 1] == "ed25519"
    assert argv[argv.index("-N") + 1] == ""
    assert argv[-2:] == ["-f", "/o/id_ed25519"]


def test_guest_image_is_frozen() -> None:
    image = GuestImage(Path("/c/k/base.qcow2"), "qcow2", Path("/c/k/id_ed25519"), "k")
    with pytest.raises(AttributeError):
        image.key = "other"  # type: ignore[misc]
    assert image.host_key == Path("/c/k/ssh_host_ed25519_key.pub")


def _fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "etc").mkdir()
    os.symlink("usr/sbin", root / "sbin")
    os.symlink("/etc/real-resolv", root / "etc/resolv.conf")  # absolute: guest's /etc
    (root / "etc/real-resolv").write_text("old\n")
    return root


def test_inside_resolves_links_within_the_root(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    assert inside(root, "/sbin/testbed-init") == root / "usr/sbin/testbed-init"
    assert inside(root, "/etc/resolv.conf") == root / "etc/real-resolv"
    assert inside(root, "/etc/resolv.conf", follow_last=False) == root / "etc/resolv.conf"
    assert inside(root, "/../../etc/passwd") == root / "etc/passwd"


def test_install_replaces_links_and_never_writes_outside(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    src = tmp_path / "rootfs"
    (src / "sbin").mkdir(parents=True)
    (src / "etc").mkdir()
    (src / "sbin/testbed-init").write_text("#!/bin/sh\n")
    (src / "sbin/testbed-init").chmod(0o775)
    (src / "etc/resolv.conf").write_text("nameserver 10.0.2.3\n")
    (src / "etc/resolv.conf").chmod(0o664)
    assert install_tree(src, root) == ["/etc/resolv.conf", "/sbin/testbed-init"]
    init = root / "usr/sbin/testbed-init"
    assert init.read_text() == "#!/bin/sh\n" and (init.stat().st_mode & 0o777) == 0o755
    conf = root / "etc/resolv.conf"
    assert not conf.is_symlink() and conf.read_text() == "nameserver 10.0.2.3\n"
    assert (conf.stat().st_mode & 0o777) == 0o644
    assert (root / "etc/real-resolv").read_text() == "old\n"


def test_install_tree_leaves_bytecode_caches_behind(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    src = tmp_path / "rootfs"
    (src / "usr/local/lib/testbed/__pycache__").mkdir(parents=True)
    (src / "usr/local/lib/testbed/agent_listen.py").write_text("def main(): pass\n")
    (src / "usr/local/lib/testbed/__pycache__/agent_listen.cpython-312.pyc").write_bytes(b"\xcb\r\r\n")
    assert install_tree(src, root) == ["/usr/local/lib/testbed/agent_listen.py"]


def test_compile_argv_runs_the_guests_python_in_the_tree() -> None:
    """The guest's Python (its magic number, not the host's), checked-hash: a .pyc that no
    longer matches its source is compiled again, whatever the file times say."""
    argv = compile_argv(Path("/work/rootfs"), "/usr/local/lib/testbed")
    assert argv[:3] == ["chroot", "/work/rootfs", "/usr/bin/python3"]
    assert argv[3:5] == ["-m", "compileall"]
    assert argv[argv.index("--invalidation-mode") + 1] == "checked-hash"
    assert argv[-1] == "/usr/local/lib/testbed"


def test_install_file_creates_parents(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    install_file(root, "/root/.ssh/authorized_keys", b"ssh-ed25519 AAAA x\n", 0o600)
    assert ((root / "root/.ssh/authorized_keys").stat().st_mode & 0o777) == 0o600


def test_install_symlink_keeps_existing(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    install_symlink(root, "/etc/mtab", "../proc/self/mounts")
    assert os.readlink(root / "etc/mtab") == "../proc/self/mounts"
    install_symlink(root, "/etc/resolv.conf", "elsewhere")
    assert os.readlink(root / "etc/resolv.conf") == "/etc/real-resolv"


def test_mounts_under() -> None:
    info = (
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        "40 22 0:5 / /c/.build-x/rootfs/proc rw - proc proc rw\n"
        "41 22 0:6 / /c/.build-xy rw - tmpfs tmpfs rw\n"
        "42 22 0:7 / /c/.build-x/with\\040space rw - tmpfs tmpfs rw\n"
    )
    assert mounts_under(Path("/c/.build-x"), info) == [
        "/c/.build-x/rootfs/proc",
        "/c/.build-x/with space",
    ]


def test_installed_packages_from_status() -> None:
    status = (
        "Package: sshd-thing\nStatus: install ok installed\nVersion: 1:9.2\n"
        "Description: a\n long text: with colon\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n"
    )
    assert installed_packages(status) == ["sshd-thing 1:9.2"]
