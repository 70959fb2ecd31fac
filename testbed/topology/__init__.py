"""Topology: YAML model, validation, device layout and the kernel's P2P verdict oracle."""

from .layout import Layout, Placement, build_layout
from .load import load_topology, load_topology_once, resolve, shipped_names
from .model import Endpoint, EndpointKind, MapType, Topology
from .oracle import Verdict, check_expectations, verdicts
from .problems import Problem, TopologyError

__all__ = [
    "Endpoint",
    "EndpointKind",
    "Layout",
    "MapType",
    "Placement",
    "Problem",
    "Topology",
    "TopologyError",
    "Verdict",
    "build_layout",
    "check_expectations",
    "load_topology",
    "load_topology_once",
    "resolve",
    "shipped_names",
    "verdicts",
]
