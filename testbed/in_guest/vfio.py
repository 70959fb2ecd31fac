"""VFIO dma-buf export of a BAR, iommufd import, and a peer's DMA into it (stdlib only).

    python3 vfio.py bind '{"bdfs": [BDF, ...]}'          bind to vfio-pci, report the cdevs
    python3 vfio.py serve '{"idle": S}'                  a long-lived session (below)

A session owns: the exporter's and the DMA engine's (edu) VFIO cdev fds, both bound to one
iommufd, edu attached to one IOAS, a RAM buffer mapped in that IOAS at RAM_IOVA (the DMA
source), and any dma-bufs exported from the exporter. `serve` reads commands as JSON lines on
stdin (the guest agent relays the host's), runs them in order and answers each with one JSON
line on stdout carrying its sequence number (testbed/guestvm/vfio_client.py is the host end). In the
same select it watches the exporter's REQ eventfd: when the kernel relays a device
request (hot-unplug), the session records it and, if asked (`close_on_req`), closes the
exporter's device fd at once so the unplug can finish. It exits on `quit` or after `idle`
seconds without a command.

Commands ({"op": NAME, ...}; every answer has "ok", failed ioctls give "errno"/"error"):
    open      {"exporter": BDF, "dma": BDF or null, "req": bool, "close_on_req": bool,
               "noiommu": bool}                no-IOMMU mode on for the session (legacy group)
    export    {"ranges": [[off, len], ...], "region": 2, "flags": 0, "nr_ranges": N,
               "feature_flags": F}            -> {"buf": K, "fd": FD}
    probe     {}                              VFIO_DEVICE_FEATURE PROBE|GET of DMA_BUF
    map_file  {"buf": K, "iova": X, "start": 0, "length": L}
    unmap     {"iova": X, "length": L}
    mmap_buf  {"buf": K, "length": L}         CPU mmap of the dma-buf (errno when refused)
    close_buf {"buf": K}
    dma       {"iova": X, "size": N, "seed": S}   RAM (pattern) -> edu buffer -> iova
    ram_loop  {"size": N, "seed": S}              RAM -> edu -> RAM, checked by the guest
    command   {"set": bits, "clear": bits}        exporter's PCI_COMMAND via its config region
    reset     {}                                  VFIO_DEVICE_RESET on the exporter
    hot_reset {}                                  VFIO_DEVICE_PCI_HOT_RESET (its bus, cdev/iommufd)
    close_exporter {}                             close the exporter's device fd
    low_power {"mode": "entry"|"wakeup"|"exit"}   VFIO runtime PM on the exporter
    capabilities {}                               the exporter's standard capability IDs
    bar32     {"bar": B, "offset": O, "value": V}  a 32-bit register of the exporter's BAR (V: write first)
    flr       {}                                  Initiate FLR in the exporter's PCIe Device Control
    power_state {"state": "D0"|"D3hot"}           the exporter's PMCSR power state
    wake      {"timeout": S}                      a uAPI access; the wake-up eventfd's count
    status    {}                                  REQ events seen so far, fds still open
    probe_import {"buf": K, "client": BDF, "provider": BDF, "bar": B, "offset": O, "name": S,
                  "hold": bool, "defer_unmap_ms": N,   the probe module imports the dma-buf for
                  "importer": "revocable"|"no-p2p"|"not-revocable",   client (N: it unmaps N ms
                  "dma_bits": B, "fail_nth": F,   after invalidate_mappings; B: the client's
                  "sg_pick": [I, ...]}            DMA mask narrowed for this map; F: the
                                                  kernel fails the import's Fth allocation;
                                                  I: the entries reported, default the first 8)
    probe_state  {"id": N, "what": "state"|"remap"|"release"}   a held import of the probe
    probe_dma    {"client": BDF, "addr": X, "seed": S, "size": N}  the probe's edu writes addr
    quit      {}
"""

import errno
import mmap
import os
import select
import struct
import sys
import time

import jsonlite
import vfio_uapi as U
from common import SYS_PCI, emit, error_of, read
from edu import BUFFER_SIZE, DmaTimeout, Edu
from pattern import first_mismatch, pattern
from vfio_device import Device, Iommufd, address_of, bind, set_noiommu_mode

PAGE = 4096
RAM_IOVA = 0x100000  # source buffer (and loop-back target) in the IOAS, below edu's 256 MiB
RAM_SIZE = 2 * BUFFER_SIZE


# -- the session -----------------------------------------------------------------------------


class Session:
    def __init__(self):
        self.exporter = self.dma = self.iommufd = None
        self.edu = None
        self.ioas = None
        self.ram = None
        self.bufs = {}  # K -> dma-buf fd
        self.next_buf = 1
        self.req_efd = None
        self.close_on_req = False
        self.events = []
        self.wake_efd = None  # the runtime-PM wake-up eventfd, while low power is entered with one
        self.noiommu = False  # this session turned vfio's no-IOMMU mode on

    # commands -----------------------------------------------------------------------------

    def op_open(self, a: dict) -> dict:
        """The exporter, bound to an iommufd; with "dma", edu too, attached to an IOAS that maps
        a RAM buffer. Without it the session only exports (the probe module imports)."""
        if a.get("noiommu"):
            set_noiommu_mode(True)
            self.noiommu = True
        self.exporter = Device(a["exporter"])
        self.iommufd = Iommufd()
        # a no-IOMMU device has no cdev and nothing to bind: iommufd cannot own it
        devids = [self.exporter.bind_iommufd(self.iommufd.fd)] if self.exporter.cdev else []
        if a.get("req"):
            self.req_efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self.exporter.set_req_eventfd(self.req_efd)
            self.close_on_req = bool(a.get("close_on_req"))
        opened = {
            "ok": True,
            "devids": devids,
            "cdevs": [self.exporter.cdev],
            "noiommu_group": self.exporter.group is not None,
            "exporter_info": self.exporter.info(),
            "exporter_bars": {i: self.exporter.region(i)["size"] for i in range(6)},
            "exporter_command": self.exporter.config_read16(U.PCI_COMMAND),
            "reset_method": read(os.path.join(SYS_PCI, a["exporter"], "reset_method")),
        }
        if not a.get("dma"):
            return opened
        self.dma = Device(a["dma"])
        devids.append(self.dma.bind_iommufd(self.iommufd.fd))
        self.ioas = self.iommufd.ioas_alloc()
        hwpt = self.dma.attach(self.ioas)
        # the DMA source (first half) and the RAM loop-back target (second half)
        self.ram = mmap.mmap(-1, RAM_SIZE)
        self.ram[:] = bytes(RAM_SIZE)
        self.iommufd.map_user(self.ioas, address_of(self.ram), RAM_SIZE, RAM_IOVA)
        cmd = self.dma.config_read16(U.PCI_COMMAND)
        self.dma.config_write16(U.PCI_COMMAND, cmd | U.PCI_COMMAND_MEMORY | U.PCI_COMMAND_MASTER)
        self.edu = Edu(self.dma.fd, self.dma.region(U.VFIO_PCI_BAR0_REGION_INDEX)["offset"])
        opened["cdevs"].append(self.dma.cdev)
        return {**opened, "ioas": self.ioas, "hwpt": hwpt, "edu_id": hex(self.edu.ident()), "ram_iova": RAM_IOVA}

    # the kernel-side probe imports a dma-buf of this session (probe.py, /dev/p2pdma_probe)

    def op_probe_import(self, a: dict) -> dict:
        import probe

        return {
            "ok": True,
            **probe.import_once(
                self.bufs[a["buf"]],
                a["client"],
                a["provider"],
                a.get("bar", 2),
                a.get("offset", 0),
                a["name"],
                hold=a.get("hold", True),
                defer_unmap_ms=a.get("defer_unmap_ms", 0),
                importer=a.get("importer", "revocable"),
                dma_bits=a.get("dma_bits", 0),
                fail_nth=a.get("fail_nth", 0),
                sg_pick=tuple(a.get("sg_pick", ())),
            ),
        }

    def op_probe_state(self, a: dict) -> dict:
        import probe
        import probe_uapi as P

        request = {"state": P.P2PDMA_PROBE_STATE, "remap": P.P2PDMA_PROBE_REMAP, "release": P.P2PDMA_PROBE_RELEASE}[
            a.get("what", "state")
        ]
        return {"ok": True, **probe.state(request, a["id"], a.get("name", "state"))}

    def op_probe_dma(self, a: dict) -> dict:
        """The probe's own edu (not this session's) writes a fresh pattern to a.addr."""
        import probe

        error = probe.dma(a["client"], a["addr"], pattern(a["seed"], a["size"]), a.get("name", "dma"))
        return {"ok": error == 0, "error": error}

    def op_probe(self, a: dict) -> dict:
        return {"ok": True, "ret": self.exporter.probe_dma_buf()}

    def op_export(self, a: dict) -> dict:
        kw = {
            "region_index": a.get("region", U.VFIO_PCI_BAR2_REGION_INDEX),
            "flags": a.get("flags", 0),
            "nr_ranges": a.get("nr_ranges"),
        }
        if "feature_flags" in a:
            kw["feature_flags"] = a["feature_flags"]
        fd = self.exporter.export([tuple(r) for r in a["ranges"]], **kw)
        key = self.next_buf
        self.next_buf += 1
        self.bufs[key] = fd
        return {"ok": True, "buf": key, "fd": fd, "size": os.fstat(fd).st_size}

    def op_map_file(self, a: dict) -> dict:
        iova = self.iommufd.map_file(self.ioas, self.bufs[a["buf"]], a.get("start", 0), a["length"], a["iova"])
        return {"ok": True, "iova": iova}

    def op_unmap(self, a: dict) -> dict:
        return {"ok": True, "unmapped": self.iommufd.unmap(self.ioas, a["iova"], a["length"])}

    def op_mmap_buf(self, a: dict) -> dict:
        """A CPU mapping of the dma-buf: what an exporter without mmap support answers."""
        fd = self.bufs[a["buf"]]
        try:
            # read-only: the fd is O_RDONLY, so a writable mapping would stop at the VFS (EACCES)
            m = mmap.mmap(fd, a.get("length", PAGE), mmap.MAP_SHARED, mmap.PROT_READ)
        except OSError as exc:
            return {
                "ok": True,
                "mapped": False,
                "errno": exc.errno,
                "error": errno.errorcode.get(exc.errno, str(exc.errno)),
            }
        m.close()
        return {"ok": True, "mapped": True}

    def op_close_buf(self, a: dict) -> dict:
        os.close(self.bufs.pop(a["buf"]))
        return {"ok": True}

    def op_dma(self, a: dict) -> dict:
        """RAM (a fresh pattern) -> edu buffer -> a.iova: the device writes the peer BAR."""
        size = a["size"]
        self.ram[:size] = pattern(a["seed"], size)
        try:
            t_in = self.edu.from_bus(RAM_IOVA, size)
            t_out = self.edu.to_bus(a["iova"], size)
        except DmaTimeout as exc:
            return {"ok": False, "timeout": str(exc)}
        return {"ok": True, "seconds": [round(t_in, 3), round(t_out, 3)]}

    def op_ram_loop(self, a: dict) -> dict:
        """RAM -> edu -> RAM (second half of the buffer): edu and the IOAS work at all."""
        size = a["size"]
        self.ram[:size] = pattern(a["seed"], size)
        self.ram[BUFFER_SIZE : BUFFER_SIZE + size] = bytes([0xA5]) * size
        self.edu.from_bus(RAM_IOVA, size)
        self.edu.to_bus(RAM_IOVA + BUFFER_SIZE, size)
        got = bytes(self.ram[BUFFER_SIZE : BUFFER_SIZE + size])
        return {"ok": True, "mismatch": first_mismatch(got, pattern(a["seed"], size))}

    def op_command(self, a: dict) -> dict:
        before = self.exporter.config_read16(U.PCI_COMMAND)
        value = (before | a.get("set", 0)) & ~a.get("clear", 0)
        self.exporter.config_write16(U.PCI_COMMAND, value)
        return {"ok": True, "before": before, "after": self.exporter.config_read16(U.PCI_COMMAND)}

    def op_reset(self, a: dict) -> dict:
        ret = self.exporter.reset()
        return {"ok": True, "ret": ret, "command_after": self.exporter.config_read16(U.PCI_COMMAND)}

    def op_capabilities(self, a: dict) -> dict:
        """The exporter's standard capability IDs, walking its list through the config region."""
        return {"ok": True, "ids": [cap_id for cap_id, _ in self.exporter.capabilities()]}

    def op_bar32(self, a: dict) -> dict:
        """Read (and first write, with "value") a 32-bit register of the exporter's BAR through
        its VFIO region: {"bar": B, "offset": O, "value": V or absent} -> {"value": read}."""
        off = self.exporter.region(a["bar"])["offset"] + a["offset"]
        if "value" in a:
            if os.pwrite(self.exporter.fd, struct.pack("<I", a["value"]), off) != 4:
                raise OSError(errno.EIO, "short BAR write")
        return {"ok": True, "value": struct.unpack("<I", os.pread(self.exporter.fd, 4, off))[0]}

    def op_flr(self, a: dict) -> dict:
        """Initiate Function Level Reset in the exporter's PCIe Device Control, as a user does
        through the config region: VFIO revokes, resets the function and restores."""
        exp = self.exporter.capability(U.PCI_CAP_ID_EXP)
        capable = bool(self.exporter.config_read32(exp + U.PCI_EXP_DEVCAP) & U.PCI_EXP_DEVCAP_FLR)
        ctl = self.exporter.config_read16(exp + U.PCI_EXP_DEVCTL)
        self.exporter.config_write16(exp + U.PCI_EXP_DEVCTL, ctl | U.PCI_EXP_DEVCTL_BCR_FLR)
        after = self.exporter.config_read16(exp + U.PCI_EXP_DEVCTL)
        return {"ok": True, "flr_capable": capable, "devctl_after": after}

    def op_power_state(self, a: dict) -> dict:
        """Write the exporter's PMCSR power state ("D0" or "D3hot") through the config region."""
        reg = self.exporter.capability(U.PCI_CAP_ID_PM) + U.PCI_PM_CTRL
        pmcsr = self.exporter.config_read16(reg)
        state = U.POWER_STATES[a["state"]]
        self.exporter.config_write16(reg, (pmcsr & ~U.PCI_PM_CTRL_STATE_MASK) | state)
        now = self.exporter.config_read16(reg) & U.PCI_PM_CTRL_STATE_MASK
        return {"ok": True, "state": {v: k for k, v in U.POWER_STATES.items()}.get(now, f"D{now}")}

    def op_low_power(self, a: dict) -> dict:
        """VFIO runtime PM on the exporter: "entry", "wakeup" (entry with a wake-up eventfd) or
        "exit". An entry waits (up to `settle` s) for the PM core to suspend the device; the
        answer says the runtime status it reached."""
        mode = a["mode"]
        if mode == "exit":
            self.exporter.feature_set(U.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT)
            return {"ok": True, "runtime_status": self.exporter.runtime_status()}
        if mode == "wakeup":
            self._close_wake_efd()
            self.wake_efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            body = U.LOW_POWER_WAKEUP.pack(self.wake_efd, 0)
            self.exporter.feature_set(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, body)
        else:
            self.exporter.feature_set(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)
        return {"ok": True, "runtime_status": self._settle(a.get("settle", 10))}

    def op_wake(self, a: dict) -> dict:
        """An access through the uAPI (VFIO_DEVICE_GET_INFO) resumes a suspended exporter; with
        a wake-up eventfd the kernel signals it and leaves low power for good, without one the
        PM core suspends it again (waited for up to `settle` s)."""
        self.exporter.info()
        woken = 0
        if self.wake_efd is not None:
            ready, _, _ = select.select([self.wake_efd], [], [], a.get("timeout", 5))
            woken = os.eventfd_read(self.wake_efd) if ready else 0
            return {"ok": True, "woken": woken, "runtime_status": self.exporter.runtime_status()}
        return {"ok": True, "woken": woken, "runtime_status": self._settle(a.get("settle", 10))}

    def _settle(self, seconds: float) -> str:
        """The exporter's runtime status once it reads "suspended", or after `seconds`: the
        suspend is the PM core's asynchronous idle work, and sysfs announces nothing."""
        deadline = time.monotonic() + seconds
        while self.exporter.runtime_status() != "suspended" and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.exporter.runtime_status()

    def _close_wake_efd(self) -> None:
        if self.wake_efd is not None:
            os.close(self.wake_efd)
            self.wake_efd = None

    def op_hot_reset(self, a: dict) -> dict:
        ret = self.exporter.hot_reset()
        return {"ok": True, "ret": ret, "command_after": self.exporter.config_read16(U.PCI_COMMAND)}

    def op_close_exporter(self, a: dict) -> dict:
        self.exporter.close()
        return {"ok": True}

    def op_status(self, a: dict) -> dict:
        return {
            "ok": True,
            "events": self.events,
            "exporter_open": bool(self.exporter and self.exporter.fd),
            "bufs": sorted(self.bufs),
        }

    # REQ --------------------------------------------------------------------------------

    def poll_req(self, timeout: float) -> None:
        if self.req_efd is None:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self.req_efd], [], [], timeout)
        if not ready:
            return
        try:
            count = os.eventfd_read(self.req_efd)
        except BlockingIOError:
            return
        event = {"event": "req", "count": count, "t": time.time()}
        if self.close_on_req and self.exporter.fd is not None:
            self.exporter.close()  # the unplug waits for this; it also revokes the dma-bufs
            event["closed_exporter"] = True
        self.events.append(event)
        emit(event)

    def close(self) -> None:
        """Idempotent: dma-bufs, then the devices, then the iommufd."""
        for fd in self.bufs.values():
            os.close(fd)
        self.bufs.clear()
        for dev in (self.exporter, self.dma):
            if dev is not None:
                dev.close()
        if self.iommufd is not None:
            self.iommufd.close()
            self.iommufd = None
        if self.req_efd is not None:
            os.close(self.req_efd)
            self.req_efd = None
        self._close_wake_efd()
        if self.noiommu:
            set_noiommu_mode(False)
            self.noiommu = False
        if self.ram is not None:
            self.ram.close()
            self.ram = None


def run_command(session: Session, cmd: dict) -> dict:
    handler = getattr(session, "op_" + cmd.get("op", ""), None)
    if handler is None:
        return {"ok": False, "exception": f"unknown op {cmd.get('op')!r}"}
    try:
        return handler(cmd)
    except OSError as exc:
        return error_of(exc)
    except Exception as exc:  # reported to the host, the session goes on
        return {"ok": False, "exception": f"{type(exc).__name__}: {exc}"}


def serve_stdin(args: dict) -> None:
    """One session, operations as JSON lines on stdin, each answered on stdout with its seq and
    the CLOCK_MONOTONIC times it ran between (t0_ns, t1_ns: the kernel's ktime_get_ns() clock);
    the device's REQ eventfd is watched in the same select, so nothing polls."""
    idle = args.get("idle", 900)
    session = Session()
    seq, pending = 0, b""
    emit({"serving": True, "pid": os.getpid()})
    try:
        while True:
            if b"\n" not in pending:
                watch = [0] + ([session.req_efd] if session.req_efd is not None else [])
                ready, _, _ = select.select(watch, [], [], idle)
                if not ready:
                    emit({"idle_exit": True, "seq": seq})
                    break
                if session.req_efd is not None and session.req_efd in ready:
                    session.poll_req(0)
                if 0 not in ready:
                    continue
                chunk = os.read(0, 65536)
                if not chunk:
                    break  # the host went away
                pending += chunk
                if b"\n" not in pending:
                    continue
            line, pending = pending.split(b"\n", 1)
            cmd = jsonlite.loads(line)
            if "signal" in cmd:
                continue  # a Background.signal(): nothing to do for a session
            seq += 1
            if cmd.get("op") == "quit":
                session.close()  # before answering: the next session may open the devices at once
                emit({"seq": seq, "op": "quit", "ok": True})
                break
            # when the operation ran, on the clock the kernel's ktime_get_ns() reads
            t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            answer = run_command(session, cmd)
            t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            emit({"seq": seq, "op": cmd.get("op"), **answer, "t0_ns": t0, "t1_ns": t1})
    finally:
        session.close()


def serve(args: dict) -> None:
    serve_stdin(args)


def main() -> None:
    command, arg = sys.argv[1], jsonlite.loads(sys.argv[2])
    if command == "bind":
        emit(bind(arg))
    elif command == "serve":
        serve(arg)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
