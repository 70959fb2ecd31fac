"""The P2P suites' needs: NVMe pairs by the oracle's expected outcome, ACS, virtio-blk."""

from __future__ import annotations

import re
from dataclasses import replace

from .. import reliance as R
from ..layout import Layout, topology_layout
from ..model import EndpointKind, MapType, Topology
from ..outcome import Outcome
from .core import Need, _cmb_nvme, _pairs, _plugged, _translating


def _cmb(topo: Topology, layout: Layout) -> dict[str, str] | None:
    found = _cmb_nvme(topo)
    return {"provider": found[0].id} if found else None


CMB_NVME = Need("an NVMe with a CMB", _cmb, (R.kind("provider", EndpointKind.NVME), R.cmb("provider")))


def _nvme_pairs(topo: Topology, layout: Layout) -> dict[str, str] | None:
    blocks = _plugged(topo, EndpointKind.NVME, EndpointKind.VIRTIO_BLK)
    for provider in _cmb_nvme(topo):
        for client in blocks:
            if client.id != provider.id:
                return {"provider": provider.id, "client": client.id}
    return None


NVME_PAIRS = Need(
    "an NVMe with a CMB and a second block device (NVMe or virtio-blk) at boot",
    _nvme_pairs,
    (
        R.kind("provider", EndpointKind.NVME),
        R.cmb("provider"),
        R.kind("client", EndpointKind.NVME, EndpointKind.VIRTIO_BLK),
        R.plugged("client"),
        R.distinct("provider", "client"),
    ),
)


def _transferring(topo: Topology, layout: Layout) -> dict[str, str] | None:
    found = _pairs(topo, Outcome.TRANSFERRED)
    return {"provider": found[0].provider, "client": found[0].client} if found else None


_NVME_PAIR = (
    R.kind("provider", EndpointKind.NVME),
    R.kind("client", EndpointKind.NVME),
    R.distinct("provider", "client"),
)
TRANSFERRING_PAIR = Need(
    "an NVMe with a CMB and a second NVMe it does P2P with (the oracle expects the bytes to land)",
    _transferring,
    (*_NVME_PAIR, R.pair_ends("provider", "client", Outcome.TRANSFERRED)),
)


def _faulting(topo: Topology, layout: Layout) -> dict[str, str] | None:
    found = _pairs(topo, Outcome.DMA_FAULT)
    return {"provider": found[0].provider, "client": found[0].client} if found else None


FAULTING_PAIR = Need(
    "an NVMe pair the kernel maps BUS_ADDR behind a translating vIOMMU (the declared DMA fault)",
    _faulting,
    (*_NVME_PAIR, R.behind_iommu(translating=True), R.pair_ends("provider", "client", Outcome.DMA_FAULT)),
)

_ACS_ARG = re.compile(r"disable_acs_redir=")


def _acs_cleared(topo: Topology, layout: Layout) -> dict[str, str] | None:
    if not any(_ACS_ARG.search(arg) for arg in topo.kernel_args):
        return None
    without = replace(topo, kernel_args=tuple(a for a in topo.kernel_args if not _ACS_ARG.search(a)))
    refused_without = {(v.provider, v.client) for v in _pairs(without, Outcome.EINVAL)}
    cleared = [v for v in _pairs(topo, Outcome.TRANSFERRED) if (v.provider, v.client) in refused_without]
    redirected = [v for v in _pairs(topo, Outcome.EINVAL) if v.acs_ports]
    if not cleared or not redirected:
        return None
    return {
        "cleared_provider": cleared[0].provider,
        "cleared_client": cleared[0].client,
        "redirected_provider": redirected[0].provider,
        "redirected_client": redirected[0].client,
    }


ACS_REDIR_CLEARED = Need(
    "pci=disable_acs_redir= letting one NVMe pair do P2P that ACS redirect refuses without it, "
    "and a pair still refused by ACS redirect",
    _acs_cleared,
    (
        *(R.kind(role, EndpointKind.NVME) for role in ("cleared_provider", "cleared_client")),
        *(R.kind(role, EndpointKind.NVME) for role in ("redirected_provider", "redirected_client")),
        R.pair_ends("cleared_provider", "cleared_client", Outcome.TRANSFERRED),
        R.pair_ends("redirected_provider", "redirected_client", Outcome.EINVAL),
    ),
)


def _virtio_blk(topo: Topology, layout: Layout) -> dict[str, str] | None:
    providers, disks = _cmb_nvme(topo), _plugged(topo, EndpointKind.VIRTIO_BLK)
    return {"provider": providers[0].id, "client": disks[0].id} if providers and disks else None


VIRTIO_BLK_CLIENT = Need(
    "an NVMe with a CMB and a virtio-blk disk",
    _virtio_blk,
    (R.kind("provider", EndpointKind.NVME), R.cmb("provider"), R.kind("client", EndpointKind.VIRTIO_BLK)),
)


def _client_port_with_acs(topo: Topology, client: str) -> str | None:
    layout = topology_layout(topo)
    port = layout[client].upstream
    return port if port is not None and layout[port].acs else None


def _routed(topo: Topology, layout: Layout) -> dict[str, str] | None:
    """A BUS_ADDR pair a switch routes below itself behind a translating IOMMU, the client's
    downstream port with an ACS capability: setting its P2P Request Redirect must send the DMA
    up to the IOMMU instead (where it faults)."""
    if not (topo.peer_routing and _translating(topo)):
        return None
    for v in _pairs(topo, Outcome.TRANSFERRED):
        port = _client_port_with_acs(topo, v.client)
        if v.map_type is MapType.BUS_ADDR and port is not None:
            return {"provider": v.provider, "client": v.client, "port": port}
    return None


ROUTED_PAIR = Need(
    "an NVMe pair a switch routes below itself (BUS_ADDR) behind a translating IOMMU, on a QEMU that "
    "routes P2P inside switches, the client's downstream port with an ACS capability",
    _routed,
    (
        *_NVME_PAIR,
        R.behind_iommu(translating=True),
        R.pair_ends("provider", "client", Outcome.TRANSFERRED),
        R.Reliance("the QEMU routes P2P inside switches", lambda t, r: t.peer_routing),
        R.Reliance(
            "port is the client's downstream port, with an ACS capability",
            lambda t, r: _client_port_with_acs(t, r["client"]) == r["port"],
            ("port",),
        ),
    ),
)
