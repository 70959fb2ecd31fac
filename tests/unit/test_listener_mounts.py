"""A listener session waits for init's mounts: the listener starts before testbed-init mounts
/etc/fstab, and a session that came at once (the harness's bytes wait in the port as the guest
boots) wrote the agent's helpers under /run before its tmpfs hid them."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pytest

from testbed.paths import GUEST_IMAGES_DIR

sys.path.insert(0, str(GUEST_IMAGES_DIR / "rootfs/usr/local/lib/testbed"))
import agent_listen  # noqa: E402  (the guest image's listener module)

INIT = GUEST_IMAGES_DIR / "rootfs/sbin/testbed-init"


def test_a_session_goes_on_at_once_when_init_has_mounted(tmp_path, capsys):
    marker = tmp_path / "mounted"
    marker.touch()
    agent_listen.wait_for_mounts(str(marker), wait_s=1.0)
    assert capsys.readouterr().err == ""  # nothing to say in the log


def test_a_session_waits_for_the_mounts_and_says_so(tmp_path, capsys):
    marker = tmp_path / "mounted"
    later = threading.Timer(0.3, marker.touch)
    later.start()
    agent_listen.wait_for_mounts(str(marker), wait_s=10.0)
    later.join()
    waited = re.search(r"the session waited ([0-9.]+) s for init's mounts", capsys.readouterr().err)
    assert waited and float(waited.group(1)) >= 0.25


def test_a_session_gives_up_with_the_reason(tmp_path):
    with pytest.raises(SystemExit, match=r"testbed-init has not mounted the filesystems after 0 s \(no .*mounted\)"):
        agent_listen.wait_for_mounts(str(tmp_path / "mounted"), wait_s=0.05)


def test_init_marks_the_mounts_where_the_listener_looks_after_mounting_them():
    lines = INIT.read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip() == f": > {agent_listen.MOUNTED}"]
    assert len(marks) == 1, f"testbed-init must write {agent_listen.MOUNTED} once"
    mount_all = next(i for i, line in enumerate(lines) if line.startswith("mount -a"))
    remount_rw = next(i for i, line in enumerate(lines) if "remount,rw" in line)
    assert mount_all < remount_rw < marks[0]
    # on /run's tmpfs itself: no boot sees a marker an earlier boot left
    fstab = (GUEST_IMAGES_DIR / "rootfs/etc/fstab").read_text().split("\n")
    assert any(line.split()[:3] == ["tmpfs", "/run", "tmpfs"] for line in fstab if line.strip())
    assert Path(agent_listen.MOUNTED).parent == Path("/run")


def test_options_default_to_the_guests_port_and_marker():
    assert agent_listen.options([]) == (agent_listen.PORT, agent_listen.MOUNTED)
    assert agent_listen.options(["--mounted", "/x", "--port", "0"]) == (0, "/x")


@pytest.mark.parametrize("argv", [["--port"], ["--prot", "1"], ["--port", "1", "extra"]])
def test_bad_options_are_a_usage_error(argv):
    with pytest.raises(SystemExit, match=r"usage: testbed-agent-listen \[--port N\] \[--mounted PATH\]"):
        agent_listen.options(argv)
