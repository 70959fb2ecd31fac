"""P2P memory from an NVMe CMB, used as the buffer of O_DIRECT I/O by a peer.

    python3 p2pmem.py state '{"bdf": BDF}'
    python3 p2pmem.py transfer '{"provider": BDF, "client": BDF, "direction": "to_p2pmem"|"from_p2pmem",
                                 "size": N, "offset": N, "seed": N, "depth": N}'
    python3 p2pmem.py cycles '{"provider": BDF, "client": BDF, "count": N, "size": N, "seed": N}'
    python3 p2pmem.py ramwrite '{"client": BDF, "size": N, "offset": N, "seed": N}'   (no P2P)
    python3 p2pmem.py hold '{"provider": BDF, "size": N, "seed": N}'
        mmap and fill, print {"mapped": ...}, wait for a line on stdin (the host's go), touch
        the buffer again
    python3 p2pmem.py stream '{"provider": BDF, "client": BDF, "size": N, "seed": N}'
        P2P writes from p2pmem to the client back to back until a line on stdin or one fails

`to_p2pmem`: the peer NVMe reads its namespace into the p2pmem buffer (its DMA writes the
provider's BAR); the host then reads the CMB itself (QMP pmemsave of the guest-physical range
`transfer` reports under "cmb"). `from_p2pmem`: the peer writes the buffer to its namespace
(its DMA reads the BAR); the host then checks the namespace's backing file.

`transfer` also reports `available_mapped`: the pool's `available` while the buffer is
mapped (the mmap allocates from the pool), so a caller can tell the mapping took memory.
"""

import ctypes
import mmap
import os
import struct
import sys
import threading

import jsonlite
from common import SYS_PCI, block_device, emit, error_of, read, signalled, wait_signal
from pattern import first_mismatch, pattern, poison

PAGE = 4096
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_PFN_MASK = (1 << 55) - 1
IORESOURCE_MEM = 0x200


def state(bdf: str) -> dict:
    base = os.path.join(SYS_PCI, bdf, "p2pmem")
    return {
        "size": int(read(os.path.join(base, "size"), "0")),
        "available": int(read(os.path.join(base, "available"), "0")),
        "published": read(os.path.join(base, "published")) == "1",
    }


def map_p2pmem(bdf: str, size: int) -> mmap.mmap:
    fd = os.open(os.path.join(SYS_PCI, bdf, "p2pmem", "allocate"), os.O_RDWR)
    try:
        buf = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
    finally:
        os.close(fd)
    return _not_inherited(buf)


def _not_inherited(buf: mmap.mmap) -> mmap.mmap:
    """A helper the agent forks while a transfer runs in it must not keep the transfer's
    pages: p2pmem would stay taken from the pool for the helper's life, and an unplug of the
    provider would wait for it."""
    buf.madvise(mmap.MADV_DONTFORK)
    return buf


def _address_of(buf: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def phys_extents(buf: mmap.mmap) -> list:
    """[[physical address, length], ...] of the buffer's pages, merged where contiguous
    (/proc/self/pagemap; root sees the PFNs). A page that is not present raises."""
    start = _address_of(buf)
    pages = (len(buf) + PAGE - 1) // PAGE
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, 8 * pages, (start // PAGE) * 8)
    finally:
        os.close(fd)
    extents = []
    for i, (entry,) in enumerate(struct.iter_unpack("<Q", raw)):
        pfn = entry & PAGEMAP_PFN_MASK
        if not entry & PAGEMAP_PRESENT or not pfn:
            raise OSError(14, f"page {i} of the p2pmem buffer: pagemap entry {entry:#x} has no PFN")
        phys = pfn * PAGE
        if extents and extents[-1][0] + extents[-1][1] == phys:
            extents[-1][1] += PAGE
        else:
            extents.append([phys, PAGE])
    return extents


def bars(bdf: str) -> list:
    """(index, start, size) of each memory BAR, from the device's sysfs `resource`."""
    out = []
    with open(os.path.join(SYS_PCI, bdf, "resource")) as f:
        for index, line in enumerate(f):
            start, end, flags = (int(v, 16) for v in line.split()[:3])
            if index < 6 and flags & IORESOURCE_MEM and end > start:
                out.append((index, start, end - start + 1))
    return out


def cmb_location(bdf: str, buf: mmap.mmap) -> dict:
    """Where the p2pmem buffer lives: the provider's BAR holding it (index and start address as
    the guest's sysfs `resource` says) and each physical extent as [offset into that BAR,
    length]. The host reads those guest-physical ranges out of QEMU. {"error": ...} when the
    buffer is in none of the provider's BARs (the host then has nothing to read)."""
    try:
        extents = phys_extents(buf)
    except OSError as exc:
        return {"error": str(exc)}
    for index, start, size in bars(bdf):
        if all(start <= phys and phys + length <= start + size for phys, length in extents):
            return {
                "bar": index,
                "bar_start": start,
                "bar_size": size,
                "extents": [[phys - start, length] for phys, length in extents],
            }
    where = [[hex(phys), length] for phys, length in extents]
    return {"error": f"the p2pmem buffer ({where}) is in no memory BAR of {bdf}"}


def _chunks(size: int, depth: int) -> list:
    depth = max(1, min(depth, size // PAGE))
    step = (size // depth) // PAGE * PAGE
    out, start = [], 0
    for i in range(depth):
        end = size if i == depth - 1 else start + step
        out.append((start, end))
        start = end
    return out


def _parallel_io(fd: int, buf: memoryview, offset: int, depth: int, write: bool) -> None:
    """`depth` O_DIRECT I/Os in flight at once, each on its own slice of the buffer."""
    errors = []

    def one(start: int, end: int) -> None:
        try:
            # `with` releases the slice even on error: a live export would keep the mmap open
            with buf[start:end] as view:
                done = os.pwritev(fd, [view], offset + start) if write else os.preadv(fd, [view], offset + start)
            if done != end - start:
                raise OSError(5, f"short {'write' if write else 'read'}: {done} of {end - start}")
        except OSError as exc:
            errors.append(OSError(exc.errno, exc.strerror))  # without the frame that held the view

    chunks = list(_chunks(len(buf), depth))
    if len(chunks) == 1:  # one I/O in flight: this thread's (a thread's start and join: ~3 ms under TCG)
        one(*chunks[0])
    else:
        threads = [threading.Thread(target=one, args=c) for c in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


def _ram_buffer(size: int) -> mmap.mmap:
    return _not_inherited(mmap.mmap(-1, size))  # page aligned, as O_DIRECT wants


def transfer(args: dict) -> dict:
    provider, client = args["provider"], args["client"]
    size, offset, seed = args["size"], args.get("offset", 0), args["seed"]
    depth = args.get("depth", 1)
    direction = args["direction"]
    data = pattern(seed, size)
    device = block_device(client)
    before = state(provider)
    result = {"device": device, "available_before": before["available"]}
    buf = map_p2pmem(provider, size)
    result["available_mapped"] = state(provider)["available"]
    fd = os.open(device, os.O_RDWR | os.O_DIRECT)
    view = memoryview(buf)
    try:
        result["cmb"] = cmb_location(provider, buf)
        if direction == "to_p2pmem":
            # the peer's namespace gets the pattern from RAM, the p2pmem buffer is poisoned,
            # then the peer DMAs the pattern into the provider's BAR
            ram = _ram_buffer(size)
            ram[:] = data
            _parallel_io(fd, memoryview(ram), offset, 1, write=True)
            ram.close()
            buf[:] = poison(size)
            try:
                _parallel_io(fd, view, offset, depth, write=False)
            except OSError as exc:
                return {**result, **error_of(exc)}
            got = bytes(buf[:])
            result.update(ok=True, mismatch=first_mismatch(got, data))
        elif direction == "from_p2pmem":
            # the p2pmem buffer holds the pattern; the peer's namespace is poisoned first,
            # then the peer DMAs from the provider's BAR into its namespace
            ram = _ram_buffer(size)
            ram[:] = poison(size)
            _parallel_io(fd, memoryview(ram), offset, 1, write=True)
            buf[:] = data
            try:
                _parallel_io(fd, view, offset, depth, write=True)
            except OSError as exc:
                return {**result, **error_of(exc)}
            # read back through RAM, bypassing the page cache
            ram[:] = bytes(size)
            _parallel_io(fd, memoryview(ram), offset, 1, write=False)
            result.update(ok=True, mismatch=first_mismatch(bytes(ram[:]), data))
            ram.close()
        else:
            raise ValueError(f"unknown direction {direction!r}")
    finally:
        view.release()
        os.close(fd)
        buf.close()
    result["available_after"] = state(provider)["available"]
    return result


def ramwrite(args: dict) -> dict:
    """Write the pattern of `seed` from ordinary RAM to the client's namespace (no P2P)."""
    size = args["size"]
    ram = _ram_buffer(size)
    ram[:] = pattern(args["seed"], size)
    fd = os.open(block_device(args["client"]), os.O_RDWR | os.O_DIRECT)
    try:
        with memoryview(ram) as view:
            _parallel_io(fd, view, args.get("offset", 0), 1, write=True)
    except OSError as exc:
        return error_of(exc)
    finally:
        os.close(fd)
        ram.close()
    return {"ok": True}


def cycles(args: dict) -> dict:
    """map (taking `size` from the pool) / write by the peer from p2pmem / check / unmap,
    `count` times."""
    provider, client, size, count = args["provider"], args["client"], args["size"], args["count"]
    device = block_device(client)
    baseline = state(provider)["available"]
    fd = os.open(device, os.O_RDWR | os.O_DIRECT)
    ram = _ram_buffer(size)
    failures = []
    done = 0
    try:
        for i in range(count):
            data = pattern(args["seed"] + i, size)
            buf = map_p2pmem(provider, size)
            taken = baseline - state(provider)["available"]
            if taken != size:  # the mapping must come out of the pool, or this is no p2pmem
                failures.append({"cycle": i, "pool_taken": taken, "mapped": size})
            buf[:] = data
            try:
                with memoryview(buf) as view:
                    _parallel_io(fd, view, 0, 1, write=True)
            except OSError as exc:
                failures.append({"cycle": i, **error_of(exc)})
            buf.close()
            _parallel_io(fd, memoryview(ram), 0, 1, write=False)
            if bytes(ram[:]) != data:
                failures.append({"cycle": i, "mismatch": first_mismatch(bytes(ram[:]), data)})
            done = i + 1
            if len(failures) > 5:
                break
    finally:
        os.close(fd)
        ram.close()
    return {
        "ok": not failures,
        "cycles": done,  # the last one wrote pattern(seed + cycles - 1) at offset 0
        "failures": failures,
        "baseline": baseline,
        "available_after": state(provider)["available"],
    }


def hold(args: dict) -> None:
    """Map and fill a buffer, report, wait for the go file, then touch it again. If the
    provider went away meanwhile the touch raises SIGBUS and the process dies of it."""
    size = args["size"]
    buf = map_p2pmem(args["provider"], size)
    buf[:] = pattern(args["seed"], size)
    emit({"mapped": True, "size": size, "pid": os.getpid()})
    wait_signal()  # the host's go (after it unplugged the provider)
    intact = bytes(buf[:size]) == pattern(args["seed"], size)
    emit({"touched": True, "intact": intact})
    buf.close()


def stream(args: dict) -> None:
    """Back-to-back P2P writes with I/O in flight until told to stop or an I/O fails; says
    "streaming" once the first round has landed, so that what the host does next happens
    during P2P I/O, not before any."""
    provider, client, size = args["provider"], args["client"], args["size"]
    fd = os.open(block_device(client), os.O_RDWR | os.O_DIRECT)
    buf = map_p2pmem(provider, size)
    buf[:] = pattern(args["seed"], size)
    done, error = 0, None
    emit({"started": True, "pid": os.getpid()})
    try:
        with memoryview(buf) as view:
            while not signalled():
                _parallel_io(fd, view, 0, args.get("depth", 4), write=True)
                done += 1
                if done == 1:
                    emit({"streaming": True})
    except OSError as exc:
        error = error_of(exc)
    finally:
        os.close(fd)
    emit({"transfers": done, "error": error})
    buf.close()


# Run in the agent's process (an interpreter start per call cost ~0.25 s under TCG, ten times
# a 64 KiB transfer's own work): the commands that return once done. hold and stream stay
# children the host spawns: a SIGBUS from a mapping whose device is unplugged under them must
# not take the agent down.
COMMANDS = {
    "state": lambda args: state(args["bdf"]),
    "transfer": transfer,
    "cycles": cycles,
    "ramwrite": ramwrite,
}


def main() -> None:
    command, arg = sys.argv[1], jsonlite.loads(sys.argv[2])
    if command in COMMANDS:
        emit(COMMANDS[command](arg))
    elif command == "hold":
        hold(arg)
    elif command == "stream":
        stream(arg)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
