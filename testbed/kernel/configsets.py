"""Named config sets: which fragments of kernel-configs/ are merged, in order (later wins); and
boot profiles: names that boot another set's build with detectors switched at boot."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..paths import DATA_ROOT, KERNEL_CONFIGS_DIR
from .kconfig import MergedConfig, load_fragment, merge

# Every set carries what the tree's own selftests and KUnit suites need (selftest.config: the
# iommufd mock, VFIO's container, THP, KUnit built in but off at boot), so one build serves both
# the VM suites and the kselftest VMs: a fresh machine builds one kernel, not two (the selftest
# options reach nearly every object, so a second set could not reuse the first's objects).
CONFIG_SETS: dict[str, tuple[str, ...]] = {
    "default": ("base", "p2p", "selftest"),
    "debug": ("base", "p2p", "debug", "selftest"),
    # gcov for the coverage scope's files only (coverage-scope.yaml; build.py adds the profiling)
    "coverage": ("base", "p2p", "selftest", "coverage"),
}
# the sets whose builds profile the coverage scope's files
COVERAGE_SETS = ("coverage",)

# --kernel-config names that boot a config set's build with kernel arguments: one build, two
# ways to boot it. `debug` is the working loop: kmemleak switched off at boot (of the debug
# kernel's 10.9 s from boot to init, 5.6 are kmemleak's; bench/debug-options), and with it
# the leak scan at the end of every VM. `debug-full` switches nothing off (the nightly).
# The *-selftest names (what the kselftest VMs ask for) boot the same builds as their sets.
BOOT_PROFILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "debug": ("debug", ("kmemleak=off",)),
    "debug-full": ("debug", ()),
    "selftest": ("default", ()),
    "debug-selftest": ("debug", ("kmemleak=off",)),
    "debug-full-selftest": ("debug", ()),
    "coverage-selftest": ("coverage", ()),
}
# every name --kernel-config takes
KERNEL_CONFIGS = tuple(dict.fromkeys([*CONFIG_SETS, *BOOT_PROFILES]))


def build_set(name: str) -> str:
    """The config set whose build a --kernel-config name boots."""
    return BOOT_PROFILES.get(name, (name, ()))[0]


def boot_args(name: str) -> tuple[str, ...]:
    """The kernel arguments a --kernel-config name boots its build with."""
    return BOOT_PROFILES.get(name, (name, ()))[1]


def fragment_paths(config_set: str, configs_dir: Path = KERNEL_CONFIGS_DIR) -> tuple[Path, ...]:
    try:
        names = CONFIG_SETS[config_set]
    except KeyError:
        allowed = ", ".join(sorted(CONFIG_SETS))
        raise ConfigError(f"unknown kernel config set {config_set!r}; allowed: {allowed}") from None
    return tuple(configs_dir / f"{name}.config" for name in names)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(DATA_ROOT))  # "kernel-configs/p2p.config:8" reads better
    except ValueError:
        return str(path)


def load_config_set(config_set: str, configs_dir: Path = KERNEL_CONFIGS_DIR) -> MergedConfig:
    paths = fragment_paths(config_set, configs_dir)
    return merge([load_fragment(p, _display(p)) for p in paths])
