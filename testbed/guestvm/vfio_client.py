"""The host end of a `vfio.py serve` session (testbed/in_guest/vfio.py): a VFIO exporter,
its dma-bufs, an importer, held open across operations. Each operation is one JSON line on
the helper's stdin and one answer, matched by its sequence number, over the VM's agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .guest import Background

if TYPE_CHECKING:
    from .guest import GuestVM

OP_TIMEOUT_S = 30.0  # one ioctl or one edu DMA; the helper answers at once
START_TIMEOUT_S = 60.0


class VfioSession:
    _count = 0

    def __init__(
        self,
        vm: GuestVM,
        exporter: str,
        dma: str | None,
        req: bool = False,
        close_on_req: bool = False,
        noiommu: bool = False,
    ) -> None:
        VfioSession._count += 1
        self.vm = vm
        self.exporter, self.dma = exporter, dma  # device ids: the ivshmem exported, the edu DMA engine
        self.name = f"vfio{VfioSession._count}"
        self.seq = 0
        self.closed = False
        self.bg = Background(vm, self.name, vm.spawn("vfio", "serve", {"idle": 600}))
        self.bg.wait_started("serving", timeout=START_TIMEOUT_S)
        # without dma the session only exports (the kernel-side probe imports, test_p2pdma_api)
        # noiommu: VFIO's no-IOMMU mode for the session (an exporter without an IOMMU)
        self.opened = self.call(
            "open",
            exporter=vm.bdf(exporter),
            dma=vm.bdf(dma) if dma else None,
            req=req,
            close_on_req=close_on_req,
            noiommu=noiommu,
        )
        assert self.opened["ok"], self.opened

    def call(self, op: str, timeout: float = OP_TIMEOUT_S, **args: Any) -> dict[str, Any]:
        self.seq += 1
        seq = self.seq
        self.bg.spawned.send({"op": op, **args}, timeout)
        answer = self.bg.spawned.wait_event(lambda e: e.get("seq") == seq, timeout, what=f"the answer to {op} {args}")
        return {k: v for k, v in answer.items() if k not in ("seq", "op")}

    def ok(self, op: str, **args: Any) -> dict[str, Any]:
        r = self.call(op, **args)
        assert r.get("ok"), f"{op} {args}: {r}"
        return r

    def quit(self) -> None:
        if not self.closed:
            self.closed = True
            self.call("quit")
            self.bg.wait_exit(timeout=OP_TIMEOUT_S)

    def __enter__(self) -> VfioSession:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.quit()
        except Exception:  # do not mask the test's own failure
            if exc[0] is None:
                raise
