"""What a P2P transfer should look like from the guest, given the oracle's verdict.

The kernel's map type is not directly observable; what the guest sees is: the I/O succeeds
and the bytes arrive, it fails with -EINVAL (the kernel refused the mapping), it fails with
-EREMOTEIO (the client's queue cannot do P2P), or it "succeeds" while the DMA faulted in
the vIOMMU and no byte moved (QEMU's divergence from hardware, declared by the oracle).
"""

from __future__ import annotations

import errno
from enum import Enum

from .model import EndpointKind, MapType, Topology
from .oracle import Verdict


class Outcome(str, Enum):
    TRANSFERRED = "transferred"
    EINVAL = "EINVAL"  # plus "cannot be used for peer-to-peer DMA" in dmesg
    EREMOTEIO = "EREMOTEIO"
    DMA_FAULT = "dma-fault"  # the command completed, the vIOMMU faulted, the data never moved
    PARTIAL = "partial"  # completed with a fault logged, yet part of the data moved: never expected
    CORRUPTED = "corrupted"  # completed, no fault logged, wrong bytes: never expected
    OTHER_ERROR = "other-error"


def expected_outcome(topo: Topology, verdict: Verdict) -> Outcome:
    if topo.endpoint(verdict.client).kind is EndpointKind.VIRTIO_BLK:
        return Outcome.EREMOTEIO
    if verdict.map_type is MapType.NOT_SUPPORTED:
        return Outcome.EINVAL
    if verdict.divergence:
        return Outcome.DMA_FAULT
    return Outcome.TRANSFERRED


def observed_outcome(result: dict, bytes_ok: bool, fault_logged: bool, blocks_landed: int = 0) -> Outcome:
    """From the guest helper's JSON, the byte checks (guest and host), the fault log and how
    many blocks of the (poisoned) destination hold the pattern on the host: a fault with some
    blocks landed is one chunk mapped right and another wrong, not the declared divergence."""
    if not result.get("ok"):
        code = result.get("errno")
        if code == errno.EINVAL:
            return Outcome.EINVAL
        if code == errno.EREMOTEIO:
            return Outcome.EREMOTEIO
        return Outcome.OTHER_ERROR
    if bytes_ok:
        return Outcome.TRANSFERRED
    if not fault_logged:
        return Outcome.CORRUPTED
    return Outcome.PARTIAL if blocks_landed else Outcome.DMA_FAULT
