from testbed.vm import console
from testbed.vm.qmp import matches

PANIC_LOG = (
    '[    1.234567] VFS: Cannot open root device "vda" or unknown-block(0,0): error -6\r\n'
    "[    1.234600] Kernel panic - not syncing: VFS: Unable to mount root fs on "
    "unknown-block(0,0)\r\n"
    "[    1.234700] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---\r\n"
)


def test_panic_found_and_reason():
    panic = console.find_panic(PANIC_LOG)
    assert panic is not None
    assert panic.reason.startswith("VFS: Unable to mount root fs")
    assert console.find_panic("testbed-init: sshd ready\n") is None


def test_tail_and_describe(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"".join(b"line %d\r\n" % i for i in range(100)) + b"\xff bad utf8\n")
    assert console.tail(log, 2) == "line 99\n\ufffd bad utf8"
    text = console.describe(log, 3)
    assert str(log) in text and "line 98" in text
    assert "empty" in console.describe(tmp_path / "missing.log")


def test_event_match_is_a_subset_match():
    data = {"device": "nvme1", "path": "/machine/peripheral/nvme1", "nested": {"a": 1, "b": 2}}
    assert matches(data, None) and matches(data, {})
    assert matches(data, {"device": "nvme1"})
    assert matches(data, {"nested": {"a": 1}})
    assert not matches(data, {"device": "nvme0"})
    assert not matches(data, {"missing": 1})


def test_numbered_lines_number_the_log_as_splitlines_does(tmp_path):
    """The per-test windows index the log by str.splitlines(); read piece by piece, with a
    line still being written and a form feed inside a line, the numbers must agree."""
    log = tmp_path / "console.log"
    log.write_bytes(b"[ 0.0] one\r\n[ 0.1] two \x0c page\r\n[ 0.2] half")
    lines = console.NumberedLines(log)
    assert lines.new() == [(1, "[ 0.0] one"), (2, "[ 0.1] two "), (3, " page")]
    assert lines.new() == []  # the half line waits for its newline
    with log.open("ab") as f:
        f.write(b" done\r\n[ 0.3] testbed: begin t\r\n")
    assert lines.new() == [(4, "[ 0.2] half done"), (5, "[ 0.3] testbed: begin t")]
    whole = log.read_text().splitlines()
    assert whole[3] == "[ 0.2] half done" and whole[4] == "[ 0.3] testbed: begin t"
    assert console.NumberedLines(log).count() == len(whole)
