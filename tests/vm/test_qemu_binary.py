"""The host's QEMU as the testbed probes it (testbed/vm/qemu.py): a version, the device models,
and every model the shipped topologies use, read from the binary that will run them."""

from __future__ import annotations

import pytest

from testbed.render import device_models
from testbed.topology import load_topology, shipped_names
from testbed.vm import qemu

pytestmark = pytest.mark.qemu


def test_the_hosts_qemu_is_probed_once_and_has_every_shipped_model(require_qemu):
    qemu.probe.cache_clear()
    found = qemu.probe()
    assert found.version >= (7, 2, 0) and "edu" in found.devices
    assert qemu.probe() is found
    lacking = {name: found.missing(device_models(load_topology(name))) for name in shipped_names()}
    assert {name: models for name, models in lacking.items() if models} == {}
