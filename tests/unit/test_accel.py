import shutil
import subprocess

import pytest

from testbed.errors import ConfigError
from testbed.vm import accel


def test_firmware_layout():
    image = accel.firmware_image()
    assert len(image) == 0x10000  # QEMU wants a multiple of 64 KiB
    # the reset vector (0xfffffff0 = offset 0xfff0) jumps near to offset 0 of the segment
    assert image[0xFFF0] == 0xE9
    rel = int.from_bytes(image[0xFFF1:0xFFF3], "little")
    assert (0xFFF3 + rel) % 0x10000 == 0
    assert image[0] == 0xFA  # cli
    # the GDT register image (last 6 bytes of the code) points at the GDT inside the image
    limit = int.from_bytes(accel.PROBE_CODE[-6:-4], "little")
    base = int.from_bytes(accel.PROBE_CODE[-4:], "little")
    assert limit == 4 * 8 - 1 and base - 0xFFFF0000 == len(accel.PROBE_CODE) - 6 - 32
    assert bytes.fromhex("00af9a000000ffff")[::-1] in image  # a 64-bit code segment
    assert accel.EXPECTED_STATUS == 85


@pytest.mark.skipif(not (shutil.which("as") and shutil.which("ld")), reason="binutils missing")
def test_bytes_match_the_assembly_source(tmp_path):
    src = tmp_path / "probe.S"
    src.write_text(accel.PROBE_ASM)
    subprocess.run(["as", "--64", "-o", str(tmp_path / "p.o"), str(src)], check=True)
    subprocess.run(
        [
            "ld",
            "-m",
            "elf_x86_64",
            "-e",
            "0xffff0000",
            "-Ttext=0xffff0000",
            "--oformat",
            "binary",
            "-o",
            str(tmp_path / "p.bin"),
            str(tmp_path / "p.o"),
        ],
        check=True,
    )
    assert (tmp_path / "p.bin").read_bytes() == accel.firmware_image()


def test_probe_argv_exits_through_debug_port(tmp_path):
    argv = accel.probe_argv("qemu", "kvm", tmp_path / "fw", tmp_path / "st")
    assert argv[:3] == ["qemu", "-accel", "kvm"]
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv
    assert "-nodefaults" in argv and "-no-reboot" in argv


def test_requested_accel(monkeypatch):
    monkeypatch.delenv("ACCEL", raising=False)
    assert accel.requested_accel(None) == "auto"
    monkeypatch.setenv("ACCEL", "tcg")
    assert accel.requested_accel(None) == "tcg"
    assert accel.requested_accel("kvm") == "kvm"  # the option wins
    monkeypatch.setenv("ACCEL", "xen")
    with pytest.raises(ConfigError, match=r"\$ACCEL='xen'"):
        accel.requested_accel(None)


def test_forced_tcg_does_not_probe(monkeypatch):
    monkeypatch.setattr(accel, "run_probe", lambda *a, **k: pytest.fail("probed"))
    d = accel.resolve_accel("tcg")
    assert d.accel == "tcg" and "forced" in d.reason


def _fake(ok):
    return accel.ProbeResult(
        "kvm", ok, 85 if ok else None, "RPLM" if ok else "R", 0.1, "ran" if ok else "hung after real mode"
    )


@pytest.mark.parametrize("ok,want", [(True, "kvm"), (False, "tcg")])
def test_auto_follows_the_probe_and_caches(monkeypatch, tmp_path, ok, want):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(accel, "_kvm_usable", lambda: None)
    monkeypatch.setattr(accel, "_memo", {})
    calls = []
    monkeypatch.setattr(accel, "run_probe", lambda *a, **k: calls.append(a) or _fake(ok))
    first = accel.resolve_accel("auto")
    assert first.accel == want and "\n" not in first.reason
    assert ("broken" in first.reason) == (not ok)
    monkeypatch.setattr(accel, "_memo", {})  # a new process: the per-boot file answers
    second = accel.resolve_accel("auto")
    assert second.accel == want and "cached" in second.reason
    assert len(calls) == 1


def test_auto_without_dev_kvm(monkeypatch):
    monkeypatch.setattr(accel, "_kvm_usable", lambda: "/dev/kvm does not exist")
    d = accel.resolve_accel("auto")
    assert d == accel.AccelDecision("tcg", "tcg: /dev/kvm does not exist")
