"""SV9: the VolumeNotIdmapped event names the pod's volumes, also for a copy staged for a subPath."""
from __future__ import annotations

from pathlib import Path

from storage.agent.runtime.pod import _volume_names


def test_sources_are_named_by_their_volume_whether_its_own_directory_or_a_staged_copy(tmp_path: Path) -> None:
    own, shared, staged = tmp_path / "vol-data", tmp_path / "vol-shared", tmp_path / "staging" / "1"
    for path in (own, shared, staged):
        path.mkdir(parents=True)
    container = {"volumeMounts": [{"name": "data", "mountPath": "/data"},
                                  {"name": "shared", "mountPath": "/logs", "subPath": "logs"}]}
    volumes = {"data": str(own), "shared": str(shared)}
    assert _volume_names(volumes, container, [None, str(staged)], [str(own), str(staged)]) == ["data", "shared"]
    # A source the pod does not know by any name is shown by its path's last part, not dropped.
    assert _volume_names(volumes, container, [None, None], [str(staged)]) == ["1"]
