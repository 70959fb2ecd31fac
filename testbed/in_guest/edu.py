"""QEMU's `edu` device driven from userspace through its VFIO BAR0 region (stdlib only).

Registers (hw/misc/edu.c): 0x80 DMA source, 0x88 DMA destination, 0x90 count, 0x98 command.
Command bits: 0x1 RUN (cleared by the device when done), 0x2 direction (0: from the bus
address in src into the device buffer at dst; 1: from the buffer at src out to the bus
address in dst), 0x4 raise an IRQ when done. The buffer is 4 KiB at 0x40000. QEMU 7.2's range
check is off by one and aborts QEMU on a transfer of all 4096 bytes, so transfers stay below
that. The default dma_mask is 28 bits: bus addresses must stay below 256 MiB. The transfer
runs on a QEMU timer 100 ms (virtual clock) after the RUN write; writes to the DMA registers
while RUN is set are ignored, so every transfer waits for the previous one.

Proof that a transfer was issued and ran: QEMU stores the whole command word (only bits 0-2
mean anything) and clears RUN in it only after the timer did the DMA. Each transfer carries a
fresh tag in bits 8-23 of its command; afterwards the command register must read back as that
command with RUN clear, and src/dst/count as programmed. Anything else raises DmaNotIssued: a
"completed" DMA the device never ran cannot pass. `EduMmio` reads the same registers through
the BAR's sysfs resource0 (for an edu a kernel driver owns: the probe module).
"""

import ctypes
import mmap
import os
import random
import struct
import time

REG_ID, REG_DMA_SRC, REG_DMA_DST, REG_DMA_CNT, REG_DMA_CMD = 0x00, 0x80, 0x88, 0x90, 0x98
CMD_RUN, CMD_TO_BUS, CMD_IRQ = 0x1, 0x2, 0x4
BUFFER = 0x40000
BUFFER_SIZE = 4096
MAX_TRANSFER = BUFFER_SIZE - 1  # QEMU 7.2 aborts on exactly BUFFER_SIZE
DMA_LIMIT = 1 << 28  # default dma_mask
TAG_SHIFT, TAG_MASK = 8, 0xFFFF  # command bits QEMU stores but does not interpret
SYS_PCI = "/sys/bus/pci/devices"


class DmaTimeout(Exception):
    pass


class DmaNotIssued(Exception):
    """The device's registers do not show the transfer that was asked for."""


def dma_registers(dev) -> dict:
    """src, dst, count (64-bit registers) and the command word, as the device holds them."""
    return {
        "src": dev.read64(REG_DMA_SRC),
        "dst": dev.read64(REG_DMA_DST),
        "cnt": dev.read64(REG_DMA_CNT),
        "cmd": dev.read32(REG_DMA_CMD),
    }


def _next_tag(previous_cmd: int) -> int:
    tag = random.randrange(1, TAG_MASK + 1)
    return tag if tag != (previous_cmd >> TAG_SHIFT) & TAG_MASK else tag % TAG_MASK + 1


class Edu:
    """`region_offset` is BAR0's offset in the VFIO device fd (VFIO_DEVICE_GET_REGION_INFO)."""

    def __init__(self, fd: int, region_offset: int):
        self.fd, self.base = fd, region_offset

    def read32(self, reg: int) -> int:
        return struct.unpack("<I", os.pread(self.fd, 4, self.base + reg))[0]

    def write32(self, reg: int, value: int) -> None:
        if os.pwrite(self.fd, struct.pack("<I", value & 0xFFFFFFFF), self.base + reg) != 4:
            raise OSError(5, f"short write to edu register {reg:#x}")

    def read64(self, reg: int) -> int:
        return struct.unpack("<Q", os.pread(self.fd, 8, self.base + reg))[0]

    def ident(self) -> int:
        return self.read32(REG_ID)

    def _run(self, src: int, dst: int, count: int, cmd: int, timeout: float) -> float:
        if not 0 < count <= MAX_TRANSFER:
            raise ValueError(f"edu transfer of {count} bytes: must be 1..{MAX_TRANSFER}")
        for addr in (src, dst):
            if addr + count > DMA_LIMIT and not BUFFER <= addr < BUFFER + BUFFER_SIZE:
                raise ValueError(f"bus address {addr:#x} beyond edu's 28-bit dma_mask")
        previous = self.read32(REG_DMA_CMD)
        if previous & CMD_RUN:
            raise DmaNotIssued(f"edu is still running a DMA (command {previous:#x}): this one would be ignored")
        cmd |= _next_tag(previous) << TAG_SHIFT
        start = time.monotonic()
        self.write32(REG_DMA_SRC, src)
        self.write32(REG_DMA_DST, dst)
        self.write32(REG_DMA_CNT, count)
        self.write32(REG_DMA_CMD, cmd | CMD_RUN)
        while self.read32(REG_DMA_CMD) & CMD_RUN:
            if time.monotonic() - start > timeout:
                raise DmaTimeout(f"edu DMA {src:#x} -> {dst:#x} ({count} B) still busy after {timeout}s")
            time.sleep(0.01)
        seconds = time.monotonic() - start
        want = {"src": src, "dst": dst, "cnt": count, "cmd": cmd}
        got = dma_registers(self)
        if got != want:
            raise DmaNotIssued(
                "edu's registers after the DMA do not show it ran: "
                + ", ".join(f"{k} {got[k]:#x} (want {want[k]:#x})" for k in want if got[k] != want[k])
            )
        return seconds

    def from_bus(self, bus_addr: int, count: int, buf_off: int = 0, timeout: float = 10.0) -> float:
        """Bus address (an IOVA) -> device buffer: the device reads memory."""
        return self._run(bus_addr, BUFFER + buf_off, count, 0, timeout)

    def to_bus(self, bus_addr: int, count: int, buf_off: int = 0, timeout: float = 10.0) -> float:
        """Device buffer -> bus address (an IOVA): the device writes memory."""
        return self._run(BUFFER + buf_off, bus_addr, count, CMD_TO_BUS, timeout)


class EduMmio:
    """edu's registers through the BAR0 sysfs resource file: for an edu a kernel driver drives
    (the probe module), to see what the device did, not what the driver says."""

    def __init__(self, bdf: str):
        fd = os.open(os.path.join(SYS_PCI, bdf, "resource0"), os.O_RDWR | os.O_SYNC)
        try:
            self.map = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    # one load or store of the register's width each (edu ignores other access sizes)
    def read32(self, reg: int) -> int:
        return ctypes.c_uint32.from_buffer(self.map, reg).value

    def read64(self, reg: int) -> int:
        return ctypes.c_uint64.from_buffer(self.map, reg).value

    def write64(self, reg: int, value: int) -> None:
        ctypes.c_uint64.from_buffer(self.map, reg).value = value

    def close(self) -> None:
        self.map.close()
