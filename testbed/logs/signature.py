"""Stable splat signatures: what a report is and where, without what changes run to run.

In the spirit of syzkaller's crash titles (pkg/report): kind + what + where, the function
without its offset, no addresses, pids, CPU numbers, line numbers or timestamps, and the
access type for KASAN/KFENCE. Two runs of the same bug give the same signature, so runs can
be compared by signature (testbed ab) and repeats counted under one.

    KASAN: slab-use-after-free Read in pci_p2pdma_map_type
    WARNING in p2pmem_alloc_mmap
    lockdep: possible circular locking dependency detected in pciehp_unconfigure_device
        [pci_rescan_remove_lock -> &ctrl->reset_lock/1]
"""

from __future__ import annotations

import re

from .kinds import SplatKind
from .printk import strip_prefix

FUNC = r"[A-Za-z_][\w.]*"
# a call-trace frame: " func+0x1c/0x40 [module]" (x86), "  func+0x1c/0x40" (arm64); "?" frames are unreliable
FRAME_RE = re.compile(rf"^\s*(?:\[<?[0-9a-f]+>?\]\s*)?(?P<unreliable>\?\s+)?(?P<func>{FUNC})\+0x[0-9a-f]+/0x[0-9a-f]+")
TRACE_START_RE = re.compile(r"Call [Tt]race:|^\s*backtrace(?: \(crc [0-9a-f]+\))?:|^Backtrace:")
TRACE_END_RE = re.compile(r"^\s*</TASK>|^---\[ end|^(?:Allocated|Freed) by task|^The buggy address|^Memory state")
RIP_RE = re.compile(
    r"^(?:(?:RIP|IP): (?:[0-9a-f]{4}:)?(?:\[<[0-9a-f]+>\]\s*)*|pc : |PC is at )"
    rf"(?P<func>{FUNC})\+0x[0-9a-f]+/0x[0-9a-f]+"
)
ACCESS_RE = re.compile(r"^(?P<access>Read|Write) of size \d+")
KFENCE_ACCESS_RE = re.compile(r"\b(?P<access>read|write)\b")
LOCK_CLASS_RE = re.compile(r"\((?P<lock>[^(){}]+(?:\([^()]*\))?[^(){}]*)\)\{[^}]*\}")
LOCK_ACQUIRE_RE = re.compile(r"is trying to (?:acquire(?: lock)?|lock|release lock)")
LOCK_AT_RE = re.compile(rf", at: (?:\[<[0-9a-f]+>\] )?(?P<func>{FUNC})\+0x")
CHAIN_LINK_RE = re.compile(r"^-> #\d+ \((?P<lock>.+?)\)\{")

# Frames that are the reporting machinery or a generic helper, never the place of the bug.
# Patterned after syzkaller's pkg/report skip list, cut to what an x86 P2P guest prints.
SKIP_FRAMES = re.compile(
    "|".join(
        (
            r"^(?:__)?dump_stack",
            r"^show_stack",
            r"^dump_backtrace",
            r"^(?:__)?warn",
            r"^report_bug",
            r"^(?:handle|fixup)_bug",
            r"^exc_",
            r"^asm_exc_",
            r"^do_error_trap",
            r"^do_trap",
            r"^(?:__)?kasan",
            r"^kfence",
            r"^print_",
            r"^check_(?:noncircular|prev_add|prevs_add|irq_usage|deadlock|flags|wait_context)",
            r"^validate_chain",
            r"lockdep",
            r"^(?:__)?lock_acquire",
            r"^lock_release",
            r"^(?:__)?lock_(?:is_held|sync|downgrade)",
            r"^(?:mark|reacquire)_(?:held_)?locks?",
            r"^(?:_raw_)?(?:spin|read|write)_(?:un)?lock",
            r"^(?:__)?(?:down|up)(?:_read|_write)?(?:_nested|_trylock|_killable|_interruptible)*$",
            r"(?:^|_)down_(?:read|write)",
            r"^(?:__)?mutex_",
            r"^(?:__)?rt_mutex",
            r"^rwsem_",
            r"schedule",
            r"^io_schedule",
            r"^__switch_to",
            r"^context_switch",
            r"^(?:__)?wait_for_completion",
            r"^(?:__)?debug_object",
            r"^debug_print_object",
            r"^debug_check_no",
            r"^(?:__)?might_(?:sleep|resched|fault)",
            r"^__?refcount_",
            r"^refcount_warn",
            r"^__list_(?:add|del)",
            r"^list_(?:add|del)",
            r"^kv?free$",
            r"^kmem_cache_free",
            r"^(?:__)?slab_",
            r"^(?:__)?kmalloc",
            r"^mem(?:cpy|set|move|cmp)",
            r"^(?:__)?check_unmap",
            r"^debug_dma",
            r"^kobject_",
            r"panic",
            r"^(?:__)?check_(?:object_size|heap_object|preemption_disabled)",
            r"^(?:__)?(?:copy|_copy)_(?:from|to)_(?:user|iter)",
            r"^spin_dump",
            r"^(?:__)?do_(?:invalid_op|error_trap|trap)",
            r"^(?:__)?(?:queue|flush|cancel)_(?:delayed_)?work",
            r"^kthread_stop",
            r"^(?:__)?wait_on_(?:page|folio|bit)",
            r"^(?:__)?folio_wait",
            r"^register_lock_class",
            r"^(?:__)?call_rcu",
            r"^synchronize_(?:rcu|srcu|sched)",
            r"^ret_from_fork",
            r"invalid_op",
            r"^__asan|^__msan|^kmsan",
            r"might_sleep|might_resched",
            r"is_static_object",
            r"^k?v?[mzc]alloc(?:_node|_array|_trace)*$",
            r"^(?:__)?ubsan|^handle_overflow",
            r"preempt_check",
            r"^str(?:len|n?cmp|n?cpy|lcpy|scpy|chr|n?dup|nlen)$",
            r"wait_rcu_gp",
            r"^sched_show_task|^show_regs|^nmi_|^arch_trigger",
        )
    )
)
NUMBERS = (
    # "scheduling while atomic: kworker/0:1/123/0x00000002": a comm may hold '/' and ':'
    (re.compile(r"(?<=scheduling while atomic: )\S+/\d+/0x[0-9a-f]+"), ""),
    (re.compile(r"\bcpu \d+\b"), "cpu N"),  # "hard LOCKUP on cpu 1"
    (re.compile(r"(?<=kmemleak: )\d+ (?=new suspected)"), ""),  # the periodic scan's count
    (re.compile(r" ?\[size=\d+ bytes\]"), ""),  # DMA-API's mapping size
    (re.compile(r"\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[[\w-]+\])?"), ""),  # function offsets, module
    (re.compile(r"\b(?:0x)?[0-9a-f]{8,}\b"), "ADDR"),  # pointers and hashed pointers
    (re.compile(r"\[(?:[\w/.:-]+):\d+\]"), "[TASK]"),  # "[python3:300]"
    (re.compile(r"(?<=task )\S+:\d+"), "TASK"),  # "task kworker/0:1:39"
    (re.compile(r"(?<=\w)(\.[ch]):\d+(?::\d+)?"), r"\1"),  # line (and column) numbers
    (re.compile(r"CPU#\d+"), "CPU#N"),
    (re.compile(r"\b\d+(?:\.\d+)?\s*(?:s|seconds|jiffies)\b"), "N seconds"),
    (re.compile(r"\[#\d+\]"), ""),
    (re.compile(r"\(active state \d+\)"), ""),
    (re.compile(r", address: \S+"), ""),
    (re.compile(r"\b(?:pid|PID)[: ]+\d+"), "pid N"),
    (re.compile(r" (?:at|for address) ADDR\b"), ""),
    (re.compile(r"(?:^|,? )(?:on CPU#N, )?[\w.^*-]+/\d+(?:/ADDR)?\b"), ""),  # "on CPU#1, comm/pid"
    (re.compile(r" ?\[ADDR\] code:?"), " code"),
    (re.compile(r" in process \S+| pfn:\S+"), ""),
)
SUFFIX_RE = re.compile(r"\.(?:isra|constprop|part|cold|llvm)(?:\.\d+)*$")


def normalise(text: str) -> str:
    """The title without anything that changes from run to run or build to build."""
    for pattern, repl in NUMBERS:
        text = pattern.sub(repl, text)
    return " ".join(text.split()).rstrip(" :,.!")


def _lines(body: str) -> list[str]:
    return [strip_prefix(line) for line in body.splitlines()]


def call_trace(body: str) -> tuple[str, ...]:
    """Function names of the report's first call trace, reliable frames only, in order."""
    frames: list[str] = []
    inside = False
    for line in _lines(body):
        if not inside:
            inside = bool(TRACE_START_RE.search(line))
            continue
        if frames and (TRACE_END_RE.search(line) or not line.strip()):
            break
        match = FRAME_RE.match(line)
        if match and not match["unreliable"]:
            frames.append(match["func"])
    return tuple(frames)


def lock_chain(body: str) -> tuple[str, ...]:
    """Lock classes of a lockdep report: the chain's links (#N ... #0) if it prints one,
    else the lock being acquired and the ones held."""
    lines = _lines(body)
    links = [m["lock"] for m in map(CHAIN_LINK_RE.match, lines) if m]
    if links:
        return tuple(links)
    locks: list[str] = []
    for i, line in enumerate(lines):
        if LOCK_ACQUIRE_RE.search(line) and i + 1 < len(lines):
            match = LOCK_CLASS_RE.search(lines[i + 1])
            if match:
                locks.append(match["lock"])
    return tuple(locks)


def where(kind: SplatKind, title: str, body: str) -> str:
    """The function the report points at, without a compiler suffix (.isra.0, .cold)."""
    return SUFFIX_RE.sub("", _where(kind, title, body))


def _where(kind: SplatKind, title: str, body: str) -> str:
    for pattern in (rf"(?:^| )(?P<func>{FUNC})\+0x", rf" in (?P<func>{FUNC})$"):
        match = re.search(pattern, title)
        if (
            match
            and kind in {SplatKind.KASAN, SplatKind.KFENCE, SplatKind.KMSAN, SplatKind.KCSAN, SplatKind.WARNING}
            and not SKIP_FRAMES.search(match["func"])
        ):
            return match["func"]
    lines = _lines(body)
    if kind == SplatKind.LOCKDEP:
        for i, line in enumerate(lines):
            if LOCK_ACQUIRE_RE.search(line) and i + 1 < len(lines):
                match = LOCK_AT_RE.search(lines[i + 1])
                if match and not SKIP_FRAMES.search(match["func"]):
                    return match["func"]
        # no lock being acquired ("still has locks held!"): where the first held one was taken
        held = next((m for m in map(LOCK_AT_RE.search, lines) if m and not SKIP_FRAMES.search(m["func"])), None)
        if held and not any(LOCK_ACQUIRE_RE.search(line) for line in lines):
            return held["func"]
    if kind in {SplatKind.GPF, SplatKind.OOPS, SplatKind.BUG, SplatKind.KERNEL_BUG, SplatKind.PANIC}:
        for line in lines:
            match = RIP_RE.match(line)
            if match and not SKIP_FRAMES.search(match["func"]):
                return match["func"]
    return next((f for f in call_trace(body) if not SKIP_FRAMES.search(f)), "")


def access(kind: SplatKind, title: str, body: str) -> str:
    """Read or Write, for the memory-safety reports that say."""
    if kind == SplatKind.KASAN:
        for line in _lines(body)[:6]:
            match = ACCESS_RE.match(line)
            if match:
                return match["access"]
    if kind == SplatKind.KFENCE:
        match = KFENCE_ACCESS_RE.search(title)
        if match:
            return match["access"].capitalize()
    return ""


def _what(kind: SplatKind, title: str) -> str:
    """The title's own words, before its location."""
    if kind in {SplatKind.KASAN, SplatKind.KFENCE, SplatKind.KMSAN, SplatKind.KCSAN}:
        return re.split(r" (?:in|at) ", title, maxsplit=1)[0].replace(" read", "").replace(" write", "")
    if kind == SplatKind.WARNING:
        return ""
    if kind == SplatKind.GPF:
        return "general protection fault"
    if kind == SplatKind.KERNEL_BUG:
        return "kernel BUG"
    if kind == SplatKind.HUNG_TASK:
        return "task hung" + (" in I/O wait" if "I/O wait" in title else "")
    if kind == SplatKind.SOFT_LOCKUP:
        return "soft lockup"
    if kind == SplatKind.RCU_STALL:
        return "rcu " + ("expedited " if "expedited" in title else "") + "stall"
    if kind == SplatKind.SLUB:  # "kmalloc-8 (Tainted: G B ): Object already free"
        return re.sub(r" \((?:Not tainted|Tainted:[^)]*)\)", "", title)
    if kind == SplatKind.ODEBUG:
        match = re.match(r"(?P<op>[\w ]+?) (?:\(.*?\) )?object:? .*object type: (?P<type>\S+)", title)
        return f"{match['op']} {match['type']}" if match else title
    return title


PREFIXES = {
    "kasan": "KASAN: ",
    "kfence": "KFENCE: ",
    "kmsan": "KMSAN: ",
    "kcsan": "KCSAN: ",
    "ubsan": "UBSAN: ",
    "warning": "WARNING",
    "lockdep": "lockdep: ",
    "odebug": "ODEBUG: ",
    "hung-task": "INFO: ",
    "rcu-stall": "INFO: ",
    "soft-lockup": "BUG: ",
    "bug": "BUG: ",
    "slub": "SLUB: ",
    "info": "INFO: ",
}


def signature(kind: SplatKind, title: str, body: str) -> str:
    """kind + what + where: e.g. "KASAN: slab-use-after-free Read in pci_p2pdma_map_type"."""
    what = normalise(_what(kind, title))
    if kind in {SplatKind.KASAN, SplatKind.KFENCE}:
        what = " ".join(filter(None, (what, access(kind, title, body))))
    place = where(kind, title, body)
    text = PREFIXES.get(kind, "") + what
    if place and not text.endswith(f" {place}"):
        text += f" in {place}"
    if kind == SplatKind.LOCKDEP:
        chain = lock_chain(body)
        if chain:
            text += f" [{' -> '.join(chain)}]"
    return text.strip()
