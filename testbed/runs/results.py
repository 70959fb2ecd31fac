"""One pytest run's results directory, read back: run.json, verdicts.tsv, census.tsv."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .record import RUN_FILE, SplatRecord

VerdictKey = tuple[str, str, str, str]  # topology, provider, client, direction
CensusKey = tuple[str, str, str, str]  # topology, part, provider, client


@dataclass(frozen=True)
class RunResults:
    directory: Path
    outcomes: dict[str, str]
    splats: tuple[SplatRecord, ...]  # as run.json recorded them
    unchecked: tuple[str, ...]
    verdicts: dict[VerdictKey, tuple[str, str, str]]  # (map_type, observed, expected)
    census: dict[CensusKey, tuple[str, str]]  # (the kernel's answer, expected)
    kernels: tuple[str, ...]  # "release (key, config set, patches)" per distinct kernel booted
    qemu: str
    accel: tuple[str, ...]
    fingerprints: dict[str, Path]  # topology -> the fingerprint of its first VM
    boot_kernels: tuple[dict[str, Any], ...] = ()  # each boot's kernel record (its manifest's fields)
    vms: dict[str, str] = field(default_factory=dict)  # test -> the VM it ran in
    tests: dict[str, dict[str, str]] = field(default_factory=dict)  # test -> topology, KernelCI path, xfail
    durations: dict[str, float] = field(default_factory=dict)  # test -> seconds, all phases
    selection: tuple[str, ...] = ()  # pytest's arguments but each side's own (empty: not recorded)

    def splat_counts(self, new_only: bool = False) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.splats:
            if not (new_only and s.known):
                out[s.signature] = out.get(s.signature, 0) + 1
        return out


def _tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _kernel_line(kernel: dict) -> str:
    if not kernel:
        return "a bzImage outside the kernel cache"
    patches = kernel.get("patches") or []
    series = f", {len(patches)} patch(es): {', '.join(patches)}" if patches else ""
    return f"{kernel.get('release')} (key {kernel.get('key')}, {kernel.get('config_set')}{series})"


def load_results(directory: Path) -> RunResults:
    run = directory / RUN_FILE
    if not run.is_file():
        raise ConfigError(f"{directory}: no {RUN_FILE} (not a results/pytest/<run> directory of this testbed?)")
    try:
        doc = json.loads(run.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{run}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    verdicts = {
        (r["topology"], r["provider"], r["client"], r["direction"]): (r["map_type"], r["observed"], r["expected"])
        for r in _tsv(directory / "verdicts.tsv")
    }
    census = {
        (r["topology"], r["part"], r["provider"], r["client"]): (r["kernel"], r["expected"])
        for r in _tsv(directory / "census.tsv")
    }
    boots = doc.get("boots", [])
    return RunResults(
        directory=directory,
        outcomes=dict(doc.get("outcomes", {})),
        splats=tuple(
            SplatRecord(s["signature"], s["kind"], s["where"], s.get("known"), s.get("console", ""))
            for s in doc.get("splats", [])
        ),
        unchecked=tuple(doc.get("unchecked", [])),
        verdicts=verdicts,
        census=census,
        kernels=tuple(dict.fromkeys(_kernel_line(b.get("kernel") or {}) for b in boots)),
        qemu=doc.get("qemu", ""),
        accel=tuple(dict.fromkeys(b.get("accel", "") for b in boots)),
        fingerprints=_fingerprints(directory, boots),
        boot_kernels=tuple(b.get("kernel") or {} for b in boots),
        vms=dict(doc.get("vms", {})),
        tests={k: dict(v) for k, v in doc.get("tests", {}).items()},
        durations=dict(doc.get("durations", {})),
        selection=tuple(doc.get("selection", [])),
    )


def _fingerprints(directory: Path, boots: list[dict]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for boot in boots:
        path = boot.get("fingerprint")
        if path and boot["topology"] not in out:
            found = directory / path  # relative to run.json; older runs: absolute, or moved with the run
            found = found if found.is_file() else Path(path)
            found = found if found.is_file() else directory / "fingerprints" / Path(path).name
            if found.is_file():
                out[boot["topology"]] = found
    return out
