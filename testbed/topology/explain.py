"""Human-readable reports of a topology: its tree and the oracle's verdict for every pair."""

from __future__ import annotations

from .layout import Layout, NodeKind, Placement
from .model import Topology
from .oracle import Disagreement, Verdict


def tree_lines(topo: Topology, layout: Layout) -> list[str]:
    lines = ["pcie.0 (q35 host bridge 8086:29c0, bus 00)"]
    endpoints = {ep.id: ep for ep in topo.endpoints}

    def label(p: Placement) -> str:
        text = f"{p.bdf} {p.device_id} {p.id} [{p.kind.value}"
        if p.kind is NodeKind.ENDPOINT:
            ep = endpoints[p.id]
            text += f" {ep.kind.value}"
            if ep.cmb:
                text += f", CMB {ep.cmb >> 20}M"
        if p.kind is NodeKind.ROOT_PORT:
            text += ", ACS" if p.acs else ", no ACS"
        if p.slot_number is not None:
            text += f", hotplug slot {p.slot_number}"
        if not p.plugged:
            text += ", plugged later"
        return text + "]"

    def visit(bus: str, depth: int) -> None:
        for p in layout.on_bus(bus):
            lines.append("  " * depth + "└─ " + label(p))
            if p.kind is not NodeKind.ENDPOINT:
                visit(p.id, depth + 1)

    visit("pcie.0", 1)
    return lines


def verdict_lines(v: Verdict, routed: Verdict | None = None) -> list[str]:
    """`routed`: the same pair on a QEMU that routes P2P inside switches (--qemu built), said
    when its divergence differs."""
    lines = [f"{v.provider} -> {v.client}: {v.map_type.value}, distance {v.distance}", f"    why: {v.reason}"]
    if v.divergence:
        lines.append(f"    QEMU: {v.divergence}")
    if routed is not None and routed.divergence != v.divergence:
        lines.append(
            "    on --qemu built: "
            + (routed.divergence or "the switch delivers the DMA below itself, past the IOMMU: the bytes land")
        )
    if v.note:
        lines.append(f"    note: {v.note}")
    return lines


def disagreement_line(topo: Topology, d: Disagreement) -> str:
    return (
        f"{topo.source}:{d.line}: expect {d.provider} -> {d.client} declares {d.declared}, "
        f"the kernel's rules give {d.computed}"
    )
