"""Under TCG a host thread per vCPU unless $TESTBED_TCG_THREAD says single
(testbed/vm/tcg_threads.py), and the choice reaches QEMU's argv."""

from __future__ import annotations

from dataclasses import replace

import pytest

from testbed.errors import ConfigError
from testbed.render import render_argv
from testbed.render.argv import preview_runtime
from testbed.topology import load_topology
from testbed.vm.tcg_threads import TCG_THREAD_ENV, choose_tcg_threads


def test_a_thread_per_vcpu_unless_the_environment_says_single(monkeypatch):
    monkeypatch.delenv(TCG_THREAD_ENV, raising=False)
    assert choose_tcg_threads().mode == "multi"
    monkeypatch.setenv(TCG_THREAD_ENV, "single")
    chosen = choose_tcg_threads()
    assert chosen.mode == "single" and TCG_THREAD_ENV in chosen.reason
    monkeypatch.setenv(TCG_THREAD_ENV, "many")
    with pytest.raises(ConfigError, match="'many': not one of multi, single"):
        choose_tcg_threads()


def test_the_mode_is_in_the_accel_option():
    topo = load_topology("two-switch")
    runtime = preview_runtime()
    assert "tcg,thread=multi" in render_argv(topo, runtime)
    assert "tcg,thread=single" in render_argv(topo, replace(runtime, tcg_thread="single"))
    kvm = render_argv(topo, replace(runtime, accel="kvm", tcg_thread="single"))
    assert "kvm" in kvm and not any("thread=" in a for a in kvm)
