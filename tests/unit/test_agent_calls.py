"""Every call the harness makes through the guest agent runs in the agent's process: the
helper module has a COMMANDS entry for it. Anything else starts an interpreter per call
(~0.25 s under TCG: a P2P transfer took 0.28 s of which 0.013 s was its own work)."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IN_GUEST = ROOT / "testbed" / "in_guest"
sys.path.insert(0, str(IN_GUEST))

# vm.agent("module", "command", ...), the literal arguments possibly on lines of their own
CALL = re.compile(r"""\.agent\(\s*"(?P<module>\w+)",\s*"(?P<command>\w+)\"""")


def calls() -> set[tuple[str, str, str]]:
    found = set()
    for path in [*(ROOT / "testbed").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").iterdir()]:
        if path.is_file() and "in_guest" not in path.parts:
            for m in CALL.finditer(path.read_text(errors="replace")):
                if not (IN_GUEST / f"{m['module']}.py").is_file():
                    continue  # a unit test's stand-in
                found.add((m["module"], m["command"], str(path.relative_to(ROOT))))
    return found


def test_the_scan_finds_the_calls_made_through_the_agent():
    found = {(m, c) for m, c, _ in calls()}
    assert {("p2pmem", "transfer"), ("p2pmem", "state"), ("fingerprint", "read"), ("kmsg", "mark")} <= found


def test_every_call_through_the_agent_has_a_commands_entry():
    missing = []
    for module, command, where in sorted(calls()):
        table = getattr(importlib.import_module(module), "COMMANDS", {})
        if command not in table:
            missing.append(f"{where}: {module}.py {command}")
    assert not missing, "calls that would start an interpreter in the guest each time:\n" + "\n".join(missing)
