"""`testbed validate | explain | topologies` (`testbed render` lives in render/commands.py)."""

from __future__ import annotations

import argparse

from .explain import disagreement_line, tree_lines, verdict_lines
from .layout import build_layout
from .load import load_topology, shipped_names
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
    p.set_defaults(func=_explain)


def _list(args: argparse.Namespace) -> int:
    for name in shipped_names():
        topo = load_topology(name)
        print(f"{name:20} {' '.join(topo.description.split())}")
    return 0


def _validate(args: argparse.Namespace) -> int:
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
    cpu = topo.machine.cpu
    print(f"{topo.name}: {' '.join(topo.description.split())}")
    iommu = topo.iommu.type.value + (f" ({topo.iommu.mode.value})" if topo.iommu.enabled else "")
    print(f"CPU {cpu.model} ({cpu.vendor} family {cpu.family:#x}), IOMMU {iommu}, hotplug {topo.hotplug.value}")
    if args.tree:
        print()
        print("\n".join(tree_lines(topo, layout)))
    print()
    for v in verdicts(topo, layout):
        print("\n".join(verdict_lines(v)))
    disagreements = check_expectations(topo, layout)
    if disagreements:
        print()
        for d in disagreements:
            print(f"warning: {disagreement_line(topo, d)}")
        return 1
    return 0
