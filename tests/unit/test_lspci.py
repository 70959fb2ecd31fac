"""lspci -vvv read back into the fingerprint's terms (a recorded two-switch-iommu guest)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from testbed.guestvm import lspci

HERE = Path(__file__).resolve().parent.parent / "logs" / "lspci"
TEXT = (HERE / "two-switch-iommu.lspci").read_text()
PCI = json.loads((HERE / "two-switch-iommu.fingerprint.json").read_text())["pci"]


def test_parse_reads_ids_bars_acs_groups_and_drivers():
    devices = lspci.parse(TEXT)
    port = devices["0000:00:02.0"]
    assert port.id == "1b36:000c" and port.driver == "pcieport" and port.iommu_group == 1
    # ACSCap SV TB RR CR UF DT+ ; ACSCtl SV RR CR UF (Linux's redirect under an IOMMU)
    assert port.acs == {"cap": 0x5F, "ctrl": 0x1D}
    nvme = devices["0000:03:00.0"]
    assert nvme.bars == {0: (0xFE800000, 16 << 10), 2: (0xF4000000, 64 << 20)}
    assert devices["0000:00:1e.0"].bars[lspci.ROM_INDEX] == (0xFEA00000, 256 << 10)
    assert devices["0000:00:1c.0"].bars[0] == (0xC0C0, 32)  # I/O ports
    assert devices["0000:01:00.0"].acs == {}  # the switch's upstream port has no ACS capability


def test_the_recorded_fingerprint_agrees_with_lspci():
    assert lspci.differences(PCI, lspci.parse(TEXT)) == []


def test_every_kind_of_difference_is_reported():
    pci = copy.deepcopy(PCI)
    by_bdf = {d["bdf"]: d for d in pci}
    by_bdf["0000:00:02.0"]["acs"]["ctrl"] = "0x0000"
    by_bdf["0000:03:00.0"]["bars"][1]["size"] = 32 << 20
    by_bdf["0000:03:00.0"]["iommu_group"] = 99
    by_bdf["0000:03:00.0"]["driver"] = None
    pci.remove(by_bdf["0000:00:1f.3"])
    found = lspci.differences(pci, lspci.parse(TEXT))
    assert found == [
        "0000:00:1f.3: only in lspci",
        "0000:00:02.0: ACS cap 0x005f, ctrl 0x0000 vs lspci cap 0x005f, ctrl 0x001d",
        "0000:03:00.0: BARs 0: 0xfe800000+0x4000, 2: 0xf4000000+0x2000000 vs lspci 0: 0xfe800000+0x4000, "
        "2: 0xf4000000+0x4000000",
        "0000:03:00.0: IOMMU group 99 vs lspci 8",
        "0000:03:00.0: driver None vs lspci nvme",
    ]
