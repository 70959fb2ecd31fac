"""p2pmem.py's O_DIRECT I/O (_parallel_io): `depth` slices in flight, each on a thread of its
own; one slice runs on the caller's thread (a thread start and join cost ~3 ms under TCG, and
the thousand-cycle test made two per cycle: 7 s of its 9)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "in_guest"))
import p2pmem  # noqa: E402  (in-guest helpers: modules of their own directory)

PAGE = 4096


@pytest.fixture
def fd(tmp_path):
    fd = os.open(tmp_path / "disk", os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, 64 * PAGE)
    yield fd
    os.close(fd)


def test_one_slice_is_written_and_read_on_the_callers_thread(fd, monkeypatch):
    def no_thread(*args, **kwargs):
        raise AssertionError("a thread started for one I/O")

    monkeypatch.setattr(p2pmem.threading, "Thread", no_thread)
    data = bytes(range(256)) * 16
    p2pmem._parallel_io(fd, memoryview(data), PAGE, 1, write=True)
    back = bytearray(len(data))
    p2pmem._parallel_io(fd, memoryview(back), PAGE, 1, write=False)
    assert bytes(back) == data and os.pread(fd, len(data), PAGE) == data


def test_slices_in_flight_each_land_at_their_offset(fd):
    data = b"".join(bytes([n]) * PAGE for n in range(8))
    p2pmem._parallel_io(fd, memoryview(data), 2 * PAGE, 4, write=True)
    assert os.pread(fd, len(data), 2 * PAGE) == data


def test_a_short_io_is_an_error(fd):
    os.ftruncate(fd, PAGE)
    with pytest.raises(OSError, match="short read: 4096 of 8192"):
        p2pmem._parallel_io(fd, memoryview(bytearray(2 * PAGE)), 0, 1, write=False)
