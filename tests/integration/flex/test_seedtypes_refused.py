"""The seed's volume types Stowage does not mount are refused by name in the pod's event (SV1)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from agent_cluster import Cluster, cluster, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from volume_plugins.unsupported import UNSUPPORTED  # noqa: E402

pytestmark = pytest.mark.root

SOURCES = {
    "vsphereVolume": {"volumePath": "[ds] vols/v.vmdk"},
    "quobyte": {"registry": "registry:7861", "volume": "v"},
    "cinder": {"volumeID": "1b7c2c4e"},
    "portworxVolume": {"volumeID": "px-1"},
    "scaleIO": {"gateway": "https://gw", "system": "sys", "volumeName": "v", "secretRef": {"name": "sio"}},
    "storageos": {"volumeName": "v"},
    "fc": {"targetWWNs": ["500a0981891b8dc5"], "lun": 0},
    "photonPersistentDisk": {"pdID": "pd-1"},
}


def test_sv1_every_refused_type_gets_a_failed_mount_event_naming_it(cluster: Cluster) -> None:
    """SV1: one pod with a volume of each refused type: a FailedMount event per volume says
    'volume type "<key>" is not supported by Stowage (see README: unsupported volume types)'."""
    assert set(SOURCES) == set(UNSUPPORTED)
    cluster.start_controllers()
    cluster.add_agent("n1")
    volumes = [{"name": key.lower(), key: source} for key, source in SOURCES.items()]
    mounts = [{"name": key.lower(), "mountPath": f"/mnt/{key.lower()}"} for key in SOURCES]
    cluster.apply(pod("refused", volumes=volumes, mounts_=mounts, nodeName="n1"))

    def messages() -> str:
        return "\n".join(e.get("message", "") for e in cluster.events_for("refused") if e.get("reason") == "FailedMount")

    for key in SOURCES:
        expected = (f'MountVolume.SetUp failed for volume "{key.lower()}" : volume type "{key}" is not supported '
                    "by Stowage (see README: unsupported volume types)")
        wait_until(lambda: expected in messages(), f"the FailedMount event for {key}", timeout=60)
    assert cluster.pod("refused")["status"].get("phase") == "Pending"
