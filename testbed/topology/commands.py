"""`testbed validate | explain | topologies` (`testbed render` lives in render/commands.py)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from .explain import disagreement_line, tree_lines, verdict_lines
from .layout import Layout, build_layout
from .load import load_topology, shipped_names
from .model import Topology
from .oracle import check_expectations, verdicts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topologies", help="list the shipped topologies with their descriptions")
    p.set_defaults(func=_list)

    p = sub.add_parser("validate", help="check topology files; every problem at once, with file:line")
    p.add_argument(
        "topologies",
        nargs="*",
        metavar="TOPO",
        help="shipped name or path to a .yaml (default: every shipped topology)",
    )
    p.set_defaults(func=_validate)

    p = sub.add_parser("explain", help="the kernel's P2P verdict for every provider/client pair, and why")
    p.add_argument("topology", metavar="TOPO")
    p.add_argument("--tree", action="store_true", help="also print the PCI tree with guest addresses")
    p.add_argument("--json", action="store_true", help="one JSON document: every verdict with its reason, for tools")
    p.set_defaults(func=_explain)


def _list(args: argparse.Namespace) -> int:
    for name in shipped_names():
        topo = load_topology(name)
        print(f"{name:20} {' '.join(topo.description.split())}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .problems import TopologyError

    names = args.topologies or shipped_names()
    failed = 0
    for name in names:
        try:
            topo = load_topology(name)
        except TopologyError as exc:
            failed += 1
            for problem in exc.problems:
                print(problem)
            continue
        except ConfigError as exc:  # not found, not YAML: this file's problem, the others still get checked
            failed += 1
            print(f"{name}: {exc}")
            continue
        disagreements = check_expectations(topo)
        for d in disagreements:
            print(f"warning: {disagreement_line(topo, d)}")
        print(
            f"ok: {topo.source} ({len(topo.endpoints)} endpoints, {len(topo.expectations)} expectations"
            f"{', ' + str(len(disagreements)) + ' disagree with the oracle' if disagreements else ''})"
        )
    return 2 if failed else 0


def _explain(args: argparse.Namespace) -> int:
    topo = load_topology(args.topology)
    layout = build_layout(topo)
    if args.json:
        print(json.dumps(explain_json(topo, layout), indent=1))
        return 1 if check_expectations(topo, layout) else 0
    cpu = topo.machine.cpu
    print(f"{topo.name}: {' '.join(topo.description.split())}")
    iommu = topo.iommu.type.value + (f" ({topo.iommu.mode.value})" if topo.iommu.enabled else "")
    print(f"CPU {cpu.model} ({cpu.vendor} family {cpu.family:#x}), IOMMU {iommu}, hotplug {topo.hotplug.value}")
    if args.tree:
        print()
        print("\n".join(tree_lines(topo, layout)))
    print()
    routed = verdicts(replace(topo, peer_routing=not topo.peer_routing), layout)
    for v, other in zip(verdicts(topo, layout), routed, strict=True):
        print("\n".join(verdict_lines(v, other)))
    disagreements = check_expectations(topo, layout)
    if disagreements:
        print()
        for d in disagreements:
            print(f"warning: {disagreement_line(topo, d)}")
        return 1
    return 0


def explain_json(topo: Topology, layout: Layout) -> dict[str, object]:
    """`testbed explain --json`: the oracle's inputs and every verdict, plain data."""
    cpu = topo.machine.cpu
    return {
        "topology": topo.name,
        "source": str(topo.source),
        "cpu": {"model": cpu.model, "vendor": cpu.vendor, "family": cpu.family},
        "iommu": {"type": topo.iommu.type.value, "mode": topo.iommu.mode.value},
        "hotplug": topo.hotplug.value,
        "devices": [
            {"id": p.id, "bdf": p.bdf, "bridge": p.is_bridge, "acs": p.acs} for p in layout.placements.values()
        ],
        "verdicts": [
            {
                "provider": v.provider,
                "client": v.client,
                "map_type": v.map_type.value,
                "distance": v.distance,
                "reason": v.reason,
                "common_bridge": v.common_bridge,
                "acs_ports": list(v.acs_ports),
                "divergence": v.divergence,
                "note": v.note,
            }
            for v in verdicts(topo, layout)
        ],
        "disagreements": [
            {"line": d.line, "provider": d.provider, "client": d.client, "declared": d.declared, "computed": d.computed}
            for d in check_expectations(topo, layout)
        ],
    }
