"""The VM fingerprint: ACS parsed from config space, and what testbed ab says when two differ."""

from __future__ import annotations

import copy
import json
import struct
import sys
from pathlib import Path

from testbed.guestvm.machine_fingerprint import _stable, differences

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "in_guest"))
import fingerprint as guest_fingerprint  # noqa: E402

REAL = Path(__file__).resolve().parent.parent / "logs" / "fingerprint" / "two-switch.json"


def _config(*caps: tuple[int, int, bytes]) -> bytes:
    """4 KiB of config space with extended capabilities (offset, id, body) chained in order."""
    data = bytearray(4096)
    for i, (offset, cap_id, body) in enumerate(caps):
        nxt = caps[i + 1][0] if i + 1 < len(caps) else 0
        struct.pack_into("<I", data, offset, cap_id | (1 << 16) | (nxt << 20))
        data[offset + 4 : offset + 4 + len(body)] = body
    return bytes(data)


def test_acs_found_behind_other_capabilities():
    config = _config((0x100, 0x0001, b"\0" * 8), (0x148, 0x000D, struct.pack("<HH", 0x5F, 0x1D)))
    assert guest_fingerprint.acs(config) == {"offset": 0x148, "cap": "0x005f", "ctrl": "0x001d"}


def test_no_acs_and_broken_chains_end():
    assert guest_fingerprint.acs(_config((0x100, 0x0001, b""))) is None
    assert guest_fingerprint.acs(b"\0" * 256) is None  # conventional PCI: no extended space
    loop = bytearray(_config((0x100, 0x0001, b"")))
    struct.pack_into("<I", loop, 0x100, 0x0001 | (0x100 << 20))  # points at itself
    assert guest_fingerprint.acs(bytes(loop)) is None


def test_real_fingerprint_has_what_a_result_needs():
    doc = json.loads(REAL.read_text())
    assert doc["host"]["machine"] == "q35" and doc["host"]["kernel"]["config_sha256"]
    assert doc["guest"]["cpu"]["vendor"] and doc["guest"]["kernel"]["release"].startswith("7.2")
    ports = [d for d in doc["guest"]["pci"] if d["acs"] is not None]
    assert ports and all(d["bars"] is not None for d in doc["guest"]["pci"])
    assert differences(doc, doc) == []


def test_differences_name_what_changed():
    a = json.loads(REAL.read_text())
    b = copy.deepcopy(a)
    port = next(d for d in b["guest"]["pci"] if d["acs"] is not None)
    port["acs"]["ctrl"] = "0x001d"
    b["host"]["accel"] = "kvm"
    b["guest"]["pci"] = [d for d in b["guest"]["pci"] if d["bdf"] != "0000:00:1c.0"]
    lines = differences(a, b)
    assert "host accel: tcg -> kvm" in lines
    assert any(line.startswith(f"{port['bdf']} acs:") and "0x001d" in line for line in lines)
    assert any(line.startswith("0000:00:1c.0") and line.endswith("gone") for line in lines)


def test_digest_ignores_what_differs_between_two_boots():
    a = json.loads(REAL.read_text())
    b = copy.deepcopy(a)
    b["vm"] = "two-switch-2"
    b["host"]["kernel"]["bzimage"] = "/elsewhere/bzImage"
    b["host"]["tcg_thread"] = "single"  # how QEMU ran the vCPUs: the same machine
    assert _stable(a) == _stable(b)
    assert differences(a, b) == ["host tcg_thread: multi -> single"]  # recorded before the key: multi
    b["host"]["tcg_thread"] = "multi"
    assert differences(a, b) == []


def test_the_model_is_checked_against_what_the_guest_saw():
    from testbed.guestvm.machine_fingerprint import model_mismatches
    from testbed.topology import build_layout, load_topology

    topo = load_topology("two-switch")
    layout = build_layout(topo)
    doc = json.loads(REAL.read_text())
    assert model_mismatches(doc, topo, layout) == []  # recorded from a real two-switch guest
    wrong = copy.deepcopy(doc)
    port = next(d for d in wrong["guest"]["pci"] if d["bdf"] == layout["rp1"].bdf)
    port["acs"]["ctrl"] = "0x001d"  # redirect on where the kernel (no IOMMU) leaves it off
    wrong["guest"]["cpu"]["family"] = 0x19
    problems = model_mismatches(wrong, topo, layout)
    assert any(p.startswith("rp1 (") and "ACS redirect on in the guest" in p for p in problems), problems
    assert any(p.startswith("CPU: the guest sees AuthenticAMD family 0x19") for p in problems), problems
