"""coverage-scope.yaml: the shipped scope names real 7.2.13 functions; bad files say file:line.

Every function the scope lists must be defined in its file in Linux 7.2.13. The definitions are
recorded in tests/fixtures/coverage/scope-functions-7.2.13.txt (`path function` per line), made
from a linux-source-7.2 tree by running this file:

    .venv/bin/python tests/unit/test_coverage_scope.py /path/to/linux-source-7.2 [scope.yaml]

(it reads the tree, never writes it; the function finder below agrees with Universal Ctags'
`--c-kinds=f` on every scope file of 7.2.13).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from testbed.coverage.scope import DEFAULT_SCOPE, CoverageScopeError, Scope, ScopeEntry, load_scope, profile_lines

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "coverage" / "scope-functions-7.2.13.txt"


def _recorded() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in FIXTURE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, function = line.split()
            out.setdefault(path, set()).add(function)
    return out


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scope.yaml"
    path.write_text(text)
    return path


def test_the_shipped_scope_loads():
    scope = load_scope()
    assert scope.file == DEFAULT_SCOPE
    assert "drivers/pci/p2pdma.c" in scope.paths()
    assert all(entry.why for entry in scope.entries)


def test_every_function_of_the_shipped_scope_exists_in_7_2_13():
    recorded = _recorded()
    scope = load_scope()
    assert set(scope.paths()) <= set(recorded), "regenerate the fixture for the new files (see the docstring)"
    missing = [
        f"{entry.where}: {entry.path}: {name}"
        for entry in scope.entries
        for name in entry.functions or ()
        if name not in recorded[entry.path]
    ]
    assert missing == []


def test_the_scope_covers_what_the_series_touches():
    scope = load_scope()
    for path, function in [
        ("drivers/pci/p2pdma.c", "calc_map_type_and_dist"),
        ("drivers/dma-buf/dma-buf-mapping.c", "dma_buf_phys_vec_to_sgt"),
        ("drivers/dma-buf/dma-buf.c", "dma_buf_invalidate_mappings"),
        ("drivers/vfio/pci/vfio_pci_dmabuf.c", "vfio_pci_dma_buf_move"),
        ("drivers/vfio/pci/vfio_pci_config.c", "vfio_basic_config_write"),
        ("drivers/iommu/iommufd/pages.c", "iopt_revoke_notify"),
        ("drivers/iommu/dma-iommu.c", "dma_iova_link"),
        ("kernel/dma/mapping.c", "dma_map_phys"),
        ("drivers/nvme/host/pci.c", "nvme_map_cmb"),
        ("block/blk-mq-dma.c", "blk_rq_dma_map_iter_start"),
        ("drivers/pci/hotplug/pciehp_pci.c", "pciehp_unconfigure_device"),
        ("drivers/pci/remove.c", "pci_stop_and_remove_bus_device"),
    ]:
        assert scope.in_scope(path, function), (path, function)
    assert not scope.in_scope("drivers/dma-buf/dma-buf.c", "dma_buf_vmap")  # CPU access: not the series'
    assert not scope.in_scope("drivers/pci/probe.c")


def test_in_scope_and_entry():
    scope = Scope(
        Path("s.yaml"),
        (
            ScopeEntry("drivers/pci/p2pdma.c", "why", None, "s.yaml:2"),
            ScopeEntry("drivers/dma-buf/dma-buf.c", "why", ("dma_buf_detach",), "s.yaml:4"),
        ),
    )
    assert scope.in_scope("drivers/pci/p2pdma.c", "anything")
    assert scope.in_scope("drivers/dma-buf/dma-buf.c", "dma_buf_detach")
    assert scope.in_scope("drivers/dma-buf/dma-buf.c", "dma_buf_detach.part.0")  # a compiler clone
    assert not scope.in_scope("drivers/dma-buf/dma-buf.c", "dma_buf_put")
    assert scope.in_scope("drivers/dma-buf/dma-buf.c")
    assert scope.entry("drivers/pci/remove.c") is None
    entry = scope.entry("drivers/pci/p2pdma.c")
    assert entry is not None and entry.where == "s.yaml:2"


def test_digest_follows_the_file_list_only(tmp_path):
    base = "files:\n  - path: a/b.c\n    why: x\n  - path: c/d.c\n    why: y\n"
    one = load_scope(_write(tmp_path, base))
    reordered = load_scope(_write(tmp_path, "files:\n  - path: c/d.c\n    why: z\n  - path: a/b.c\n    why: w\n"))
    narrowed = load_scope(_write(tmp_path, base + "    functions: [f]\n"))
    more = load_scope(_write(tmp_path, base + "  - path: e/f.c\n    why: v\n"))
    assert one.digest() == reordered.digest() == narrowed.digest()
    assert more.digest() != one.digest()


def test_profile_lines_per_kbuild_directory(tmp_path):
    scope = load_scope(
        _write(
            tmp_path,
            "files:\n"
            "  - {path: drivers/vfio/pci/vfio_pci_dmabuf.c, why: x}\n"
            "  - {path: drivers/pci/p2pdma.c, why: x}\n"
            "  - {path: drivers/vfio/pci/vfio_pci_core.c, why: x, functions: [f]}\n"
            "  - {path: drivers/pci/hotplug/pciehp_pci.c, why: x}\n",
        )
    )
    assert profile_lines(scope) == {
        "drivers/pci": ["GCOV_PROFILE_p2pdma.o := y"],
        "drivers/pci/hotplug": ["GCOV_PROFILE_pciehp_pci.o := y"],
        "drivers/vfio/pci": ["GCOV_PROFILE_vfio_pci_core.o := y", "GCOV_PROFILE_vfio_pci_dmabuf.o := y"],
    }


def test_the_shipped_scope_profiles_real_kbuild_directories():
    lines = profile_lines(load_scope())
    assert lines["drivers/pci"] == ["GCOV_PROFILE_p2pdma.o := y", "GCOV_PROFILE_remove.o := y"]
    assert "GCOV_PROFILE_blk-mq-dma.o := y" in lines["block"]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "files:\n  - path: a/b.c\n    why: x\n    colour: red\n",
            r"scope.yaml:4: files\[0\].colour: unknown key \(allowed: path, why, functions\)",
        ),
        ("files:\n  - why: x\n", r"scope.yaml:2: files\[0\]: missing 'path'"),
        ("files:\n  - path: a/b.c\n", r"scope.yaml:2: files\[0\]: missing 'why'"),
        (
            "files:\n  - path: /usr/src/a/b.c\n    why: x\n",
            r"scope.yaml:2: files\[0\].path: /usr/src/a/b.c is absolute",
        ),
        ("files:\n  - path: ../b.c\n    why: x\n", r"files\[0\].path: ../b.c leaves the kernel tree"),
        ("files:\n  - path: a/b.h\n    why: x\n", r"files\[0\].path: a/b.h is not a .c file"),
        ("files:\n  - path: ./a/b.c\n    why: x\n", r"not in normal form \(write a/b.c\)"),
        ("files:\n  - path: a/b.c\n    why: ''\n", r"files\[0\].why: must say why"),
        (
            "files:\n  - path: a/b.c\n    why: x\n  - path: a/b.c\n    why: y\n",
            r"scope.yaml:4: files\[1\].path: a/b.c is listed twice \(first at line 2\)",
        ),
        ("files:\n  - path: a/b.c\n    why: x\n    functions: f\n", r"files\[0\].functions: must be a non-empty list"),
        ("files:\n  - path: a/b.c\n    why: x\n    functions: []\n", r"files\[0\].functions: must be a non-empty list"),
        (
            "files:\n  - path: a/b.c\n    why: x\n    functions:\n      - good\n      - bad name\n",
            r"scope.yaml:6: files\[0\].functions\[1\]: 'bad name' is not a C identifier",
        ),
        ("files:\n  - path: a/b.c\n    why: x\n    functions: [f, f]\n", r"f is listed twice"),
        ("files: []\n", r"scope.yaml:1: files: must be a non-empty list of entries"),
        ("file:\n  - path: a/b.c\n", r"scope.yaml:1: file: unknown key \(allowed: files\)"),
        ("files:\n  - a/b.c\n", r"files\[0\]: must be a mapping"),
        ("files: [\n", r"scope.yaml:\d+: not valid YAML"),
    ],
)
def test_bad_scope_files_say_where_and_what(tmp_path, text, expected):
    with pytest.raises(CoverageScopeError) as err:
        load_scope(_write(tmp_path, text))
    assert re.search(expected, str(err.value)), str(err.value)
    assert "in the coverage scope" in str(err.value)


def test_every_problem_at_once(tmp_path):
    with pytest.raises(CoverageScopeError) as err:
        load_scope(_write(tmp_path, "files:\n  - path: a/b.h\n    why: x\n  - why: y\n"))
    assert str(err.value).startswith("2 problems in the coverage scope")


def test_a_missing_scope_file(tmp_path):
    with pytest.raises(CoverageScopeError, match="does not exist"):
        load_scope(tmp_path / "nope.yaml")


# --- regenerating the fixture (python tests/unit/test_coverage_scope.py KSRC) ---

_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_ATTRIBUTES = {"__attribute__", "__printf", "__section", "__aligned", "__must_hold", "__acquires", "__releases"}


def function_definitions(text: str) -> list[str]:
    """The names of the functions a kernel C file defines (kernel style: the body's `{` alone on
    a line after a signature that starts in column 0), in file order, each once."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group().count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    names: list[str] = []
    head: list[str] = []
    for line in text.splitlines():
        stripped = line.rstrip()
        if stripped == "{" and head:
            signature = " ".join(head)
            found = [m.group(1) for m in _CALL.finditer(signature) if m.group(1) not in _ATTRIBUTES]
            if found and "=" not in signature.split("(")[0] and ";" not in signature and found[0] not in names:
                names.append(found[0])
            head = []
        elif not stripped:
            if head and not head[-1].endswith(")"):  # a complete signature may wait for its brace
                head = []
        elif line[0] in " \t":
            if head:
                head.append(line.strip())
        elif line[0] in "#}" or stripped.endswith((";", "{")):
            head = []
        else:
            head.append(line.strip())
    return names


def regenerate(ksrc: Path, scope_file: Path = DEFAULT_SCOPE) -> str:
    out = [
        f"# function definitions of every coverage-scope file in {ksrc.name} (Linux 7.2.13), made by",
        "# tests/unit/test_coverage_scope.py from the read-only source tree: `path function`",
    ]
    for path in sorted(load_scope(scope_file).paths()):
        out += [f"{path} {name}" for name in sorted(function_definitions((ksrc / path).read_text()))]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    FIXTURE.write_text(regenerate(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_SCOPE))
    print(f"wrote {FIXTURE}")
