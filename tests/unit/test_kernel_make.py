"""run_make: output goes to the log; a failure names the log, shows its tail and a hint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from testbed.kernel.make import KernelBuildError, jobs, make_argv, run_make


def _script(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_output_goes_to_the_log(tmp_path: Path):
    log = tmp_path / "build.log"
    run_make(_script("print('  CC      a.o'); print('  LD      vmlinux')"), log, "make", print)
    text = log.read_text()
    assert text.startswith("$ ") and "  CC      a.o\n" in text and "vmlinux" in text


def test_failure_names_the_log_and_the_missing_package(tmp_path: Path):
    log = tmp_path / "build.log"
    code = "import sys; [print(f'line {i}') for i in range(100)]; print('/bin/sh: 1: flex: not found'); sys.exit(2)"
    with pytest.raises(KernelBuildError) as err:
        run_make(_script(code), log, "make bzImage", print)
    msg = str(err.value)
    assert str(log) in msg and "make exit 2" in msg
    assert "line 99" in msg and "line 10\n" not in msg  # only the tail
    assert "install: flex" in msg
    assert "line 10\n" in log.read_text()  # the whole output is in the log


def test_argv_is_out_of_tree(tmp_path: Path):
    argv = make_argv(Path("/src"), tmp_path, "bzImage", extra=("-j3",))
    assert argv == ["make", "-C", "/src", f"O={tmp_path}", "-j3", "bzImage"]
    assert jobs() >= 2


def test_an_interrupted_build_ends_make_before_unwinding(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM during make: make is stopped and waited for before the kernel lock
    goes, so no other build starts in a directory make still writes."""
    import os

    import pytest

    from testbed.kernel import make

    monkeypatch.setattr(make, "PROGRESS_EVERY", 0)
    script = f"echo $$ > {tmp_path}/pid; while true; do echo '  CC x.o'; sleep 0.05; done"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make.run_make(["sh", "-c", script], tmp_path / "build.log", "make", interrupt)
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
