"""What a boot's way to the agent's first answers imports: built-in modules and _json only.

Under TCG each of these costs a boot real time (measured at boot, in the guest: enum 0.09 s,
re 0.12 s with it, json 0.16 s, signal 0.10 s, socket 0.14 s, threading 0.08 s; the agent's
imports were 0.24-0.35 s in all), and the agent needs none of them before it has answered:
the listener, the agent and the helpers of the first calls (kmsg, fingerprint) must not bring
them back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_GUEST = ROOT / "testbed" / "in_guest"
LISTENER_LIB = ROOT / "guest-images" / "rootfs" / "usr" / "local" / "lib" / "testbed"
HEAVY = {"enum", "re", "json", "signal", "socket", "selectors", "threading", "functools", "collections", "importlib"}


def _imported(path: Path, modules: list[str]) -> set[str]:
    """The modules `import <modules>` loads in a fresh `python3 -S -B` (the guest's flags)."""
    probe = (
        "import sys; before = set(sys.modules); sys.path.insert(0, sys.argv[1])\n"
        f"import {', '.join(modules)}\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    argv = [sys.executable, "-S", "-B", "-c", probe, str(path)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    ("path", "modules"),
    [
        (LISTENER_LIB, ["agent_listen"]),
        (IN_GUEST, ["agent"]),
        (IN_GUEST, ["agent", "kmsg", "fingerprint"]),  # the first calls: a cursor, the fingerprint
    ],
    ids=["listener", "agent", "first-calls"],
)
def test_the_way_to_the_first_answers_imports_nothing_heavy(path, modules):
    assert _imported(path, modules) & HEAVY == set()
