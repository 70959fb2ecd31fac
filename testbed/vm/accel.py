"""Pick the accelerator: `auto` boots a tiny guest under KVM and keeps KVM only if it runs.

/dev/kvm opening is not enough: nested or half-working KVM (seen on CI runners and on
microVM hosts) accepts the ioctls and then hangs or kills the guest. The probe is a 64 KiB
firmware that walks real → protected → long mode, checks a RAM write, and exits QEMU through
isa-debug-exit with 0x2a (status (0x2a << 1) | 1 = 85). Each stage writes a letter to the
debugcon port, so a failure says how far the guest got.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from ..paths import runtime_dir
from ..timeouts import Timeouts
from .process import QemuProcess

ACCELS = ("auto", "kvm", "tcg")
ACCEL_ENV = "ACCEL"
QEMU = "qemu-system-x86_64"
EXIT_VALUE = 0x2A
EXPECTED_STATUS = (EXIT_VALUE << 1) | 1
CACHE_TTL = 6 * 3600.0  # also keyed by boot id: a host reboot or a new QEMU re-probes

STAGES = {"R": "real mode", "P": "protected mode", "L": "long mode", "M": "RAM check"}

# The source of PROBE_CODE (GNU as; tests/unit/test_accel.py re-assembles it when binutils is
# installed and compares). Linked at 0xffff0000: the firmware is the top 64 KiB below 4 GiB and
# the CPU starts at 0xfffffff0, which jumps back to `start`.
PROBE_ASM = r"""
        .text
        .code16
start:
        cli
        movw    $0x402, %dx
        movb    $'R', %al
        outb    %al, %dx
        lgdtl   %cs:(gdtr - start)
        movl    %cr0, %eax
        orl     $1, %eax
        movl    %eax, %cr0
        ljmpl   $0x08, $pm32
        .code32
pm32:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x402, %dx
        movb    $'P', %al
        outb    %al, %dx
        # page tables in RAM at 0x1000..0x5000: identity 0-2M, and the top 2M (this code)
        movl    $0x1000, %edi
        xorl    %eax, %eax
        movl    $0x1000, %ecx
        rep stosl
        movl    $0x2003, 0x1000
        movl    $0x3003, 0x2000
        movl    $0x4003, 0x2018
        movl    $0x83, 0x3000
        movl    $0xffe00083, 0x4ff8
        movl    $0x1000, %eax
        movl    %eax, %cr3
        movl    %cr4, %eax
        orl     $0x20, %eax
        movl    %eax, %cr4
        movl    $0xc0000080, %ecx
        rdmsr
        orl     $0x100, %eax
        wrmsr
        movl    %cr0, %eax
        orl     $0x80000000, %eax
        movl    %eax, %cr0
        ljmpl   $0x18, $lm64
        .code64
lm64:
        movw    $0x402, %dx
        movb    $'L', %al
        outb    %al, %dx
        movq    $0x5a5aa5a5deadbeef, %rax
        movq    %rax, 0x8000
        movq    0x8000, %rbx
        cmpq    %rax, %rbx
        jne     bad
        movb    $'M', %al
        outb    %al, %dx
        movb    $0x2a, %al
        outb    %al, $0xf4
bad:
        movb    $0x15, %al
        outb    %al, $0xf4
        hlt
        .align 8
gdt:
        .quad   0
        .quad   0x00cf9a000000ffff
        .quad   0x00cf92000000ffff
        .quad   0x00af9a000000ffff
gdtr:
        .word   gdtr - gdt - 1
        .long   gdt
        .org    0xfff0
        .code16
reset:
        jmp     start
        .org    0x10000, 0xf4
"""

PROBE_CODE = bytes.fromhex(
    "faba0204b052ee2e660f0116f8000f20c06683c8010f22c066ea2000ffff080066b810008ed88ec08ed066ba"
    "0204b050eebf0010000031c0b900100000f3abc7050010000003200000c7050020000003300000c705182000"
    "0003400000c7050030000083000000c705f84f00008300e0ffb8001000000f22d80f20e083c8200f22e0b980"
    "0000c00f320d000100000f300f20c00d000000800f22c0eaa200ffff180066ba0204b04cee48b8efbeaddea5"
    "a55a5a4889042500800000488b1c25008000004839c37507b04deeb02ae6f4b015e6f4f48db4000000000000"
    "00000000ffff0000009acf00ffff00000092cf00ffff0000009aaf001f00d800ffff"
)
RESET_OFFSET = 0xFFF0
RESET_JMP = bytes.fromhex("e90d00")  # jmp near 0x0000 (rel16 from 0xfff3)
FIRMWARE_SIZE = 0x10000  # QEMU wants a multiple of 64 KiB


def firmware_image() -> bytes:
    image = bytearray(FIRMWARE_SIZE)
    image[: len(PROBE_CODE)] = PROBE_CODE
    image[RESET_OFFSET : RESET_OFFSET + len(RESET_JMP)] = RESET_JMP
    image[RESET_OFFSET + len(RESET_JMP) :] = b"\xf4" * (FIRMWARE_SIZE - RESET_OFFSET - 3)
    return bytes(image)


def probe_argv(qemu: str, accel: str, firmware: Path, debugcon: Path) -> list[str]:
    return [
        qemu,
        "-accel",
        accel,
        "-M",
        "q35",
        "-m",
        "16",
        "-display",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-bios",
        str(firmware),
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-debugcon",
        f"file:{debugcon}",
        "-global",
        "isa-debugcon.iobase=0x402",
    ]


@dataclass(frozen=True)
class ProbeResult:
    accel: str
    ok: bool
    status: int | None  # QEMU's exit status; None if it had to be killed
    stages: str  # letters of STAGES the guest reached
    seconds: float
    detail: str


def run_probe(accel: str, qemu: str = QEMU, timeout: float | None = None) -> ProbeResult:
    """Boot the probe firmware under `accel`; ok only with the expected exit status."""
    timeout = Timeouts().accel_probe if timeout is None else timeout
    with tempfile.TemporaryDirectory(prefix="testbed-accel-") as tmp:
        firmware, debugcon, log = Path(tmp, "probe.fd"), Path(tmp, "stages"), Path(tmp, "log")
        firmware.write_bytes(firmware_image())
        proc = QemuProcess(probe_argv(qemu, accel, firmware, debugcon), log)
        start = time.monotonic()
        proc.start()
        status = proc.wait(timeout)
        seconds = time.monotonic() - start
        if status is None:
            proc.stop(None, 0, 1.0, 2.0)
        stages = debugcon.read_text(errors="replace") if debugcon.exists() else ""
        output = proc.log_tail(5)
    if status == EXPECTED_STATUS:
        detail = f"probe guest ran under {accel} in {seconds:.2f}s"
    elif status is None:
        detail = f"probe guest under {accel} hung: no exit within {timeout:.0f}s, last stage reached: {_last(stages)}"
    else:
        detail = (
            f"probe guest under {accel} ended with status {status} (want "
            f"{EXPECTED_STATUS}), last stage reached: {_last(stages)}"
            + (f"; QEMU said: {output.splitlines()[-1]}" if output.strip() else "")
        )
    return ProbeResult(accel, status == EXPECTED_STATUS, status, stages, seconds, detail)


def _last(stages: str) -> str:
    return STAGES.get(stages[-1:], "none (not even the first instruction)")


@dataclass(frozen=True)
class AccelDecision:
    accel: str  # "kvm" | "tcg"
    reason: str  # one line, for the user


def _kvm_usable() -> str | None:
    """Why /dev/kvm cannot be used, or None."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return None


def _cache_path(qemu: str) -> Path:
    path = shutil.which(qemu) or qemu
    try:
        st = os.stat(path)
        ident = f"{path}:{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        ident = path
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    key = hashlib.sha256(f"{ident}|{os.uname().release}|{boot_id}".encode()).hexdigest()[:16]
    return runtime_dir() / f"accel-probe-{key}.json"


_memo: dict[str, ProbeResult] = {}


def probe_kvm_cached(qemu: str = QEMU, timeout: float | None = None) -> tuple[ProbeResult, bool]:
    """The KVM probe result, from memory, the per-boot cache file, or a fresh run.
    Second value: True if it came from a cache."""
    if qemu in _memo:
        return _memo[qemu], True
    cache = _cache_path(qemu)
    try:
        data = json.loads(cache.read_text())
        if time.time() - data.pop("saved") < CACHE_TTL:
            result = ProbeResult(**data)
            _memo[qemu] = result
            return result, True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    result = run_probe("kvm", qemu, timeout)
    _memo[qemu] = result
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({**asdict(result), "saved": time.time()}))
    tmp.replace(cache)
    return result, False


def requested_accel(option: str | None) -> str:
    """--accel wins over $ACCEL; default auto."""
    value = option or os.environ.get(ACCEL_ENV) or "auto"
    if value not in ACCELS:
        source = "--accel" if option else f"${ACCEL_ENV}"
        raise ConfigError(f"{source}={value!r}: allowed are {', '.join(ACCELS)}")
    return value


def resolve_accel(option: str | None = None, qemu: str = QEMU) -> AccelDecision:
    requested = requested_accel(option)
    source = "--accel" if option else f"${ACCEL_ENV}"
    if requested == "tcg":
        return AccelDecision("tcg", f"tcg: forced by {source}")
    if requested == "kvm":
        problem = _kvm_usable()
        if problem:
            raise ConfigError(f"{source}=kvm but {problem}; use --accel tcg or auto")
        return AccelDecision("kvm", f"kvm: forced by {source} (not probed)")
    problem = _kvm_usable()
    if problem:
        return AccelDecision("tcg", f"tcg: {problem}")
    result, cached = probe_kvm_cached(qemu)
    note = " (cached this boot)" if cached else ""
    if result.ok:
        return AccelDecision("kvm", f"kvm: {result.detail}{note}")
    return AccelDecision("tcg", f"tcg: /dev/kvm is present but KVM is broken here: {result.detail}{note}")
