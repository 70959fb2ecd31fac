"""Which kernel to boot or build, asked one way everywhere: the same options for `testbed
kernel`, `boot`, `run`, `kselftest`, `ab` and pytest, read into one KernelRequest.

    --kernel PATH        a bzImage to boot as it is, or a kernel tree to build
    --ksrc TREE          a kernel tree to build (the same as --kernel TREE)
    --patches SERIES     an mbox or a directory of *.patch files, applied in a worktree
    --kernel-config SET  the config set (kernel-configs/; the suites take default, debug or
                         debug-full: the debug build booted with kmemleak on)
    --no-base-fixes      leave out kernel-configs/base-fixes (the unpatched base kernel)
    --coverage-scope F   the files a coverage set profiles (default: coverage-scope.yaml)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .configsets import KERNEL_CONFIGS

if TYPE_CHECKING:
    from .artifact import KernelArtifact

# the sets the VM suites boot; each has a selftest companion for the tree's own tests
SUITE_SETS = tuple(s for s in KERNEL_CONFIGS if not s.endswith("selftest"))


def selftest_set(config_set: str) -> str:
    """The config set the tree's own tests boot for a suite set (default -> selftest)."""
    return "selftest" if config_set == "default" else f"{config_set}-selftest"


@dataclass(frozen=True)
class KernelRequest:
    config_set: str = "default"
    ksrc: Path | None = None  # a tree to build
    patches: Path | None = None
    bzimage: Path | None = None  # booted as it is (nothing built)
    base_fixes: bool | None = None  # None: TESTBED_BASE_FIXES decides
    coverage_scope: Path | None = None  # a coverage set's scope; None: coverage-scope.yaml

    def __post_init__(self) -> None:
        if self.config_set not in KERNEL_CONFIGS:
            raise ConfigError(f"unknown kernel config set {self.config_set!r}; allowed: {', '.join(KERNEL_CONFIGS)}")
        if self.bzimage is not None and (self.patches is not None or self.ksrc is not None):
            raise ConfigError(
                f"--kernel {self.bzimage} is a built kernel: --patches and --ksrc need a tree to build, not a bzImage"
            )
        if self.patches is not None and not self.patches.exists():
            raise ConfigError(f"--patches {self.patches}: no such file or directory")
        if self.coverage_scope is not None and not self.coverage_scope.is_file():
            raise ConfigError(f"--coverage-scope {self.coverage_scope}: no such file")

    def with_config(self, config_set: str) -> KernelRequest:
        return KernelRequest(config_set, self.ksrc, self.patches, self.bzimage, self.base_fixes, self.coverage_scope)

    def bzimage_path(self, progress: Callable[[str], None] = print) -> Path:
        """The bzImage to boot: the given one, or the cached or freshly built one."""
        if self.bzimage is not None:
            return self.bzimage
        return self.artifact(progress).bzimage

    def artifact(self, progress: Callable[[str], None] = print) -> KernelArtifact:
        """The cached or freshly built kernel (not for a given bzImage)."""
        from .build import ensure_kernel

        return ensure_kernel(self, progress)

    def describe(self) -> str:
        if self.bzimage is not None:
            return f"bzImage {self.bzimage}"
        what = f"{self.config_set} set, " + (f"tree {self.ksrc}" if self.ksrc else "Debian's linux-source")
        return (
            what
            + (f" + {self.patches}" if self.patches else "")
            + (", no base fixes" if self.base_fixes is False else "")
            + (f", coverage scope {self.coverage_scope}" if self.coverage_scope else "")
        )


def add_options(add: Callable[..., Any], config_sets: tuple[str, ...] = KERNEL_CONFIGS) -> None:
    """Add the kernel options with `add` (argparse's add_argument or pytest's addoption)."""
    add(
        "--kernel",
        type=Path,
        metavar="PATH",
        help="a bzImage to boot as it is, or a kernel tree to build (default: Debian's linux-source)",
    )
    add("--ksrc", type=Path, metavar="TREE", help="a kernel tree to build, never modified (same as --kernel TREE)")
    add("--patches", type=Path, metavar="SERIES", help="an mbox or a directory of *.patch files, applied in a worktree")
    add(
        "--kernel-config",
        default="default",
        choices=config_sets,
        help="config set of kernel-configs/ (default: %(default)s; debug: KASAN, lockdep, ... booted with "
        "kmemleak off; debug-full: the same kernel with kmemleak on)",
    )
    add(
        "--no-base-fixes",
        action="store_true",
        help="leave out kernel-configs/base-fixes (the unpatched base kernel; same as TESTBED_BASE_FIXES=0)",
    )
    add(
        "--coverage-scope",
        type=Path,
        metavar="FILE",
        help="the files and functions a coverage build profiles and reports (default: coverage-scope.yaml; "
        "the format is in that file)",
    )


def from_options(get: Callable[[str], Any]) -> KernelRequest:
    """The request the options of add_options() ask for; `get(dest)` reads one of them."""
    kernel: Path | None = get("kernel")
    ksrc: Path | None = get("ksrc")
    bzimage = None
    if kernel is not None:
        if kernel.is_file():
            bzimage = kernel.resolve()
        elif kernel.is_dir():
            if ksrc is not None and ksrc.resolve() != kernel.resolve():
                raise ConfigError(f"--kernel {kernel} and --ksrc {ksrc} name two trees: give one")
            ksrc = kernel
        else:
            raise ConfigError(f"--kernel {kernel}: no such bzImage or kernel tree")
    return KernelRequest(
        config_set=get("kernel_config"),
        ksrc=ksrc,
        patches=get("patches"),
        bzimage=bzimage,
        base_fixes=False if get("no_base_fixes") else None,
        coverage_scope=get("coverage_scope"),
    )
