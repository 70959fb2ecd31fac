"""kernel-configs/selftest.config keeps up with the tree's own config fragments for the suites
it runs: tools/testing/selftests/iommu/config and drivers/dma-buf/.kunitconfig."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.kernel.configsets import build_set, load_config_set
from testbed.paths import cache_dir

FRAGMENTS = ("tools/testing/selftests/iommu/config", "drivers/dma-buf/.kunitconfig")


def _tree() -> Path | None:
    from testbed.kernel.source import pinned_debian_tree

    tree = pinned_debian_tree(cache_dir("kernel") / "debian")
    return tree.path if tree else None


def _options(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
    return out


@pytest.mark.parametrize("fragment", FRAGMENTS)
def test_selftest_config_covers_the_trees_own_fragment(fragment: str):
    tree = _tree()
    if tree is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the Debian kernel source is missing under CI (testbed kernel build fetches it)")
        pytest.skip("kernel source not fetched yet (testbed kernel build fetches it)")
    wanted = _options(tree / fragment)
    assert wanted, f"{fragment} lists no option"
    merged = load_config_set(build_set("selftest"))
    for name, value in wanted.items():
        entry = merged.get(name)
        assert entry is not None and entry.value == value, (
            f"{fragment} wants {name}={value}; selftest.config has {entry}"
        )
