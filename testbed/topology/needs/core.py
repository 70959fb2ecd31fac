"""Needs and roles: what a test needs, the devices that play its roles, and the facts the
suites' needs are written with."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from ..layout import Layout, topology_layout
from ..model import Endpoint, EndpointKind, IommuMode, IommuType, Topology
from ..oracle import Verdict, topology_verdicts
from ..outcome import Outcome, expected_outcome
from ..reliance import Reliance, unmet


class Roles(Mapping[str, str]):
    """Role name -> device id; `roles.provider` reads like the test's prose."""

    def __init__(self, bound: Mapping[str, str]) -> None:
        self._bound = dict(bound)

    def __getitem__(self, role: str) -> str:
        return self._bound[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._bound)

    def __len__(self) -> int:
        return len(self._bound)

    def __getattr__(self, role: str) -> str:
        try:
            return self._bound[role]
        except KeyError:
            raise AttributeError(f"no role '{role}' (bound: {', '.join(self._bound) or 'none'})") from None

    def __repr__(self) -> str:
        return f"Roles({self._bound})"


@dataclass(frozen=True)
class Need:
    text: str  # what the test needs, as the end of the run says it when a topology lacks it
    find: Callable[[Topology, Layout], Mapping[str, str] | None]
    relies: tuple[Reliance, ...] = ()  # what the test relies on once bound (reliance.py)

    def found(self, topology: Topology) -> tuple[Roles | None, list[str]]:
        """The roles `find` picked, and the reliances they break (a testbed bug when any)."""
        found = self.find(topology, _layout(topology))
        if found is None:
            return None, []
        return Roles(found), unmet(self.relies, topology, found)

    def bind(self, topology: Topology) -> Roles | None:
        """The roles, or None where the topology lacks them. Roles that break a reliance are
        not used: the test would be a false red (`why_not` says it)."""
        roles, broken = self.found(topology)
        return None if broken else roles

    def why_not(self, topology: Topology) -> str:
        roles, broken = self.found(topology)
        if not broken:
            return self.text
        return f"{self.text}; the testbed picked {dict(roles or {})}, which break: {'; '.join(broken)} (a testbed bug)"


_layout = topology_layout


_verdicts = topology_verdicts


# -- facts about devices -------------------------------------------------------------------


def _plugged(topo: Topology, *kinds: EndpointKind) -> list[Endpoint]:
    return [ep for ep in topo.endpoints if ep.plugged and (not kinds or ep.kind in kinds)]


def _cmb_nvme(topo: Topology) -> list[Endpoint]:
    return [ep for ep in _plugged(topo, EndpointKind.NVME) if ep.cmb > 0]


def _translating(topo: Topology) -> bool:
    return topo.iommu.type is not IommuType.NONE and topo.iommu.mode is IommuMode.TRANSLATED


def _pairs(topo: Topology, outcome: Outcome) -> list[Verdict]:
    """NVMe -> other NVMe pairs (both plugged) whose P2P the oracle expects to end so."""
    nvme = {ep.id for ep in _plugged(topo, EndpointKind.NVME)}
    return [
        v
        for v in _verdicts(topo)
        if v.provider in nvme and v.client in nvme and v.provider != v.client and expected_outcome(topo, v) is outcome
    ]


# -- the needs the suites declare ------------------------------------------------------------


def _any(topo: Topology, layout: Layout) -> dict[str, str]:
    return {}


ANY = Need("nothing (any topology)", _any)


def written_for(name: str, why: str) -> Need:
    """A test about one shipped topology's particulars (its assertions name that file's facts)."""
    return Need(f"the shipped topology '{name}' ({why})", lambda t, layout: {} if t.name == name else None)
