"""The plugin's state for one session (as pytest's junitxml keeps LogXML), in plain data, so
that an xdist worker can hand its part to the controller (`export` / `absorb`) and the end of
the run reads one state whatever ran where."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from ..kernel.request import KernelRequest
from ..logs.known import KnownSplat
from ..logs.splat import Splat
from ..runs.record import BootRecord, RunRecord, SplatRecord
from .coverage import CoverageCollector
from .pool import FreshWait, VmPool
from .report import CensusRow, CensusTable, Row, VerdictTable


@dataclass(frozen=True)
class KnownSeen:
    """A splat known-splats.yaml knows, where it was seen."""

    where: str  # test node id, or "outside any test in <vm>"
    console: str
    first_line: int
    kind: str
    signature: str
    entry: str  # file:line of the entry
    entry_kind: str
    why: str

    @classmethod
    def of(cls, where: str, console: Path, splat: Splat, entry: KnownSplat) -> KnownSeen:
        return cls(
            where, str(console), splat.first_line, str(splat.kind), splat.signature, entry.where, entry.kind, entry.why
        )


@dataclass(frozen=True)
class Stray:
    """A splat outside every test window (boot, between tests, shutdown)."""

    vm: str
    console: str
    first_line: int
    last_line: int
    signature: str
    known: str | None  # the known-splats entry, if any
    excerpt: str = ""  # the report's first lines (a leak's backtrace, an oops), for the summary


@dataclass
class TestbedState:
    __test__ = False  # not a pytest class

    results: Path  # results/pytest/<run>
    known: tuple[KnownSplat, ...]  # known-splats.yaml
    kernel: KernelRequest = field(default_factory=KernelRequest)  # --kernel, --ksrc, --patches, ...
    pool: VmPool | None = None  # made by the first VM test (in this process)
    verdicts: VerdictTable | None = None
    census: CensusTable | None = None
    not_here: set[str] = field(default_factory=set)  # tests that do not apply to the chosen topologies
    # (topology, test) -> the need the topology lacks, for the end of the run
    not_applicable: dict[tuple[str, str], str] = field(default_factory=dict)
    vm_tests_declared: bool = False  # the selection had VM tests before the topologies were applied
    vm_tests_run: int = 0  # VM tests that got past setup (counted where the reports arrive)
    known_seen: list[KnownSeen] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # tests that ran in part without lockdep
    record: RunRecord = field(default_factory=RunRecord)  # run.json, for testbed ab
    strays: list[Stray] = field(default_factory=list)
    boot_seconds: list[tuple[str, float]] = field(default_factory=list)
    fresh_waits: list[FreshWait] = field(default_factory=list)  # destructive tests' waits for their VM
    boot_retries: list[str] = field(default_factory=list)  # boots that stalled and were tried again
    leaks_unchecked: list[str] = field(default_factory=list)  # VMs shut down without a kmemleak scan: why
    kselftest_lines: list[str] = field(default_factory=list)  # the tree's own tests' end-of-run notes
    kselftest_noted: list[tuple[str, str, str]] = field(default_factory=list)  # (test, what, reason)
    coverage: CoverageCollector | None = None  # --coverage: this process's gcov snapshots
    coverage_lines: list[str] = field(default_factory=list)  # the end of the run's coverage table

    def verdict_table(self) -> VerdictTable:
        self.verdicts = self.verdicts or VerdictTable()
        return self.verdicts

    def census_table(self) -> CensusTable:
        self.census = self.census or CensusTable()
        return self.census

    # -- xdist ----------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """What a worker saw, as JSON-able data (outcomes and durations the controller has
        from the reports themselves): every part of SHARED."""
        return {part.name: part.export(self) for part in SHARED}

    def absorb(self, exported: dict[str, Any] | None) -> None:
        """A worker's export, merged into this (the controller's) state, part by part."""
        if not exported:  # a worker that crashed before its export
            return
        for part in SHARED:
            part.absorb(self, exported[part.name])


def _plain(item: Any) -> Any:
    return asdict(item) if is_dataclass(item) and not isinstance(item, type) else item


@dataclass(frozen=True)
class Shared:
    """One part of the state a worker hands to the controller: where it lives, how an item is
    rebuilt from JSON, and how the controller merges it (extend a list, add the lines it lacks,
    update a dict, or any of the flags)."""

    name: str
    where: Callable[[TestbedState], Any]  # the list or dict
    item: Callable[[Any], Any] = lambda value: value
    merge: str = "extend"  # "extend" | "unique" | "update" | "any"
    also: Callable[[TestbedState], Any] | None = None  # a second list that gets the same items

    def export(self, state: TestbedState) -> Any:
        held = self.where(state)
        if self.merge == "update":
            return [[*key, value] if isinstance(key, tuple) else [key, value] for key, value in held.items()]
        if self.merge == "any":
            return bool(held)
        return [_plain(item) for item in held]

    def absorb(self, state: TestbedState, value: Any) -> None:
        if self.merge == "any":
            setattr(state, self.name, bool(getattr(state, self.name)) or bool(value))
            return
        if not value:
            return
        if self.merge == "update":
            self.where(state).update((tuple(row[:-1]) if len(row) > 2 else row[0], self.item(row[-1])) for row in value)
            return
        items = [self.item(v) for v in value]
        held = self.where(state)
        held += [i for i in items if i not in held] if self.merge == "unique" else items
        if self.also is not None:
            self.also(state).extend(items)


SHARED = (
    Shared("verdicts", lambda s: s.verdict_table().rows, lambda r: Row(**r)),
    Shared("census", lambda s: s.census_table().rows, lambda r: CensusRow(**r)),
    Shared("known_seen", lambda s: s.known_seen, lambda k: KnownSeen(**k)),
    Shared("unchecked", lambda s: s.unchecked, str, also=lambda s: s.record.unchecked),
    Shared("splats", lambda s: s.record.splats, lambda r: SplatRecord(**r)),
    Shared("boots", lambda s: s.record.boots, lambda b: BootRecord(**b)),
    Shared("vms", lambda s: s.record.vms, str, merge="update"),
    Shared("strays", lambda s: s.strays, lambda r: Stray(**r)),
    Shared("boot_seconds", lambda s: s.boot_seconds, lambda pair: (str(pair[0]), float(pair[1]))),
    Shared("fresh_waits", lambda s: s.fresh_waits, lambda w: FreshWait(**w)),
    Shared("boot_retries", lambda s: s.boot_retries, str),
    Shared("leaks_unchecked", lambda s: s.leaks_unchecked, str),
    Shared("kselftest_lines", lambda s: s.kselftest_lines, str, merge="unique"),
    Shared("kselftest_noted", lambda s: s.kselftest_noted, lambda n: (str(n[0]), str(n[1]), str(n[2]))),
    Shared("not_applicable", lambda s: s.not_applicable, str, merge="update"),
    Shared("vm_tests_declared", lambda s: s.vm_tests_declared, merge="any"),
)


STATE_KEY = pytest.StashKey[TestbedState]()


def state_of(config: pytest.Config) -> TestbedState:
    return config.stash[STATE_KEY]
