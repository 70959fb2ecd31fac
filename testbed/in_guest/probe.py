"""The kernel-side probe from the guest: load it, bind devices, run its ioctls (stdlib only).

    python3 probe.py load   '{"ko": PATH, "params": {"edu_dma_bits": 64}}'
    python3 probe.py bind   '{"bdf": BDF, "driver": "p2pdma_probe"|"vfio-pci"|null}'
    python3 probe.py census '{}'
    python3 probe.py branch '{"provider": BDF, "bar": 2, "clients": [BDF, ...]}'
    python3 probe.py dmaloop '{"client": BDF, "addr": X}'  (a DMA in use, until a line on stdin)
    python3 probe.py remaploop '{"id": N}'  (a held import mapped again and again, until a line on stdin)
    python3 probe.py watch  '{"client": BDF, "provider": BDF, "stop": false|true, "name": S}'
    python3 probe.py iova   '{"client": BDF, "provider": BDF, "bar": 2, "offset": O,
                              "pattern": HEX, "after_unlink": HEX, "repeats": N}'

Every command prints one JSON document; "ktap" holds the kernel log records the module wrote
while it ran (read from /dev/kmsg after a seek to its end: no line counting, no ring wrap).
Long-lived imports (held mappings, revoke) go through `vfio.py serve` (op probe_*).
"""

import ctypes
import errno
import fcntl
import os
import sys
import time

import jsonlite
import probe_uapi as P
from common import BIND_TIMEOUT_S, bind_driver, emit, error_of, kmsg_records, signalled
from common import driver as _driver
from edu import BUFFER, CMD_RUN, CMD_TO_BUS, REG_DMA_CMD, REG_DMA_CNT, REG_DMA_DST, DmaNotIssued, EduMmio, dma_registers

DEVICE = "/dev/p2pdma_probe"


class Kmsg:
    """The kernel log from now on: open /dev/kmsg, seek to its end, read what follows."""

    def __init__(self):
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def read(self) -> list:
        lines = []
        for _, text in kmsg_records(self.fd):
            # overwritten before we read it: say so
            lines.append(text if text is not None else "testbed: kernel log records lost (ring buffer wrapped)")
        os.close(self.fd)
        return lines


def load(args: dict) -> dict:
    if os.path.exists(DEVICE):
        return {"ok": True, "loaded": "already"}
    params = " ".join(f"{k}={v}" for k, v in args.get("params", {}).items())
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(args["ko"], os.O_RDONLY | os.O_CLOEXEC)
    kmsg = Kmsg()
    try:
        if libc.syscall(313, fd, params.encode(), 0) != 0:  # finit_module(2) on x86_64
            err = ctypes.get_errno()
            return {"ok": False, "errno": err, "error": errno.errorcode.get(err, str(err)), "log": kmsg.read()}
    finally:
        os.close(fd)
    deadline = time.monotonic() + BIND_TIMEOUT_S
    while not os.path.exists(DEVICE) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"ok": os.path.exists(DEVICE), "loaded": "now", "log": kmsg.read()}


FAIL_NTH = "/proc/thread-self/fail-nth"
# what the nth call may fail: slab allocations and page allocations (IOMMU page tables), of any
# order, sleeping ones included (both default to leaving those alone)
FAULT_KNOBS = {
    "/sys/kernel/debug/failslab/ignore-gfp-wait": "N",
    "/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait": "N",
    "/sys/kernel/debug/fail_page_alloc/min-order": "0",
}


def ioctl(request: int, layout, values: tuple) -> tuple:
    buf = bytearray(layout.pack(*values))
    fd = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, buf)
    finally:
        os.close(fd)
    return layout.unpack(buf)


def ioctl_failing_nth(request: int, layout, values: tuple, nth: int) -> tuple[tuple, int, bool]:
    """The ioctl with the kernel's fault injection armed for this thread: its nth slab or page
    allocation fails (failslab, fail_page_alloc). (fields, -errno of the ioctl or 0, whether the
    fault was injected: False once the call makes fewer than nth allocations). Everything is
    opened first, so the write that arms it is followed by the ioctl alone."""
    for knob, value in FAULT_KNOBS.items():
        with open(knob, "w") as f:
            f.write(value)
    buf = bytearray(layout.pack(*values))
    fd = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)
    arm = os.open(FAIL_NTH, os.O_RDWR | os.O_CLOEXEC)
    error = 0
    try:
        os.write(arm, str(nth).encode())
        try:
            fcntl.ioctl(fd, request, buf)
        except OSError as exc:
            error = -exc.errno
        left = int(os.pread(arm, 32, 0).decode().strip() or 0)  # not reached yet: still > 0
    finally:
        os.write(arm, b"0")
        os.close(arm)
        os.close(fd)
    return layout.unpack(buf), error, left == 0


def census(args: dict) -> dict:
    kmsg = Kmsg()
    pairs, observed = ioctl(P.P2PDMA_PROBE_CENSUS, P.CENSUS, (0, 0))
    return {"ok": True, "pairs": pairs, "map_type_observed": bool(observed), "ktap": kmsg.read()}


def import_once(
    fd: int,
    client: str,
    provider: str,
    bar: int,
    offset: int,
    name: str,
    hold: bool = False,
    defer_unmap_ms: int = 0,
    importer: str = "revocable",
    dma_bits: int = 0,
    fail_nth: int = 0,
    sg_pick: tuple[int, ...] = (),
) -> dict:
    """`importer`: revocable (a dynamic peer2peer importer with invalidate_mappings), no-p2p
    (without allow_peer2peer) or not-revocable (without invalidate_mappings). `dma_bits`: the
    client (an edu of the probe's) maps with its DMA mask narrowed to that many bits (a held
    import's later remaps use the module's mask). `fail_nth`: the kernel fails the call's nth
    slab or page allocation (ioctl_failing_nth). `sg_pick`: the indices of the mapping's
    entries to report (at most MAX_SG; none: the first MAX_SG)."""
    kind = {"revocable": 0, "no-p2p": P.IMPORT_NO_P2P, "not-revocable": P.IMPORT_NO_INVALIDATE}[importer]
    given = {
        "fd": fd,
        "flags": (P.IMPORT_HOLD if hold else 0) | kind,
        "client": client.encode(),
        "provider": provider.encode(),
        "bar": bar,
        "defer_unmap_ms": defer_unmap_ms,
        "offset": offset,
        "name": name.encode(),
        "dma_bits": dma_bits,
        "sg_picked": len(sg_pick),
        **{f"sg_pick[{i}]": index for i, index in enumerate(sg_pick)},
    }
    values = P.pack("import", given)
    if fail_nth:
        raw, error, injected = ioctl_failing_nth(P.P2PDMA_PROBE_IMPORT, P.IMPORT, values, fail_nth)
    else:
        raw, error, injected = ioctl(P.P2PDMA_PROBE_IMPORT, P.IMPORT, values), 0, False
    out = P.unpack("import", raw)
    entries = [{part: out[f"sg[{i}].{part}"] for part in P.SG_PARTS} for i in range(out["sg_count"])]
    return {
        "id": out["id"],
        "attach_error": out["attach_error"],
        "map_error": out["map_error"],
        "map_type": _cstr(out["map_type_name"]),  # the kernel's own name for out["map_type"]
        "branch": P.BRANCHES[out["branch"]],
        "branch_observed": bool(out["branch_observed"]),
        "nents": out["nents"],
        "dma_addr": out["dma_addr"],
        "dma_len": out["dma_len"],
        "bus_addr": out["bus_addr"],
        "phys_addr": out["phys_addr"],
        "iova_phys": out["iova_phys"],
        "entries": entries,  # those sg_pick names (or the first MAX_SG), each with its index
        "ioctl_error": error,  # with fail_nth: the ioctl itself failed (-errno)
        "injected": injected,  # with fail_nth: the nth allocation was reached and failed
    }


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def state(request: int, import_id: int, name: str, quiet: bool = False) -> dict:
    """`quiet`: the probe logs nothing (a loop would flood the console)."""
    out = ioctl(request, P.STATE, (import_id, 0, 0, 0, 0, 0, 0, 0, 0, name.encode(), 0, 0, 0, int(quiet), 0))
    return {
        "error": out[1],
        "mapped": bool(out[2]),
        "invalidations": out[3],
        "invalidate_seq": out[4],
        "removed_seq": out[5],
        "dma_addr": out[6],
        "unbind_seq": out[7],
        "unbound_seq": out[8],
        "invalidate_ns": out[10],
        "unmap_ns": out[11],
        "unmap_seq": out[12],
    }


def dma(client: str, addr: int, data: bytes, name: str, verify: bool = True) -> int:
    """The probe's edu writes `data` to `addr`; the probe's error (0: it saw the DMA finish).
    With `verify`, the device itself must show the DMA: a sentinel goes into edu's dst and
    count registers first (through resource0), and after the ioctl they must hold `addr` and
    the length, with the command "to the bus" and RUN clear. Raises DmaNotIssued otherwise."""
    regs = EduMmio(client) if verify else None
    try:
        if regs is not None:
            sentinel = 0xDEAD000 if addr != 0xDEAD000 else 0xBEEF000
            if regs.read32(REG_DMA_CMD) & CMD_RUN:
                raise DmaNotIssued(f"{client}'s edu is busy before the DMA: {dma_registers(regs)}")
            regs.write64(REG_DMA_DST, sentinel)
            regs.write64(REG_DMA_CNT, 0)
            if (regs.read64(REG_DMA_DST), regs.read64(REG_DMA_CNT)) != (sentinel, 0):
                raise DmaNotIssued(f"{client}'s edu did not take the sentinel: {dma_registers(regs)}")
        buf = ctypes.create_string_buffer(data, len(data))
        fields = (client.encode(), addr, ctypes.addressof(buf), len(data), 0, name.encode())
        error = ioctl(P.P2PDMA_PROBE_DMA, P.DMA, fields)[4]
        if regs is not None and error == 0:
            got = dma_registers(regs)
            ran = got["cmd"] & (CMD_RUN | CMD_TO_BUS) == CMD_TO_BUS
            if not ran or (got["src"], got["dst"], got["cnt"]) != (BUFFER, addr, len(data)):
                raise DmaNotIssued(
                    f"the probe says its edu wrote {len(data)} B to {addr:#x}, the device's registers "
                    f"say otherwise: { {k: hex(v) for k, v in got.items()} }"
                )
        return error
    finally:
        if regs is not None:
            regs.close()


# devices the probe's driver can own as import clients (edu, ivshmem): vendor, device
PROBE_CLIENTS = {("0x1234", "0x11e8"), ("0x1af4", "0x1110")}


def _needs_owner(bdf: str, owner) -> bool:
    """The probe imports only for a client a kernel driver owns (no driver: nothing keeps
    vfio-pci from taking it mid-map; vfio-pci: userspace owns its DMA). Such an edu or ivshmem
    is lent to the probe's driver for the import."""
    if owner not in (None, "vfio-pci"):
        return False
    base = f"/sys/bus/pci/devices/{bdf}"
    with open(f"{base}/vendor") as v, open(f"{base}/device") as d:
        return (v.read().strip(), d.read().strip()) in PROBE_CLIENTS


def branch(args: dict) -> dict:
    """Export a BAR range through VFIO and import it on behalf of each client in turn."""
    import vfio  # the VFIO cdev/iommufd plumbing lives there

    provider = args["provider"]
    before = _driver(provider)
    session = vfio.Session()
    kmsg = Kmsg()
    results = {}
    try:
        session.op_open({"exporter": provider})
        length = args.get("length") or session.exporter.region(args["bar"])["size"]
        buf = session.op_export({"ranges": [[0, length]], "region": args["bar"]})
        for client in args["clients"]:
            name = f"branch_{provider}_{client}"
            owner = _driver(client)
            lend = _needs_owner(client, owner)
            if lend:
                bind_driver(client, "p2pdma_probe")
            try:
                results[client] = import_once(session.bufs[buf["buf"]], client, provider, args["bar"], 0, name)
            except OSError as exc:
                results[client] = error_of(exc)
            finally:
                if lend:
                    bind_driver(client, owner)
    finally:
        session.close()
        bind_driver(provider, before)  # the VM is shared: leave the provider as it was
    return {"ok": True, "results": results, "ktap": kmsg.read()}


def iova(args: dict) -> dict:
    pattern = bytes.fromhex(args["pattern"])
    after = bytes.fromhex(args["after_unlink"])
    pbuf = ctypes.create_string_buffer(pattern, len(pattern))
    abuf = ctypes.create_string_buffer(after, len(after))
    kmsg = Kmsg()
    out = ioctl(
        P.P2PDMA_PROBE_IOVA,
        P.IOVA,
        (
            args["client"].encode(),
            args["provider"].encode(),
            args["bar"],
            len(pattern),
            args["offset"],
            ctypes.addressof(pbuf),
            ctypes.addressof(abuf),
            args["repeats"],
            0,
            0,
            0,
            0,
            0,
            0,
            b"",
        ),
    )
    return {
        "ok": True,
        "failed": out[8],
        "used_iova": bool(out[9]),
        "iova": out[11],
        "map_type": _cstr(out[14]),
        "ktap": kmsg.read(),
    }


def dmaloop(args: dict) -> dict:
    """edu writes `addr` again and again until signalled: a mapping in use. With {"id": import,
    "after_revoke": N (default 1)} it stops by itself after N DMAs issued once that import was
    revoked (its invalidate_seq set): each of those is blocked and reported as a vIOMMU fault,
    and more would only use up the fault log's rate limit for the DMA the test checks next."""
    import pattern as pat

    watched, enough = args.get("id"), max(int(args.get("after_revoke", 1)), 1)
    count, errors, started, after = 0, {}, time.monotonic(), None
    emit({"looping": True})
    while not signalled() and time.monotonic() - started < args.get("limit", 120):
        if watched and after is None and state(P.P2PDMA_PROBE_STATE, watched, "dmaloop", quiet=True)["invalidate_seq"]:
            after = 0
        err = dma(args["client"], args["addr"], pat.pattern(count + 1, args.get("size", 256)), "dmaloop", verify=False)
        count += 1
        if err:
            errors[str(err)] = errors.get(str(err), 0) + 1
        if after is not None:
            after += 1
            if after >= enough:
                break
    seconds = round(time.monotonic() - started, 1)
    return {"ok": True, "dmas": count, "errors": errors, "after_revoke": after, "seconds": seconds}


def remaploop(args: dict) -> dict:
    """Map a held import again and again (P2PDMA_PROBE_REMAP) until signalled, while the host
    revokes and restores it: {"errors": {errno: count}, "remaps": N, "mapped": N}."""
    count, mapped, errors, started = 0, 0, {}, time.monotonic()
    emit({"looping": True})
    while not signalled() and time.monotonic() - started < args.get("limit", 120):
        out = state(P.P2PDMA_PROBE_REMAP, args["id"], "remaploop", quiet=True)
        count += 1
        if out["error"]:
            errors[str(out["error"])] = errors.get(str(out["error"]), 0) + 1
        else:
            mapped += 1
    return {"ok": True, "remaps": count, "mapped": mapped, "errors": errors}


def dma_once(args: dict) -> dict:
    """One DMA of the probe's edu: {"client", "addr", "size", "name"} -> {"ok", "error"}; a
    refused DMA (an address beyond edu's mask) issues nothing, so the registers are not read."""
    import pattern as pat

    data = pat.pattern(args.get("seed", 1), args.get("size", 64))
    error = dma(args["client"], args["addr"], data, args.get("name", "dma"), verify=args.get("verify", False))
    return {"ok": True, "error": error}


def watch(args: dict) -> dict:
    """{"client", "provider", "stop": bool, "name"}: start watching the kernel's P2P maps of the
    provider's memory for the client, or stop and get what was seen (also in KTAP)."""
    kmsg = Kmsg()
    given = {
        "client": args["client"].encode(),
        "provider": args["provider"].encode(),
        "name": args.get("name", "watch").encode(),
        "stop": int(bool(args.get("stop"))),
    }
    out = P.unpack("watch", ioctl(P.P2PDMA_PROBE_WATCH, P.WATCH, P.pack("watch", given)))
    if not args.get("stop"):
        return {"ok": True}
    return {
        "ok": True,
        "calls": out["calls"],
        "map_type": _cstr(out["map_type_name"]),
        "iova_links": out["iova_links"],
        "phys_maps": out["phys_maps"],
        "ktap": kmsg.read(),
    }


# an OSError is a result, {"ok": false, "errno": ...}, as this module's CLI prints it
OSERROR_IS_RESULT = True
COMMANDS = {
    "load": load,
    "watch": watch,
    "dma": dma_once,
    "dmaloop": dmaloop,
    "remaploop": remaploop,
    "census": census,
    "branch": branch,
    "iova": iova,
    "bind": lambda a: bind_driver(a["bdf"], a.get("driver")),
}

if __name__ == "__main__":
    try:
        emit(COMMANDS[sys.argv[1]](jsonlite.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
    except OSError as exc:
        emit(error_of(exc))
