"""The verdict table: pair, expected, observed, reason — printed at the end and kept as TSV."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..topology.oracle import Verdict
from ..topology.outcome import Outcome


class TransferResult(Protocol):
    """One transfer of a P2P test (testbed/guestvm/p2p.Transfer): its direction and outcome."""

    direction: str
    outcome: Outcome


@dataclass(frozen=True)
class Row:
    topology: str
    provider: str
    client: str
    direction: str
    map_type: str
    expected: str
    observed: str
    reason: str

    @property
    def agrees(self) -> bool:
        return self.expected == self.observed


@dataclass
class VerdictTable:
    rows: list[Row] = field(default_factory=list)

    def add(self, topology: str, verdict: Verdict, expected: Outcome, transfer: TransferResult) -> None:
        self.rows.append(
            Row(
                topology,
                verdict.provider,
                verdict.client,
                transfer.direction,
                verdict.map_type.value,
                expected.value,
                transfer.outcome.value,
                verdict.divergence or verdict.reason,
            )
        )

    def lines(self) -> list[str]:
        # columns as wide as their longest entry (a user's file or an IOMMU variant has a long name)
        tw = max([20, *(len(r.topology) for r in self.rows)])
        pw = max([16, *(len(r.provider) + 2 + len(r.client) for r in self.rows)])
        out = [f"{'topology':{tw}} {'pair':{pw}} {'direction':12} {'map type':17} {'expected':12} observed"]
        for r in self.rows:
            mark = "" if r.agrees else "   <-- DISAGREES"
            out.append(
                f"{r.topology:{tw}} {r.provider + '->' + r.client:{pw}} {r.direction:12} "
                f"{r.map_type:17} {r.expected:12} {r.observed}{mark}"
            )
        return out

    def write_tsv(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "topology\tprovider\tclient\tdirection\tmap_type\texpected\tobserved\treason\n"
        path.write_text(
            header
            + "".join(
                f"{r.topology}\t{r.provider}\t{r.client}\t{r.direction}\t{r.map_type}\t{r.expected}\t"
                f"{r.observed}\t{r.reason}\n"
                for r in self.rows
            )
        )


@dataclass(frozen=True)
class CensusRow:
    topology: str
    part: str  # "map" (census) or "branch" (a VFIO dma-buf import)
    provider: str
    client: str
    kernel: str  # what the kernel answered, e.g. "BUS_ADDR 4" or "THRU_HOST_BRIDGE/iova"
    expected: str  # what `testbed explain` derives
    reason: str

    @property
    def agrees(self) -> bool:
        return self.kernel == self.expected


@dataclass
class CensusTable:
    """The kernel-side probe's answers per pair against the oracle's, for the end of the run."""

    rows: list[CensusRow] = field(default_factory=list)

    def add(self, row: CensusRow) -> None:
        self.rows.append(row)

    def summary(self) -> str:
        topologies = len({r.topology for r in self.rows})
        wrong = sum(not r.agrees for r in self.rows)
        return f"{len(self.rows)} kernel answers on {topologies} topologies, {wrong} disagree with testbed explain"

    def disagreements(self) -> list[str]:
        return [
            f"{r.topology:20} {r.part:6} {r.provider + '->' + r.client:16} kernel {r.kernel:24} "
            f"explain {r.expected}   ({r.reason})"
            for r in self.rows
            if not r.agrees
        ]

    def write_tsv(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "topology\tpart\tprovider\tclient\tkernel\texpected\tagrees\treason\n"
            + "".join(
                f"{r.topology}\t{r.part}\t{r.provider}\t{r.client}\t{r.kernel}\t{r.expected}\t"
                f"{'yes' if r.agrees else 'NO'}\t{r.reason}\n"
                for r in self.rows
            )
        )
