"""Every import points down the layers (as the kernel's KUnit tool keeps its parts apart):
a package may import its own layer and the ones below, never one above. The guest agent runs
in the guest with the stdlib only and imports nothing of the testbed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "testbed"

# bottom first; a top-level module or package name -> its layer
LAYERS: list[set[str]] = [
    {"errors", "paths", "hashing", "inventory", "timeouts", "debian_mirror", "located", "children"},
    {"topology"},
    {"render", "logs", "kernel", "image", "coverage", "qemu"},
    {"vm", "probe", "runs"},
    {"guestvm"},
    {"kselftest"},
    {"pytest_plugin"},
    {"ab", "matrix", "report", "cache", "cli", "mutate"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _imported_tops(path: Path) -> set[str]:
    """The top-level testbed names `path` imports (relative or absolute)."""
    tree = ast.parse(path.read_text())
    out = set()
    parts = list(path.relative_to(ROOT).parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    out.add(target[0])
                else:  # "from .. import x": x is a top-level name
                    out.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("testbed."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("testbed."))
    return out


def test_every_package_has_a_layer():
    tops = {p.name.removesuffix(".py") for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert tops - {"__init__"} <= set(LAYER), sorted(tops - set(LAYER) - {"__init__"})


def test_imports_point_down():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).parts[0] == "in_guest":  # the guest's python3 runs these, flat
            continue
        top = _top(path)
        if top == "__init__":
            continue
        for target in _imported_tops(path) - {top}:
            if target in LAYER and LAYER[target] > LAYER[top]:
                upward.append(f"{path.relative_to(ROOT)} imports {target} (layer {LAYER[target]} > {LAYER[top]})")
    assert upward == []


def test_what_runs_in_the_guest_imports_nothing_of_the_testbed():
    for path in (ROOT / "in_guest").glob("*.py"):
        assert "testbed" not in {t.split(".")[0] for t in _imported_tops(path)}, path
        assert "from testbed" not in path.read_text() and "import testbed" not in path.read_text(), path
