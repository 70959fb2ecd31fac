"""The ioctls of /dev/p2pdma_probe (testbed/probe/kmod/p2pdma_probe.h), for the guest's python3.

Struct layouts follow the header field by field (x86_64, natural alignment, no implicit
padding): tests/unit/test_probe.py compiles the header and checks every size and offset."""

import struct

MAX_SG = 8  # P2PDMA_PROBE_MAX_SG
SG_PARTS = ("index", "addr", "len", "phys")  # struct p2pdma_probe_sg

# (field, format) in header order: the unit test checks every offset against the C compiler
FIELDS = {
    "census": (("pairs", "I"), ("map_type_observed", "I")),
    "import": (
        ("fd", "i"),
        ("flags", "I"),
        ("client", "16s"),
        ("provider", "16s"),
        ("bar", "I"),
        ("defer_unmap_ms", "I"),
        ("offset", "Q"),
        ("name", "64s"),
        ("id", "I"),
        ("attach_error", "i"),
        ("map_error", "i"),
        ("map_type", "I"),
        ("branch", "I"),
        ("nents", "I"),
        ("dma_addr", "Q"),
        ("dma_len", "Q"),
        ("bus_addr", "Q"),
        ("phys_addr", "Q"),
        ("iova_phys", "Q"),
        ("map_type_name", "32s"),
        ("branch_observed", "I"),
        ("dma_bits", "I"),
        ("sg_picked", "I"),
        *((f"sg_pick[{i}]", "I") for i in range(MAX_SG)),
        ("sg_count", "I"),
        *((f"sg[{i}].{part}", "Q") for i in range(MAX_SG) for part in SG_PARTS),
    ),
    "state": (
        ("id", "I"),
        ("error", "i"),
        ("mapped", "I"),
        ("invalidations", "I"),
        ("invalidate_seq", "Q"),
        ("removed_seq", "Q"),
        ("dma_addr", "Q"),
        ("unbind_seq", "Q"),
        ("unbound_seq", "Q"),
        ("name", "64s"),
        ("invalidate_ns", "Q"),
        ("unmap_ns", "Q"),
        ("unmap_seq", "Q"),
        ("quiet", "I"),
        ("pad", "I"),
    ),
    "dma": (("client", "16s"), ("addr", "Q"), ("pattern", "Q"), ("len", "I"), ("error", "i"), ("name", "64s")),
    "iova": (
        ("client", "16s"),
        ("provider", "16s"),
        ("bar", "I"),
        ("len", "I"),
        ("offset", "Q"),
        ("pattern", "Q"),
        ("after_unlink", "Q"),
        ("repeats", "I"),
        ("failed", "I"),
        ("used_iova", "I"),
        ("pad", "I"),
        ("iova", "Q"),
        ("map_type", "I"),
        ("pad2", "I"),
        ("map_type_name", "32s"),
    ),
    "watch": (
        ("client", "16s"),
        ("provider", "16s"),
        ("name", "64s"),
        ("stop", "I"),
        ("calls", "I"),
        ("map_type", "I"),
        ("iova_links", "I"),
        ("phys_maps", "I"),
        ("pad", "I"),
        ("map_type_name", "32s"),
    ),
}


def _layout(name: str) -> struct.Struct:
    return struct.Struct("<" + "".join(fmt for _, fmt in FIELDS[name]))


def pack(name: str, given: dict) -> tuple:
    """The values of struct `name` in header order: `given` by field name, zero for the rest."""
    return tuple(given.get(field, b"" if fmt.endswith("s") else 0) for field, fmt in FIELDS[name])


def unpack(name: str, raw: tuple) -> dict:
    """The struct's fields, as an ioctl handed them back, by name."""
    return dict(zip((field for field, _ in FIELDS[name]), raw, strict=True))


def offsets(name: str) -> dict:
    """Each field's offset, as the packed layout places it."""
    out, fmt = {}, "<"
    for field, code in FIELDS[name]:
        out[field] = struct.calcsize(fmt)
        fmt += code
    return out


CENSUS, IMPORT, STATE, DMA, IOVA, WATCH = (_layout(n) for n in ("census", "import", "state", "dma", "iova", "watch"))

IOC_TYPE = 0xB7
IMPORT_HOLD = 0x1
IMPORT_NO_P2P = 0x2
IMPORT_NO_INVALIDATE = 0x4
MAP_UNOBSERVED = 0xFFFFFFFF  # map types travel by name: the module's table is the tree's own enum
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
P2PDMA_PROBE_WATCH = _iowr(8, WATCH.size)
