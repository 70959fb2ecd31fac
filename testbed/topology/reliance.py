"""What a test relies on once its roles are bound, said as data and checked against the oracle.

A Need's `find` is code that picks devices; its `relies` say, independently, what must then be
true of them: the client is a block device, the pair's bytes land, the exporter is alone below
its port. `Need.bind` refuses roles that break one (a testbed bug, never a red test for the
kernel), and a unit test walks every VM test's need against every shipped topology and its
IOMMU variants, so a find that picks the edu as a block client fails there, not in a VM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .layout import topology_layout
from .model import EndpointKind, IommuMode, IommuType, MapType, Topology
from .oracle import topology_verdicts, verdict
from .outcome import Outcome, expected_outcome
from .slots import alone_below_port as _alone
from .slots import hot_pluggable as _pluggable
from .slots import switch_holds

RoleMap = Mapping[str, str]


@dataclass(frozen=True)
class Reliance:
    text: str  # what the test relies on, in the words of a failure message
    holds: Callable[[Topology, RoleMap], bool]
    roles: tuple[str, ...] = ()  # the roles it speaks about (each bound role needs one)


def kind(role: str, *kinds: EndpointKind) -> Reliance:
    names = " or ".join(k.value for k in kinds)
    return Reliance(f"{role} is a {names}", lambda t, r: t.endpoint(r[role]).kind in kinds, (role,))


def plugged(role: str, at_boot: bool = True) -> Reliance:
    text = f"{role} is present at boot" if at_boot else f"{role} is declared for a later device_add"
    return Reliance(text, lambda t, r: t.endpoint(r[role]).plugged is at_boot, (role,))


def distinct(*roles: str) -> Reliance:
    return Reliance(f"{', '.join(roles)} are different devices", lambda t, r: len({r[x] for x in roles}) == len(roles))


def pair_ends(provider: str, client: str, *outcomes: Outcome) -> Reliance:
    """The oracle's expected outcome of P2P from `provider`'s memory by `client`."""
    names = " or ".join(o.value for o in outcomes)

    def holds(topo: Topology, roles: RoleMap) -> bool:
        found = [v for v in topology_verdicts(topo) if (v.provider, v.client) == (roles[provider], roles[client])]
        return len(found) == 1 and expected_outcome(topo, found[0]) in outcomes

    return Reliance(f"P2P from {provider}'s BAR by {client} ends {names} (the oracle)", holds)


def maps(provider: str, client: str) -> Reliance:
    """The kernel maps any BAR of `provider` for `client` (the oracle's map type for the pair,
    which need not be a declared P2P provider: a VFIO exporter's BAR is one)."""

    def holds(topo: Topology, roles: RoleMap) -> bool:
        return verdict(topo, topology_layout(topo), roles[provider], roles[client]).p2p_allowed

    return Reliance(f"the kernel maps {provider}'s BAR for {client} (the oracle)", holds)


def through_iommu(provider: str, client: str) -> Reliance:
    """The kernel maps `provider`'s BAR for `client` through the host bridge (THRU_HOST_BRIDGE):
    the client's DMA goes through the IOMMU, so unmapping it makes that DMA fault. A BUS_ADDR
    pair routed inside a switch never reaches the IOMMU (the testbed's built QEMU, hardware)."""

    def holds(topo: Topology, roles: RoleMap) -> bool:
        v = verdict(topo, topology_layout(topo), roles[provider], roles[client])
        return v.map_type is MapType.THRU_HOST_BRIDGE

    return Reliance(f"the kernel maps {provider}'s BAR for {client} through the IOMMU (THRU_HOST_BRIDGE)", holds)


def hot_pluggable(role: str) -> Reliance:
    return Reliance(f"{role} is alone in a hot-pluggable slot", lambda t, r: _pluggable(t, r[role]), (role,))


def alone_below_port(role: str) -> Reliance:
    return Reliance(f"{role} is alone below its port (a bus reset takes nothing else)", lambda t, r: _alone(t, r[role]))


def inside_switch(role: str, switch: str, inside: bool = True) -> Reliance:
    where = "below" if inside else "outside"
    return Reliance(
        f"{role} is {where} {switch}", lambda t, r: switch_holds(t, r[switch], r[role]) is inside, (role, switch)
    )


def bar_size(role: str, size: int) -> Reliance:
    return Reliance(f"{role}'s BAR2 is {size} bytes", lambda t, r: t.endpoint(r[role]).size == size)


def cmb(role: str) -> Reliance:
    return Reliance(f"{role} has a CMB", lambda t, r: t.endpoint(r[role]).cmb > 0)


def narrow_mask(role: str) -> Reliance:
    full = (1 << 64) - 1
    return Reliance(
        f"{role}'s DMA mask is narrower than 64 bits",
        lambda t, r: (t.endpoint(r[role]).dma_mask or 0) < full,
    )


def behind_iommu(translating: bool = False, iommu: IommuType | None = None) -> Reliance:
    what = iommu.value if iommu else "an"

    def holds(topo: Topology, roles: RoleMap) -> bool:
        if topo.iommu.type is IommuType.NONE or (iommu is not None and topo.iommu.type is not iommu):
            return False
        return not translating or topo.iommu.mode is IommuMode.TRANSLATED

    return Reliance(f"{what} IOMMU{' translating' if translating else ''} is there", holds)


def native_hotplug() -> Reliance:
    return Reliance("hotplug is native (pciehp)", lambda t, r: t.hotplug.value == "native")


def unmet(relies: tuple[Reliance, ...], topo: Topology, roles: RoleMap) -> list[str]:
    """The reliances that do not hold for these roles, and roles no reliance speaks about."""
    broken = [r.text for r in relies if not r.holds(topo, roles)]
    spoken = {role for r in relies for role in r.roles}
    broken += [f"no reliance says what role '{role}' is" for role in roles if role not in spoken]
    return broken
