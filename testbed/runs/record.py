"""run.json: what one pytest run saw, in a form two runs can be compared by (testbed ab).

Beside verdicts.tsv and census.tsv in results/pytest/<run>/: every test's outcome, every splat
by signature with where it happened and whether known-splats.yaml knows it, the tests that
ran without lock checking, and what the VMs booted (kernel, release, accel, QEMU).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..kernel.artifact import read_manifest
from ..logs.known import KnownSplat
from ..logs.splat import Splat
from ..vm.qemu import qemu_version

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
SCHEMA = 1
# worst first: a test that passed its call and failed its teardown (a splat) failed
SEVERITY = ("error", "failed", "xpassed", "passed", "xfailed", "skipped")


def plain(nodeid: str) -> str:
    """The node id without the "@group" pytest-xdist's loadgroup appends, so runs with and
    without -n compare test by test."""
    head, bracket, tail = nodeid.rpartition("]")
    return head + bracket if bracket and tail.startswith("@") else nodeid


@dataclass(frozen=True)
class SplatRecord:
    signature: str
    kind: str
    where: str  # the test's node id, or "outside any test in <vm>"
    known: str | None  # the known-splats.yaml entry (file:line), None for a new splat
    console: str  # console log:first line

    @classmethod
    def of(cls, splat: Splat, where: str, known: KnownSplat | None, console: Path) -> SplatRecord:
        return cls(
            splat.signature, str(splat.kind), where, known.where if known else None, f"{console}:{splat.first_line}"
        )


@dataclass(frozen=True)
class BootRecord:
    topology: str
    vm: str
    bzimage: str
    kernel: dict[str, object]  # the kernel cache's manifest (key, release, config set, patches), if any
    accel: str
    fingerprint: str | None = None  # the VM's fingerprint.json, relative to run.json's directory
    # the --kernel-config name it booted ("debug-full" boots the "debug" set's build)
    kernel_config: str | None = None
    fingerprint_digest: str | None = None  # equal digests, equal machines


@dataclass
class RunRecord:
    outcomes: dict[str, str] = field(default_factory=dict)
    splats: list[SplatRecord] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # began with lockdep already off
    boots: list[BootRecord] = field(default_factory=list)
    vms: dict[str, str] = field(default_factory=dict)  # test -> the VM it ran in
    durations: dict[str, float] = field(default_factory=dict)  # test -> seconds, all phases
    # test -> its facts for reports: "topology", "path" (KernelCI's), "xfail" (the reason)
    tests: dict[str, dict[str, str]] = field(default_factory=dict)
    # what chose the tests (paths, -k, -m, --topology, ...): testbed ab checks two runs share it
    selection: list[str] = field(default_factory=list)

    def describe(self, nodeid: str, **facts: str) -> None:
        self.tests.setdefault(nodeid, {}).update(facts)

    def outcome(self, nodeid: str, when: str, outcome: str, xfail: bool, seconds: float = 0.0) -> None:
        """Fold one phase's report into the test's outcome (the worst phase wins)."""
        self.durations[nodeid] = round(self.durations.get(nodeid, 0.0) + seconds, 3)
        if when != "call" and outcome == "failed":
            value = "error" if when == "setup" else "failed"
        elif xfail:
            value = "xfailed" if outcome == "skipped" else "xpassed"
        elif when == "call" or outcome == "skipped":
            value = outcome
        else:
            return
        old = self.outcomes.get(nodeid)
        if old is None or SEVERITY.index(value) < SEVERITY.index(old):
            self.outcomes[nodeid] = value

    def boot(
        self,
        topology: str,
        vm: str,
        bzimage: Path | None,
        accel: str,
        fingerprint: Path | None = None,
        kernel_config: str | None = None,
        results: Path | None = None,
        fingerprint_digest: str | None = None,
    ) -> None:
        """One VM's boot; `fingerprint` is recorded relative to `results` (run.json's directory)
        when it lies there, so the record resolves wherever the results are copied."""
        kernel: dict[str, object] = {}
        manifest = read_manifest(bzimage.parent) if bzimage else None
        if manifest is not None:
            kernel = {
                "key": manifest.key,
                "release": manifest.release,
                "config_set": manifest.config_set,
                "patches": list(manifest.patches),
                "source_tree": manifest.source_tree,
                "source": manifest.source,
            }
            kernel["base_fixes"] = [{"name": a.get("name"), "why": a.get("why")} for a in manifest.applied_fixes]
        fp = None
        if fingerprint is not None:
            inside = results is not None and fingerprint.is_relative_to(results)
            fp = str(fingerprint.relative_to(results) if inside and results else fingerprint)
        self.boots.append(BootRecord(topology, vm, str(bzimage), kernel, accel, fp, kernel_config, fingerprint_digest))

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / RUN_FILE
        doc = {
            "schema": SCHEMA,
            "qemu": qemu_version(),
            "outcomes": {plain(k): v for k, v in self.outcomes.items()},
            "splats": [asdict(s) | {"where": plain(s.where)} for s in self.splats],
            "unchecked": [plain(n) for n in self.unchecked],
            "boots": [asdict(b) for b in self.boots],
            "vms": {plain(k): v for k, v in self.vms.items()},
            "durations": {plain(k): v for k, v in self.durations.items()},
            "tests": {plain(k): v for k, v in self.tests.items()},
            "selection": self.selection,
        }
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        log.debug("wrote %s (%d outcomes, %d splats)", path, len(self.outcomes), len(self.splats))
        return path
