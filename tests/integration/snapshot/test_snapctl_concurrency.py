"""Two controller managers on one store at once (two replicas without leader election): every snapshot gets
exactly one content and one backend snapshot, and deleting them all leaves nothing (VS21, VS31, VS34, VS36)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioners import registry
from provisioners.hostpath import SNAPSHOT_DIR, HostPathProvisioner
from support import get_or_none, running_controllers, wait_for

from snapctl_support import claim, snapshot, snapshot_class, storage_class

N = 8


def test_two_managers_cut_each_snapshot_once_and_delete_everything(store: Any, tmp_path: Path) -> None:
    hp = HostPathProvisioner(tmp_path / "hostpath")
    registry.register(hp)
    try:
        with running_controllers(store), running_controllers(store):
            store.create("storageclasses", storage_class("hp", hp.name, str(hp.root)))
            store.create("volumesnapshotclasses", snapshot_class("hp-snap", hp.name, default=True))
            store.create("persistentvolumeclaims", claim("src"))

            def bound() -> Any:
                c = get_or_none(store, "persistentvolumeclaims", "default", "src")
                return c if (c or {}).get("status", {}).get("phase") == "Bound" else None

            pv = store.get("persistentvolumes", "", wait_for(bound, "src Bound", 60)["spec"]["volumeName"])
            (Path(pv["spec"]["hostPath"]["path"]) / "f").write_text("x")
            for i in range(N):
                store.create("volumesnapshots", snapshot(f"s{i}", "src"))

            def all_ready() -> bool:
                items, _ = store.list("volumesnapshots", "default")
                return len(items) == N and all((s.get("status") or {}).get("readyToUse") is True for s in items)

            wait_for(all_ready, "every snapshot ready", 120, interval=0.1)
            snapshots = {s["metadata"]["uid"]: s for s in store.list("volumesnapshots", "default")[0]}
            contents, _ = store.list("volumesnapshotcontents")
            assert sorted(c["metadata"]["name"] for c in contents) == sorted(f"snapcontent-{u}" for u in snapshots)
            for c in contents:
                assert snapshots[c["spec"]["volumeSnapshotRef"]["uid"]]["status"]["boundVolumeSnapshotContentName"] \
                    == c["metadata"]["name"]
            copies = [p for p in (hp.root / SNAPSHOT_DIR).iterdir() if p.is_dir()]
            assert sorted(p.name for p in copies) == sorted(c["metadata"]["name"] for c in contents)

            for i in range(N):
                store.delete("volumesnapshots", "default", f"s{i}")
            wait_for(lambda: not store.list("volumesnapshots", "default")[0] and not store.list("volumesnapshotcontents")[0],
                     "snapshots and contents gone", 120, interval=0.1)
            assert list((hp.root / SNAPSHOT_DIR).iterdir()) == []
            claim_now = store.get("persistentvolumeclaims", "default", "src")
            assert "snapshot.storage.kubernetes.io/pvc-as-source-protection" not in (claim_now["metadata"].get("finalizers") or [])
    finally:
        registry.unregister(hp.name)
