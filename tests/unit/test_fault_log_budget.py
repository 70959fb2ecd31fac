"""Room in the kernel's rate limit for a fault report that must be logged (testbed/guestvm/p2p.py
fault_log_wait, testbed/in_guest/kmsg.py rate_limit_uses), counted on a recorded kernel log.

intel-iommu's dmar_fault() has one limit (5 s, 10 uses) for its "DRHD: handling fault status"
line, each fault record it prints, and one unprinted use per interrupt (the loop's look that
finds no more records). The log below is a p2pdma-thru-iommu run's: three interrupts of a DMA
loop took 9 uses, the fourth printed its status line (the 10th) and lost its record.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from testbed.guestvm.p2p import (
    FAULT_LOG_BURST,
    FAULT_LOG_NEED,
    FAULT_LOG_SETTLE_S,
    FAULT_LOG_WINDOW_S,
    RATE_LIMITED_RE,
    TWICE_RE,
    fault_log_wait,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "in_guest"))
from kmsg import rate_limit_uses  # noqa: E402  (an in-guest helper: a module of its own directory)

RECORD = (
    "DMAR: [DMA Write NO_PASID] Request device [0000:01:00.0] fault addr 0xffe02000 "
    "[fault reason 0x05] PTE Write access is not set"
)
STATUS = "DMAR: DRHD: handling fault status reg 2"
LOG = [
    (11_142_845, "testbed: begin tests/vm/test_p2pdma_api.py::test_revoke_by_unplug[p2pdma-thru-iommu]"),
    (17_306_015, STATUS),
    (17_306_230, RECORD),
    (17_400_000, "DMAR: DRHD base: 0x000000fed90000 flags: 0x0"),  # not a fault report
    (17_507_961, STATUS),
    (17_508_187, RECORD),
    (17_714_055, STATUS),
    (17_714_270, RECORD),
    (17_917_933, STATUS),  # the 10th use: its record was not printed
]
VIOMMU = "virtio_iommu virtio0: page fault from EP 256 at 0xffe02345 []"


def uses(log, now_us):
    return rate_limit_uses(log, now_us, FAULT_LOG_WINDOW_S, RATE_LIMITED_RE, TWICE_RE)


def test_each_report_is_a_use_and_each_interrupt_one_more():
    ages = uses(LOG, 18_000_000)
    assert len(ages) == 4 * 2 + 3  # 4 status lines (and their interrupts' unprinted uses), 3 records
    assert ages == sorted(ages, reverse=True) and ages[0] == pytest.approx(0.693985)
    assert uses([(1_000_000, VIOMMU)], 2_000_000) == [1.0]  # virtio-iommu: one per report


def test_reports_older_than_the_window_and_other_lines_do_not_count():
    just_past_the_first = 17_306_015 + int(FAULT_LOG_WINDOW_S * 1e6) + 1
    ages = uses(LOG, just_past_the_first)
    assert len(ages) == 11 - 2 and ages[0] == pytest.approx((just_past_the_first - 17_306_230) / 1e6)
    assert uses(LOG, 30_000_000) == []
    assert uses([(1_000_000, "nvme nvme0: I/O 3 QID 1 timeout, reset controller")], 1_500_000) == []


def test_a_report_after_the_look_is_a_use_as_of_now():
    assert uses([(2_000_000, VIOMMU)], 1_900_000) == [0.0]


def test_a_full_window_is_waited_out_until_enough_uses_leave_it():
    ages = uses(LOG, 18_000_000)  # 11 uses, 7 may stay
    wait = fault_log_wait(ages)
    excess = len(ages) - (FAULT_LOG_BURST - FAULT_LOG_NEED)
    assert excess == 4
    # the 4th oldest use (the second interrupt's status line, 0.492 s old) must leave the window
    assert wait == pytest.approx(FAULT_LOG_WINDOW_S - (18_000_000 - 17_507_961) / 1e6)
    later = 18_000_000 + int(wait * 1e6) + 1
    assert len(uses(LOG, later)) <= FAULT_LOG_BURST - FAULT_LOG_NEED
    assert fault_log_wait(uses(LOG, later)) == 0.0


def test_room_left_means_no_wait_and_a_fresh_report_settles_first():
    assert fault_log_wait([]) == 0.0
    assert fault_log_wait([4.0, 3.0, 2.0]) == 0.0
    assert fault_log_wait([4.0, 0.1]) == pytest.approx(FAULT_LOG_SETTLE_S - 0.1)


def test_the_patterns_are_the_kernels_lines():
    assert RATE_LIMITED_RE.search(RECORD) and RATE_LIMITED_RE.search(STATUS) and RATE_LIMITED_RE.search(VIOMMU)
    assert TWICE_RE.search(STATUS) and not TWICE_RE.search(RECORD)
    assert not RATE_LIMITED_RE.search("DMAR: DRHD base: 0x000000fed90000 flags: 0x0")
    assert re.search(RATE_LIMITED_RE, "DMAR: [INTR-REMAP] Request device [00:1f.0] fault index 0x0")
