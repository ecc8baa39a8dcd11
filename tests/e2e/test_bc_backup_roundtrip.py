"""A claim's data to moto's S3 and back through the CLI on a real `stowage up` (SEMANTICS BC2, BC5, BC6, BC8,
BC9): a pod writes a token on a local (loop-backed ext4) claim, `stowage backup create --to --secret --wait`
backs it up, `stowage backup restore` makes a new claim from it, a second pod reads the token there, and
`stowage backup delete` removes the backup and its manifest from the bucket.

Needs the snapshot controller (helper snapctl), the backup snapshotter and agent backups (snaplocal) and the
backup engine (backupstore): it runs once those are merged, and skips before.
"""
from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest
import yaml

from stowage_e2e import Stowage, poll

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]
for _module in ("storage.controllers.snapshot", "provisioners.backup", "storage.system.backupstore"):
    pytest.importorskip(_module, reason="runs once the snapshot controller, backup snapshotter and engine are merged")

TOKEN = secrets.token_hex(16)
# The BackupSchedule controller's clock runs this many times faster than real time (SEMANTICS CI1): a
# cron minute passes in 10 real seconds, so the schedule test sees two runs in seconds instead of minutes.
CLOCK_RATE = 6
LOOP = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


def _pod(name: str, claim: str, script: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 2,
                     "containers": [{"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c"],
                                     "args": [f"{script}; {LOOP}"],
                                     "readinessProbe": {"exec": {"command": ["grep", "-q", TOKEN, "/data/token"]},
                                                        "periodSeconds": 1},
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}


@pytest.fixture(scope="module")
def cluster(start_stowage: Any, tmp_path_factory: pytest.TempPathFactory) -> Stowage:
    files = tmp_path_factory.mktemp("bc-manifests")
    docs = [
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local-ssd"},
         "provisioner": "stowage.io/local", "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete",
         "parameters": {"fsType": "ext4"}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-ssd",
                  "resources": {"requests": {"storage": "256Mi"}}}},
        _pod("writer", "data", f"echo {TOKEN} > /data/token; sync"),
    ]
    (files / "bc.yaml").write_text(yaml.safe_dump_all(docs))
    stowage = start_stowage([files / "bc.yaml"], env={"STOWAGE_TEST_CLOCK_RATE": str(CLOCK_RATE)})
    stowage.wait_ready("app=writer", ["writer"], timeout=300)
    return stowage


@pytest.mark.parametrize("object_store_target", ["s3"], indirect=True)
def test_backup_restore_delete_round_trip(cluster: Stowage, object_store_target: Any) -> None:
    from storage.system.backupstore import list_backups, open_store

    target = object_store_target
    client = cluster.client
    client.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": "default"},
                   "data": {k: base64.b64encode(v.encode()).decode() for k, v in target.credentials.items()}})

    out = cluster.cli("backup", "create", "data", "--to", target.url, "--secret", "s3", "--name", "b1",
                      "--wait", "--timeout", "10m", timeout=700).stdout
    assert out.splitlines()[-1].startswith("volumesnapshot.snapshot.storage.k8s.io/b1 ready (")
    lines = cluster.cli("backup", "list").stdout.splitlines()  # no cell holds a space
    assert lines[0].split() == ["NAME", "CLAIM", "READY", "SIZE", "CREATED", "STORE"]
    assert [(c[0], c[1], c[2], c[5]) for c in (line.split() for line in lines[1:])] == [
        ("b1", "data", "true", target.url.split("?")[0])]
    store = open_store(target.url, target.credentials)
    assert len(list_backups(store)) == 1, "no manifest in the bucket after a ready backup"

    cluster.cli("backup", "restore", "b1", "--claim", "restored")
    client.create(_pod("reader", "restored", "cat /data/token"))
    cluster.wait_ready("app=reader", ["reader"], timeout=600)  # ready = the token is on the restored volume
    assert client.get("persistentvolumeclaims", "restored", "default")["status"]["phase"] == "Bound"

    assert cluster.cli("backup", "delete", "b1").stdout == 'volumesnapshot.snapshot.storage.k8s.io "b1" deleted\n'
    poll("b1 and its content gone",
         lambda: not [s for s in client.list("volumesnapshots", "default")[0] if s["metadata"]["name"] == "b1"],
         120, diagnose=cluster.describe)
    poll("the manifest deleted from the bucket (class deletionPolicy Delete)", lambda: list_backups(store) == [],
         120, diagnose=cluster.describe)
    for pod in ("reader", "writer"):
        client.delete("pods", pod, "default")


@pytest.mark.parametrize("object_store_target", ["s3"], indirect=True)
def test_schedule_every_minute_keeps_the_last_one(cluster: Stowage, object_store_target: Any) -> None:
    """BC15, BC19, BC22 on the real controllers and cron code, the controller's clock sped up (CI1): a schedule
    `* * * * *` with keepLast 1 makes a backup each (clock) minute through the snapshot controller, scheduled
    on whole minutes; once the second is ready the first is deleted, and with it its manifest in the bucket."""
    from storage.api.timestamps import parse_time
    from storage.system.backupstore import list_backups, open_store

    target = object_store_target
    client = cluster.client
    client.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-sched", "namespace": "default"},
                   "data": {k: base64.b64encode(v.encode()).decode() for k, v in target.credentials.items()}})
    client.create({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                   "metadata": {"name": "every-minute"}, "driver": "backup.stowage.io", "deletionPolicy": "Delete",
                   "parameters": {"store": target.url, "csi.storage.k8s.io/snapshotter-secret-name": "s3-sched",
                                  "csi.storage.k8s.io/snapshotter-secret-namespace": "default"}})
    client.create({"apiVersion": "backup.stowage.io/v1alpha1", "kind": "BackupSchedule",
                   "metadata": {"name": "minutely", "namespace": "default"},
                   "spec": {"schedule": "* * * * *", "claimName": "data", "volumeSnapshotClassName": "every-minute",
                            "retention": {"keepLast": 1}}})

    def mine() -> list[dict[str, Any]]:
        items = client.list("volumesnapshots", "default", label_selector="backup.stowage.io/schedule=minutely")[0]
        return sorted(items, key=lambda s: s["metadata"]["name"])

    first = poll("the first scheduled backup ready",
                 lambda: [s for s in mine() if (s.get("status") or {}).get("readyToUse")], 200,
                 diagnose=cluster.describe)[0]["metadata"]["name"]
    assert first.startswith("minutely-data-")
    later = poll("a later backup ready and the first pruned",
                 lambda: (ready := [s for s in mine() if (s.get("status") or {}).get("readyToUse")])
                 and first not in [s["metadata"]["name"] for s in ready] and ready, 200, diagnose=cluster.describe)
    # Real cron semantics on the fast clock: every run is on a whole minute, each run's own minute.
    times = [parse_time(s["metadata"]["annotations"]["backup.stowage.io/scheduled-at"]) for s in later]
    assert all(t is not None and t.second == 0 and t.microsecond == 0 for t in times), times
    assert len(set(times)) == len(times), times
    store = open_store(target.url, target.credentials)
    poll("one manifest left in the bucket", lambda: len(list_backups(store)) == 1, 120, diagnose=cluster.describe)
    status = client.get("backupschedules", "minutely", "default")["status"]
    assert status["lastScheduleTime"] and status["lastSuccessfulTime"]
    schedule = client.get("backupschedules", "minutely", "default")
    schedule["spec"]["suspend"] = True
    client.update(schedule)
