"""Build small topologies from YAML text for unit tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from testbed.topology import Topology, TopologyError, load_topology

BASE = """\
description: test topology
hotplug: native
root_ports:
  - id: rp1
  - id: rp2
switches:
  - {id: sw1, bus: rp1, downstream: 2}
endpoints:
  - {id: nvme0, kind: nvme, bus: sw1-d0, size: 64M, cmb: 64M}
  - {id: nvme1, kind: nvme, bus: sw1-d1, size: 64M}
  - {id: nvme2, kind: nvme, bus: rp2, size: 64M}
"""


def load_text(text: str, name: str = "t.yaml") -> Topology:
    return load_topology(Path(name), text=textwrap.dedent(text))


def problems_of(text: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load_text(text)
    return [str(p) for p in info.value.problems]


def one_problem(text: str, *fragments: str) -> str:
    """Exactly one problem, containing every fragment; returns it."""
    found = problems_of(text)
    assert len(found) == 1, found
    for fragment in fragments:
        assert fragment in found[0], found[0]
    return found[0]
