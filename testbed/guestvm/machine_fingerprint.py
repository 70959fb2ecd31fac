"""A fingerprint of every booted VM: what the guest actually saw, and what the host ran it with.

Read once after boot and stored beside the VM's console log (results/vm/<vm>/fingerprint.json);
run.json points at its copy in the run's results, JUnit names its digest. A red result on
another machine can then be told apart from a mis-rendered topology: the PCI tree with IDs
and BDFs, IOMMU groups, every port's ACS capability and control bits, BAR addresses and sizes,
the CPU vendor and family the guest sees, the kernel release and config hash; QEMU's version,
the accelerator and the machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..kernel.artifact import read_manifest
from ..vm.qemu import qemu_version

if TYPE_CHECKING:
    from ..topology import Layout, Topology
    from .guest import GuestVM

log = logging.getLogger(__name__)

FILE = "fingerprint.json"


@dataclass(frozen=True)
class Fingerprint:
    path: Path
    digest: str  # short hash of the whole document: equal digests, equal machines


def _machine_option(argv: list[str]) -> str:
    return next((argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "-machine"), "")


def _kernel(bzimage: Path | None) -> dict[str, Any]:
    if bzimage is None:
        return {}
    out: dict[str, Any] = {"bzimage": str(bzimage)}
    manifest = read_manifest(bzimage.parent)
    if manifest is not None:
        out |= {
            "key": manifest.key,
            "release": manifest.release,
            "config_set": manifest.config_set,
            "patches": list(manifest.patches),
        }
        out["base_fixes"] = [a.get("name") for a in manifest.applied_fixes]
    config = bzimage.parent / ".config"
    if config.is_file():
        out["config_sha256"] = hashlib.sha256(config.read_bytes()).hexdigest()[:16]
    return out


def take(vm: GuestVM) -> Fingerprint:
    """Read the guest's side, add the host's, write it beside the console log."""
    guest = vm.agent("fingerprint", "read")
    plan = vm.plan
    doc = {
        "topology": vm.topology.name,
        "vm": plan.name,
        "host": {
            "qemu": qemu_version(),
            "accel": plan.accel.accel,
            **({"tcg_thread": plan.runtime.tcg_thread} if plan.accel.accel == "tcg" else {}),
            "machine": _machine_option(plan.argv),
            "kernel": _kernel(plan.runtime.kernel),
        },
        "guest": guest,
    }
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    path = plan.run_dir / FILE
    path.write_text(text)
    digest = digest_of(doc)
    log.debug("fingerprint of %s: %s (%s)", plan.name, digest, path)
    return Fingerprint(path, digest)


def digest_of(doc: dict[str, Any]) -> str:
    """The short hash that names a machine: equal for two boots of the same one."""
    return hashlib.sha256(json.dumps(_stable(doc), sort_keys=True).encode()).hexdigest()[:12]


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint without what differs between two boots of the same machine."""
    out = {k: v for k, v in doc.items() if k != "vm"}
    host = dict(out.get("host", {}))
    host["kernel"] = {k: v for k, v in host.get("kernel", {}).items() if k != "bzimage"}
    host.pop("tcg_thread", None)  # how QEMU ran the vCPUs, not which machine they are
    out["host"] = host
    return out


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one line per difference, for testbed ab."""
    out: list[str] = []
    ha, hb = a.get("host", {}), b.get("host", {})
    for key in ("qemu", "accel", "tcg_thread", "machine"):
        # a TCG fingerprint from before tcg_thread was recorded ran a thread per vCPU
        default = "multi" if key == "tcg_thread" else None
        va = ha.get(key, default if ha.get("accel") == "tcg" else None)
        vb = hb.get(key, default if hb.get("accel") == "tcg" else None)
        if va != vb:
            out.append(f"host {key}: {va} -> {vb}")
    ka, kb = ha.get("kernel", {}), hb.get("kernel", {})
    for key in ("release", "config_set", "config_sha256", "patches", "base_fixes"):
        if ka.get(key) != kb.get(key):
            out.append(f"kernel {key}: {ka.get(key)} -> {kb.get(key)}")
    ga, gb = a.get("guest", {}), b.get("guest", {})
    if ga.get("cpu") != gb.get("cpu"):
        out.append(f"guest CPU: {ga.get('cpu')} -> {gb.get('cpu')}")
    if ga.get("iommus") != gb.get("iommus"):
        out.append(f"IOMMUs: {ga.get('iommus')} -> {gb.get('iommus')}")
    da = {d["bdf"]: d for d in ga.get("pci", [])}
    db = {d["bdf"]: d for d in gb.get("pci", [])}
    for bdf in sorted(set(da) | set(db)):
        if bdf not in db:
            out.append(f"{bdf} ({da[bdf]['id']}): gone")
        elif bdf not in da:
            out.append(f"{bdf} ({db[bdf]['id']}): new")
        else:
            for key in ("id", "subsystem", "iommu_group", "bars", "acs", "driver"):
                if da[bdf].get(key) != db[bdf].get(key):
                    out.append(f"{bdf} {key}: {da[bdf].get(key)} -> {db[bdf].get(key)}")
    return out


ACS_REDIRECT = 0x4 | 0x8  # PCI_ACS_RR | PCI_ACS_CR: what pci_p2pdma checks on the path


def model_mismatches(doc: dict[str, Any], topo: Topology, layout: Layout) -> list[str]:
    """Where the guest differs from what the verdict oracle assumed: a port's ACS redirect
    (as the kernel set it: on under an IOMMU, cleared by disable_acs_redir) and the CPU
    vendor and family. Empty: the oracle's inputs are verified, not assumed."""
    from ..topology.oracle import acs_redirect_ports

    out = []
    guest = doc.get("guest", {})
    seen = {d["bdf"]: d for d in guest.get("pci", [])}
    redirect = acs_redirect_ports(topo, layout)
    for p in layout.placements.values():
        if not p.is_bridge:
            continue
        dev = seen.get(p.bdf)
        if dev is None:
            out.append(f"{p.id}: no device at {p.bdf} in the guest")
            continue
        ctrl = int(dev["acs"]["ctrl"], 16) if dev.get("acs") else 0
        if bool(ctrl & ACS_REDIRECT) != (p.id in redirect):
            out.append(
                f"{p.id} ({p.bdf}): ACS redirect {'on' if ctrl & ACS_REDIRECT else 'off'} in the guest "
                f"(ACS control {ctrl:#06x}), the oracle assumed {'on' if p.id in redirect else 'off'}"
            )
    cpu, want = guest.get("cpu", {}), topo.machine.cpu
    if (cpu.get("vendor"), cpu.get("family")) != (want.vendor, want.family):
        out.append(
            f"CPU: the guest sees {cpu.get('vendor')} family {cpu.get('family'):#x}, "
            f"the oracle assumed {want.vendor} family {want.family:#x}"
        )
    return out
