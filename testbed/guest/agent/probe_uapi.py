"""The ioctls of /dev/p2pdma_probe (testbed/probe/kmod/p2pdma_probe.h), for the guest's python3.

Struct layouts follow the header field by field (x86_64, natural alignment, no implicit
padding: tests/unit/test_probe_uapi.py checks the sizes against the header)."""

import struct

CENSUS = struct.Struct("<II")
IMPORT = struct.Struct("<iI16s16sIIQ64sIiiIIIQQQQQ")
STATE = struct.Struct("<IiIIQQQ64s")
DMA = struct.Struct("<16sQQIi64s")
IOVA = struct.Struct("<16s16sIIQQQIIIIQ")

IOC_TYPE = 0xB7
IMPORT_HOLD = 0x1
MAP_UNOBSERVED = 0xFFFFFFFF
MAP_TYPES = {0: "UNKNOWN", 1: "NONE", 2: "NOT_SUPPORTED", 3: "BUS_ADDR", 4: "THRU_HOST_BRIDGE",
             MAP_UNOBSERVED: "unobserved"}
BRANCHES = ("none", "bus_addr", "iova", "phys", "unexplained")


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (IOC_TYPE << 8) | nr


P2PDMA_PROBE_CENSUS = _iowr(1, CENSUS.size)
P2PDMA_PROBE_IMPORT = _iowr(2, IMPORT.size)
P2PDMA_PROBE_STATE = _iowr(3, STATE.size)
P2PDMA_PROBE_REMAP = _iowr(4, STATE.size)
P2PDMA_PROBE_RELEASE = _iowr(5, STATE.size)
P2PDMA_PROBE_DMA = _iowr(6, DMA.size)
P2PDMA_PROBE_IOVA = _iowr(7, IOVA.size)


def cstr(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode()
