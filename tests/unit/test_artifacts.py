"""Failure artifacts: the console excerpt carries the boot banner so scan-log can tell known splats."""

from __future__ import annotations

from types import SimpleNamespace

from testbed.logs.known import kernel_release
from testbed.pytest_plugin.artifacts import collect


def test_console_excerpt_starts_with_the_boot_banner(tmp_path):
    log = tmp_path / "console.log"
    log.write_text(
        "[ 0.0] Linux version 7.2.13-testbed (gcc) #1\n" + "".join(f"[ 1.{i}] line {i}\n" for i in range(50))
    )
    machine = SimpleNamespace(
        console_log=log,
        argv=["qemu-system-x86_64"],
        events_log=tmp_path / "none.jsonl",
        run=lambda *a, **k: SimpleNamespace(stdout="dmesg text", status=0),
    )
    dest = tmp_path / "out"
    dest.mkdir()
    collect(SimpleNamespace(machine=machine), dest, (40, 45))
    excerpt = (dest / "console-excerpt.log").read_text().splitlines()
    assert kernel_release(excerpt) == "7.2.13-testbed"
    assert excerpt[1:] == log.read_text().splitlines()[39:45]
