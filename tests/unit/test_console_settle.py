"""Before a shutdown, the console of a DEBUG_KOBJECT_RELEASE kernel is given time to print what
its delayed releases bring: a shutdown in that second cut a known ODEBUG report in half (its
call trace gone, so it no longer matched its known-splats entry and failed the run)."""

from __future__ import annotations

import os
import threading
import time

from testbed.vm.console import settle

DELAYED = (
    "[   39.646305] kobject: '0000:03:00.0' (0000000057e9d22d): kobject_release, parent 0000000000000000 "
    "(delayed 250)\n"
)


def test_a_kernel_without_delayed_releases_is_not_waited_for(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("[    3.1] testbed-init: sshd ready\n[   20.0] testbed: end t\n")  # written just now
    assert settle(log, quiet_s=0.5, max_s=5) == 0.0


def test_delayed_releases_are_waited_for_until_the_console_is_quiet(tmp_path):
    log = tmp_path / "console.log"
    log.write_text(DELAYED)  # written just now: the release is still due
    started = time.monotonic()
    waited = settle(log, quiet_s=0.5, max_s=5)
    assert 0.4 <= waited <= 2.0 and time.monotonic() - started < 2.5
    stale = time.time() - 10
    os.utime(log, (stale, stale))  # printed long ago: nothing is due any more
    assert settle(log, quiet_s=0.5, max_s=5) < 0.1


def test_a_console_that_never_goes_quiet_is_waited_for_at_most_max_s(tmp_path):
    log = tmp_path / "console.log"
    log.write_text(DELAYED)
    started = time.monotonic()

    done = threading.Event()

    def keep_printing() -> None:  # until the wait is over: it must not outlast max_s
        while not done.is_set() and time.monotonic() - started < 3:
            with log.open("a") as f:
                f.write("[   40.0] kobject: noise\n")
            time.sleep(0.05)

    printer = threading.Thread(target=keep_printing)
    printer.start()
    waited = settle(log, quiet_s=0.5, max_s=1.0)
    done.set()
    printer.join()
    assert 0.9 <= waited <= 1.5
