"""Validation findings of a topology file (the problems themselves live in testbed/located.py,
shared by every file the testbed reads)."""

from __future__ import annotations

from ..located import Problem, ProblemsError

__all__ = ["Problem", "ProblemsError", "TopologyError"]


class TopologyError(ProblemsError):
    what = "topology"
