"""KUnit suites built into the selftest kernels: listed once per kernel, run at boot in a topology.

The selftest config sets build the dma-buf and IOMMU page-table suites in with
KUNIT_DEFAULT_ENABLED=n, so they run only on a boot whose command line says kunit.enable=1.
Which cases the kernel has is asked of the kernel itself (kunit.action=list, a boot without a
root filesystem that panics and exits at once), cached per bzImage, so pytest can collect one
item per case before anything runs.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import TestbedError
from ..hashing import hash_bytes, short
from ..logs.known import KnownSplat, find_known, kernel_release
from ..logs.ktap import KtapCase, KtapReport, parse_ktap
from ..logs.splat import Splat, scan_lines, strip_prefix
from ..logs.windows import outside_windows
from ..paths import cache_dir

log = logging.getLogger(__name__)

ENABLE = ("kunit.enable=1", "kunit.autorun=1")  # allnoconfig leaves KUNIT_AUTORUN_ENABLED off too
# the selftest VM's command line: KUnit at boot, and /dev/kmsg without its rate limit for the
# relayed case lines of the selftest programs
SELFTEST_APPEND = (*ENABLE, "printk.devkmsg=on")
LIST_TIMEOUT_S = 180.0
_CASE_RE = re.compile(r"^([\w-]+)\.([\w-]+)$")


class KunitError(TestbedError):
    pass


def list_cases(bzimage: Path) -> tuple[str, ...]:
    """`suite.case` for every KUnit case built into bzImage (empty: KUnit not built in)."""
    key = short(hash_bytes(bzimage.read_bytes()))
    cached = cache_dir("kunit") / f"{key}.json"
    if cached.is_file():
        return tuple(json.loads(cached.read_text()))
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise KunitError("qemu-system-x86_64 not installed (`make deps` installs it)")
    with tempfile.TemporaryDirectory(prefix="testbed-kunit-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [
            qemu,
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            f"file:{console}",
            "-kernel",
            str(bzimage),
            "-append",
            "console=ttyS0 kunit.enable=1 kunit.action=list panic=-1 root=/dev/testbed-none",
        ]
        try:
            subprocess.run(argv, timeout=LIST_TIMEOUT_S, capture_output=True, check=False)
        except subprocess.TimeoutExpired:
            raise KunitError(
                f"listing KUnit cases of {bzimage} did not finish in {LIST_TIMEOUT_S:.0f}s (console: {console})"
            ) from None
        lines = console.read_text(errors="replace").splitlines()
    if not any("Linux version" in line for line in lines[:200]):
        raise KunitError(f"{bzimage} printed nothing when booted to list its KUnit cases")
    cases = parse_list(lines)
    cached.write_text(json.dumps(cases) + "\n")
    return cases


def parse_list(console: list[str]) -> tuple[str, ...]:
    """The `suite.case` lines kunit.action=list prints after its KTAP version line."""
    texts = [strip_prefix(line) for line in console]
    start = next((i for i, t in enumerate(texts) if t == "KTAP version 1"), len(texts))
    return tuple(t for t in texts[start:] if _CASE_RE.match(t))


@dataclass(frozen=True)
class KunitRun:
    console: Path
    report: KtapReport | None
    cases: dict[str, KtapCase]  # "suite.case"
    splats: tuple[tuple[Splat, str | None, KnownSplat | None], ...]  # (splat, case, known entry)

    def new_splats(self, case: str | None = None) -> list[Splat]:
        return [s for s, c, k in self.splats if k is None and (case is None or c == case)]


def judge_boot(console: Path, known: tuple[KnownSplat, ...] = ()) -> KunitRun:
    """The KUnit results a boot printed before any test window opened, and the splats in them."""
    lines = console.read_text(errors="replace").splitlines()
    windows = outside_windows(lines)
    boot_end = windows[0][1] if windows else len(lines)
    boot = lines[:boot_end]
    reports = [r for r in parse_ktap(boot) if r.cases]
    report = reports[0] if reports else None
    cases: dict[str, KtapCase] = {}
    if report is not None:
        for suite in report.cases:
            for case in suite.subtests:
                cases[f"{suite.name}.{case.name}"] = case
    release = kernel_release(lines)
    charged = []
    for splat in scan_lines(boot):
        owner = next((name for name, c in cases.items() if c.first_line <= splat.first_line <= c.last_line), None)
        charged.append((splat, owner, find_known(splat, release, known)))
    return KunitRun(console, report, cases, tuple(charged))
