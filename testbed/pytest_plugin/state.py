"""The plugin's state for one session (as pytest's junitxml keeps LogXML), in plain data, so
that an xdist worker can hand its part to the controller (`export` / `absorb`) and the end of
the run reads one state whatever ran where."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
        from the reports themselves)."""
        return {
            "verdicts": [asdict(r) for r in (self.verdicts.rows if self.verdicts else [])],
            "census": [asdict(r) for r in (self.census.rows if self.census else [])],
            "known_seen": [asdict(k) for k in self.known_seen],
            "unchecked": self.unchecked,
            "splats": [asdict(s) for s in self.record.splats],
            "boots": [asdict(b) for b in self.record.boots],
            "vms": self.record.vms,
            "strays": [asdict(s) for s in self.strays],
            "boot_seconds": self.boot_seconds,
            "fresh_waits": [asdict(w) for w in self.fresh_waits],
            "boot_retries": self.boot_retries,
            "kselftest_lines": self.kselftest_lines,
            "kselftest_noted": self.kselftest_noted,
            "not_applicable": [[t, n, why] for (t, n), why in self.not_applicable.items()],
            "vm_tests_declared": self.vm_tests_declared,
        }

    def absorb(self, part: dict[str, Any] | None) -> None:
        """A worker's export, merged into this (the controller's) state."""
        if not part:
            return
        if part["verdicts"]:
            self.verdict_table().rows.extend(Row(**r) for r in part["verdicts"])
        if part["census"]:
            self.census_table().rows.extend(CensusRow(**r) for r in part["census"])
        self.known_seen += [KnownSeen(**k) for k in part["known_seen"]]
        self.unchecked += part["unchecked"]
        self.record.unchecked += part["unchecked"]
        self.record.splats += [SplatRecord(**s) for s in part["splats"]]
        self.record.boots += [BootRecord(**b) for b in part["boots"]]
        self.record.vms.update(part["vms"])
        self.strays += [Stray(**s) for s in part["strays"]]
        self.boot_seconds += [(name, float(s)) for name, s in part["boot_seconds"]]
        self.fresh_waits += [FreshWait(**w) for w in part["fresh_waits"]]
        self.boot_retries += [str(why) for why in part["boot_retries"]]
        self.kselftest_lines += [line for line in part["kselftest_lines"] if line not in self.kselftest_lines]
        self.kselftest_noted += [(str(a), str(b), str(c)) for a, b, c in part["kselftest_noted"]]
        self.not_applicable.update({(str(t), str(n)): str(why) for t, n, why in part["not_applicable"]})
        self.vm_tests_declared = self.vm_tests_declared or bool(part["vm_tests_declared"])


STATE_KEY = pytest.StashKey[TestbedState]()


def state_of(config: pytest.Config) -> TestbedState:
    return config.stash[STATE_KEY]
