from testbed.timeouts import TCG_FACTOR, Deadline, Timeouts


def test_tcg_scales_only_guest_paced_waits(monkeypatch):
    monkeypatch.delenv("TESTBED_TIMEOUT_SCALE", raising=False)
    kvm, tcg = Timeouts.for_accel("kvm"), Timeouts.for_accel("tcg")
    assert kvm == Timeouts()
    assert tcg.boot_to_ssh == kvm.boot_to_ssh * TCG_FACTOR
    assert tcg.guest_command == kvm.guest_command * TCG_FACTOR
    assert tcg.event == kvm.event * TCG_FACTOR
    assert (tcg.qmp_connect, tcg.quit, tcg.terminate, tcg.kill) == (kvm.qmp_connect, kvm.quit, kvm.terminate, kvm.kill)


def test_env_scale_multiplies(monkeypatch):
    monkeypatch.setenv("TESTBED_TIMEOUT_SCALE", "2")
    assert Timeouts.for_accel("kvm").boot_to_ssh == Timeouts().boot_to_ssh * 2
    assert Timeouts.for_accel("tcg", scale=1.0).boot_to_ssh == Timeouts().boot_to_ssh * TCG_FACTOR


def test_frozen():
    import dataclasses

    import pytest

    with pytest.raises(dataclasses.FrozenInstanceError):
        Timeouts().quit = 1  # type: ignore[misc]


def test_deadline():
    d = Deadline(0.0)
    assert d.expired and d.remaining() == 0.0
    assert 9 < Deadline(10).remaining() <= 10
