"""Matrix cells: every shipped topology under its own IOMMU and, where the topology allows it,
under the other IOMMU modes (`<name>.iommu-<mode>`, testbed/topology/load.py) x the suites'
kernel configs x accelerator. A cell is one `pytest tests/vm --matrix --topology T` run."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import ConfigError
from ..topology import Topology, load_topology, shipped_names
from ..topology.model import IommuMode
from ..topology.variants import IOMMU_VARIANTS, iommu_modes

# the kernel configs the nightly runs the VM suites on (selftest sets follow them): every
# detector there, debug-full (kmemleak on); `debug` is the same build for the working loop
CONFIGS = ("default", "debug-full")
ACCELS = ("kvm", "tcg")
# the host's QEMU (7.2 on bookworm, 8.2 on Ubuntu 24.04) and the testbed's pinned build, which
# routes P2P inside switches and gives switch ports ACS (testbed/qemu)
QEMUS = ("distro", "built")
DEFAULT_ESTIMATE_S = 300.0  # a cell no run has measured yet


@dataclass(frozen=True)
class Preset:
    """A named choice of cells: what one trigger of the CI workflow runs."""

    topologies: tuple[str, ...] | None  # None: every shipped topology
    configs: tuple[str, ...]
    iommu_variants: bool
    # (suite marker, config) runs on a kernel without kernel-configs/base-fixes, each test on
    # its own topologies: a base fix changes locking and could hide a deadlock a series adds
    without_base_fixes: tuple[tuple[str, str], ...] = ()
    qemus: tuple[str, ...] = ("distro",)


PRESETS = {
    # schedule and manual runs: every topology under every IOMMU mode it allows, both configs
    "nightly": Preset(None, CONFIGS, True, (("hotunplug", "debug-full"),), QEMUS),
    # a push or a pull request: minutes, not hours; a switch topology and one through an IOMMU
    "fast": Preset(("two-switch", "p2pdma-thru-iommu"), ("default",), False),
}


EACH_OWN = "*"  # a cell's topology: every test on its own topologies (no --topology)
OPTIONAL = ("suite", "base_fixes", "qemu")  # cell fields with a default (plans written before them lack them)


@dataclass(frozen=True)
class Cell:
    id: str  # "<topology>-<config>-<accel>", a job name and an artifact name
    topology: str  # or EACH_OWN
    config: str
    accel: str
    iommu: str  # "intel/translated", "none", ...: the topology's, for the table
    estimate_s: float  # measured in earlier runs, else DEFAULT_ESTIMATE_S
    suite: str = ""  # a pytest -m marker expression; "": every VM suite
    base_fixes: bool = True  # False: the kernel built without kernel-configs/base-fixes
    qemu: str = "distro"  # distro | built: the QEMU axis

    def pytest_args(self, accel: str | None = None) -> list[str]:
        """`accel`: what to pass instead of the cell's own (`testbed matrix run`: auto)."""
        where = [] if self.topology == EACH_OWN else ["--matrix", "--topology", self.topology]
        return [
            "tests/vm",
            *where,
            "--kernel-config",
            self.config,
            "--accel",
            accel or self.accel,
            *(["-m", self.suite] if self.suite else []),
            *([] if self.base_fixes else ["--no-base-fixes"]),
            *([] if self.qemu == "distro" else ["--qemu", self.qemu]),
        ]

    def as_json(self) -> dict[str, object]:
        return asdict(self) | {"pytest_args": self.pytest_args()}


def cell_from_json(doc: object, where: str) -> Cell:
    """A cell as `as_json` wrote it (pytest_args are derived, so ignored); `where` names the
    source in errors."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a cell is a JSON object, not {type(doc).__name__}")
    try:
        values = {f.name: doc[f.name] for f in fields(Cell) if f.name not in OPTIONAL}
    except KeyError as exc:
        raise ConfigError(f"{where}: cell {doc.get('id', '?')!r} lacks {exc.args[0]!r}") from None
    estimate = values.pop("estimate_s")
    suite, base_fixes, qemu = doc.get("suite", ""), doc.get("base_fixes", True), doc.get("qemu", "distro")
    bad = sorted(k for k, v in values.items() if not (isinstance(v, str) and v))
    bad += [] if isinstance(suite, str) else ["suite"]
    bad += [] if qemu in QEMUS else ["qemu"]
    bad += [] if isinstance(base_fixes, bool) else ["base_fixes"]
    if bad or isinstance(estimate, bool) or not isinstance(estimate, int | float):
        raise ConfigError(f"{where}: cell {values['id']!r}: malformed {', '.join(bad) or 'estimate_s'}")
    return Cell(**values, estimate_s=float(estimate), suite=suite, base_fixes=base_fixes, qemu=qemu)


def measured(run_files: Iterable[Path]) -> dict[tuple[str, str], float]:
    """(topology, config) -> seconds, from earlier runs' run.json: the tests' durations summed
    per run, the median over runs (a rerun of one failing cell does not skew it)."""
    per_run: dict[tuple[str, str], list[float]] = {}
    names = sorted(shipped_names(), key=len, reverse=True)  # once, not per test
    for path in run_files:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        # the --kernel-config name a boot used; runs before it was recorded: its build's set
        configs = {
            str(b.get("kernel_config") or b.get("kernel", {}).get("config_set") or "default")
            for b in doc.get("boots", [])
        }
        config = configs.pop() if len(configs) == 1 else None
        if config is None:
            continue
        totals: dict[str, float] = {}
        for nodeid, seconds in doc.get("durations", {}).items():
            topology = _topology_of(nodeid, names)
            if topology is not None:
                totals[topology] = totals.get(topology, 0.0) + float(seconds)
        for topology, seconds in totals.items():
            per_run.setdefault((topology, config), []).append(seconds)
    return {key: statistics.median(values) for key, values in per_run.items()}


def _topology_of(nodeid: str, names: list[str] | None = None) -> str | None:
    """The topology a VM test ran on: the longest shipped name its parameter id starts with
    ("[two-switch-iommu-pt-...]"), with its IOMMU variant ("two-switch.iommu-intel").
    `names`: the shipped names, longest first."""
    if "[" not in nodeid:
        return None
    param = nodeid.rsplit("[", 1)[1].rstrip("]")
    names = names if names is not None else sorted(shipped_names(), key=len, reverse=True)
    for name in names:
        variant = re.match(
            rf"{re.escape(name)}(\.iommu-(?:{'|'.join(sorted(IOMMU_VARIANTS, key=len, reverse=True))}))?(?:-|$)", param
        )
        if variant:
            return name + (variant.group(1) or "")
    return None


def cells(
    topologies: Iterable[str] | None = None,
    configs: Iterable[str] = CONFIGS,
    accels: Iterable[str] = ("kvm",),
    durations: dict[tuple[str, str], float] | None = None,
    iommu_variants: bool = True,
    qemus: Iterable[str] = ("distro",),
) -> list[Cell]:
    """The cells; a built-QEMU cell's id ends in -qemu-built. On the testbed's QEMU only where it
    changes what happens: switches behind a translating IOMMU (P2P routed inside the switch
    instead of faulting) and switch ACS, which only it has (so such a topology runs only there);
    on the first config only, strict IOMMU flushes only (the emulation is what differs, not the
    kernel). The rest would repeat distro cells, and GitHub runs at most 256 jobs of a matrix."""
    durations = durations or {}
    out = []
    for name in topologies or shipped_names():
        base = load_topology(name)
        variants = [base] + ([load_topology(f"{name}.iommu-{m}") for m in iommu_modes(base)] if iommu_variants else [])
        for topo in variants:
            iommu = topo.iommu.type.value + (f"/{topo.iommu.mode.value}" if topo.iommu.enabled else "")
            needs_built = any(sw.acs for sw in topo.switches)
            for qemu in qemus:
                if qemu == "distro" and needs_built:
                    continue
                extra = qemu != "distro" and not needs_built  # a second QEMU for a distro topology
                if extra and not (routing_matters(topo) and topo.iommu.strict):
                    continue
                for config in list(configs)[:1] if extra else configs:
                    for accel in accels:
                        estimate = durations.get((topo.name, config), DEFAULT_ESTIMATE_S)
                        cell_id = f"{topo.name}-{config}-{accel}" + ("" if qemu == "distro" else f"-qemu-{qemu}")
                        out.append(Cell(cell_id, topo.name, config, accel, iommu, round(estimate, 1), qemu=qemu))
    return out


def routing_matters(topo: Topology) -> bool:
    """Whether routing inside switches changes this topology's outcomes: a switch behind a
    translating IOMMU (its BUS_ADDR pairs land instead of faulting)."""
    return bool(topo.switches) and topo.iommu.enabled and topo.iommu.mode is IommuMode.TRANSLATED


def without_base_fixes_cells(runs: Iterable[tuple[str, str]], accels: Iterable[str] = ("kvm",)) -> list[Cell]:
    """One cell per (suite, config, accel): the suite on each test's own topologies, on a kernel
    built without the base fixes."""
    return [
        Cell(
            f"{suite}-{config}-no-base-fixes-{accel}",
            EACH_OWN,
            config,
            accel,
            "each test's",
            DEFAULT_ESTIMATE_S,
            suite=suite,
            base_fixes=False,
        )
        for suite, config in runs
        for accel in accels
    ]
