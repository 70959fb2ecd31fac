"""`lspci -D -vvv -nn` read back into the fingerprint's terms, to check the fingerprint against
the tool a kernel developer would trust: IDs, BARs, IOMMU groups, ACS capability and control bits,
and the bound driver, per BDF."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# lspci's names of the ACS capability/control bits, in register order (PCI_ACS_SV ... PCI_ACS_DT)
ACS_BITS = ("SrcValid", "TransBlk", "ReqRedir", "CmpltRedir", "UpstreamFwd", "EgressCtrl", "DirectTrans")
ROM_INDEX = 6  # sysfs `resource` line of the expansion ROM
_HEAD = re.compile(r"^(?P<bdf>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) .*\[(?P<id>[0-9a-f]{4}:[0-9a-f]{4})\]")
_REGION = re.compile(
    r"^\s+Region (?P<index>\d+): (?:Memory at (?P<mem>[0-9a-f]+)|I/O ports at (?P<io>[0-9a-f]+))"
    r".*\[size=(?P<size>\d+[KMG]?)\]"
)
_ROM = re.compile(r"^\s+Expansion ROM at (?P<start>[0-9a-f]+).*\[size=(?P<size>\d+[KMG]?)\]")
_ACS = re.compile(r"^\s+ACS(?P<which>Cap|Ctl):\s+(?P<bits>.*)$")
_GROUP = re.compile(r"^\s+IOMMU group: (?P<group>\d+)")
_DRIVER = re.compile(r"^\s+Kernel driver in use: (?P<driver>\S+)")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@dataclass
class LspciDevice:
    bdf: str
    id: str
    bars: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (start, size)
    acs: dict[str, int] = field(default_factory=dict)  # "cap"/"ctrl" -> register value
    iommu_group: int | None = None
    driver: str | None = None


def _size(text: str) -> int:
    return int(text.rstrip("KMG")) * _UNITS[text[-1] if text[-1] in "KMG" else ""]


def _acs_value(bits: str) -> int:
    flags = dict(re.findall(r"(\w+)([+-])", bits))
    return sum(1 << n for n, name in enumerate(ACS_BITS) if flags.get(name) == "+")


def parse(text: str) -> dict[str, LspciDevice]:
    devices: dict[str, LspciDevice] = {}
    current: LspciDevice | None = None
    for line in text.splitlines():
        if head := _HEAD.match(line):
            current = devices.setdefault(head["bdf"], LspciDevice(head["bdf"], head["id"]))
        elif current is None:
            continue
        elif region := _REGION.match(line):
            start = int(region["mem"] or region["io"], 16)
            current.bars[int(region["index"])] = (start, _size(region["size"]))
        elif rom := _ROM.match(line):
            current.bars[ROM_INDEX] = (int(rom["start"], 16), _size(rom["size"]))
        elif acs := _ACS.match(line):
            current.acs["cap" if acs["which"] == "Cap" else "ctrl"] = _acs_value(acs["bits"])
        elif group := _GROUP.match(line):
            current.iommu_group = int(group["group"])
        elif driver := _DRIVER.match(line):
            current.driver = driver["driver"]
    return devices


def differences(fingerprint_pci: list[dict[str, Any]], lspci: dict[str, LspciDevice]) -> list[str]:
    """Where the fingerprint's PCI part and lspci disagree, one line each (empty: they agree)."""
    out = []
    ours = {d["bdf"]: d for d in fingerprint_pci}
    for bdf in sorted(ours.keys() ^ lspci.keys()):
        out.append(f"{bdf}: only in {'the fingerprint' if bdf in ours else 'lspci'}")
    for bdf in sorted(ours.keys() & lspci.keys()):
        mine, theirs = ours[bdf], lspci[bdf]
        if mine["id"] != theirs.id:
            out.append(f"{bdf}: id {mine['id']} vs lspci {theirs.id}")
        bars = {b["index"]: (int(b["start"], 16), b["size"]) for b in mine["bars"]}
        if bars != theirs.bars:
            out.append(f"{bdf}: BARs {_bars(bars)} vs lspci {_bars(theirs.bars)}")
        acs = {k: int(v, 16) for k, v in (mine["acs"] or {}).items() if k in ("cap", "ctrl")}
        if acs != theirs.acs:
            out.append(f"{bdf}: ACS {_acs(acs)} vs lspci {_acs(theirs.acs)}")
        if mine["iommu_group"] != theirs.iommu_group:
            out.append(f"{bdf}: IOMMU group {mine['iommu_group']} vs lspci {theirs.iommu_group}")
        if mine["driver"] != theirs.driver:
            out.append(f"{bdf}: driver {mine['driver']} vs lspci {theirs.driver}")
    return out


def _bars(bars: dict[int, tuple[int, int]]) -> str:
    return ", ".join(f"{i}: {start:#x}+{size:#x}" for i, (start, size) in sorted(bars.items())) or "none"


def _acs(acs: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:#06x}" for k, v in sorted(acs.items())) or "none"
