"""What a VM test needs from a topology, and which devices play its roles there.

A test declares one Need (`@pytest.mark.topology(..., needs=TRANSFERRING_PAIR)`) instead of
device ids: on any topology (a shipped one or a user's file) `bind` answers the roles
({"provider": "nvme0", "client": "nvme1"}) or None, and `text` says what was missing. The
answers come from the model and the verdict oracle only, so a file without `expect:` is
judged the same way as a shipped one.

core.py holds Need and Roles; p2p.py, hotplug.py and vfio.py the needs each suite declares.
"""

from .core import ANY, Need, Roles, written_for
from .hotplug import HOT_ADD_CMB, HOTPLUG_CMB, HOTPLUG_CMB_AND_SURVIVOR, REPLUG_PROVIDER, UNPLUG_DURING_IO, WHOLE_SWITCH
from .p2p import (
    ACS_REDIR_CLEARED,
    CMB_NVME,
    FAULTING_PAIR,
    NVME_PAIRS,
    ROUTED_PAIR,
    TRANSFERRING_PAIR,
    VIRTIO_BLK_CLIENT,
)
from .vfio import vfio_pair

__all__ = [
    "ACS_REDIR_CLEARED",
    "ANY",
    "CMB_NVME",
    "FAULTING_PAIR",
    "HOTPLUG_CMB",
    "HOTPLUG_CMB_AND_SURVIVOR",
    "HOT_ADD_CMB",
    "NVME_PAIRS",
    "REPLUG_PROVIDER",
    "ROUTED_PAIR",
    "TRANSFERRING_PAIR",
    "UNPLUG_DURING_IO",
    "VIRTIO_BLK_CLIENT",
    "WHOLE_SWITCH",
    "Need",
    "Roles",
    "vfio_pair",
    "written_for",
]
