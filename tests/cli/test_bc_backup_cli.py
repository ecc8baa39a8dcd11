"""``stowage backup create|list|restore|delete`` against a real API server, through the real console script
(SEMANTICS BC1-BC9). No snapshot controller runs here: the test plays its part (readyToUse, restoreSize)
through the status subresource, so what is checked is exactly what the CLI writes and prints."""
from __future__ import annotations

import base64
import subprocess
from typing import Any

import pytest

from cliutil import Cli, parse_table
from support import stowage_executable

STORE = "s3://team-backups/prod?endpoint=http://127.0.0.1:9&region=us-east-1"
LIST_HEADERS = ["NAME", "CLAIM", "READY", "SIZE", "CREATED", "STORE"]


def _claim(cli: Cli, name: str, namespace: str = "default", storage_class: str = "fast") -> None:
    cli.client().create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "metadata": {"name": name, "namespace": namespace},
                         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                                  "resources": {"requests": {"storage": "1Gi"}}}})


def _secret(cli: Cli, name: str = "s3-creds", namespace: str = "default") -> None:
    data = {"accessKeyID": "AKIDEXAMPLE", "secretAccessKey": "very-secret-value-123"}
    cli.client().create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                         "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def _namespace(cli: Cli, name: str) -> None:
    cli.client().create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def _ready(cli: Cli, name: str, size: str = "1Gi", namespace: str = "default") -> dict[str, Any]:
    """The snapshot controller's part: the backup finished."""
    client = cli.client()
    snap = client.get("volumesnapshots", name, namespace)
    snap["status"] = {"readyToUse": True, "restoreSize": size, "creationTime": "2026-11-30T21:00:00Z"}
    return client.update_status(snap)


def _backup_classes(cli: Cli) -> list[dict[str, Any]]:
    return [c for c in cli.client().list("volumesnapshotclasses")[0] if c.get("driver") == "backup.stowage.io"]


def test_create_with_a_store_makes_or_reuses_one_class(cli: Cli) -> None:
    """BC2/BC3: --to/--secret makes a class with driver backup.stowage.io and the external-snapshotter's secret
    parameters, reused by the next backup to the same place; the backup is a VolumeSnapshot of the claim."""
    _claim(cli, "db")
    _claim(cli, "logs")
    _secret(cli)
    out = cli.ok("backup", "create", "db", "--to", STORE, "--secret", "s3-creds", "--name", "db-1")
    classes = _backup_classes(cli)
    assert len(classes) == 1
    cls = classes[0]
    assert cls["parameters"] == {"store": STORE, "csi.storage.k8s.io/snapshotter-secret-name": "s3-creds",
                                 "csi.storage.k8s.io/snapshotter-secret-namespace": "default"}
    assert cls["deletionPolicy"] == "Delete"
    name = cls["metadata"]["name"]
    assert out.splitlines() == [f"volumesnapshotclass.snapshot.storage.k8s.io/{name} created",
                                "volumesnapshot.snapshot.storage.k8s.io/db-1 created"]
    snap = cli.client().get("volumesnapshots", "db-1", "default")
    assert snap["spec"] == {"volumeSnapshotClassName": name, "source": {"persistentVolumeClaimName": "db"}}
    assert snap["metadata"]["labels"]["backup.stowage.io/claim"] == "db"

    out = cli.ok("backup", "create", "logs", "--to", STORE, "--secret", "s3-creds")
    assert len(_backup_classes(cli)) == 1, "a second backup to the same store made another class"
    made = out.strip().split("/")[-1].removesuffix(" created")
    assert made.startswith("logs-") and len(made) == len("logs-") + 14
    assert cli.client().get("volumesnapshots", made, "default")["spec"]["volumeSnapshotClassName"] == name

    out = cli.ok("backup", "create", "db", "--class", name, "--name", "db-2")
    assert out == "volumesnapshot.snapshot.storage.k8s.io/db-2 created\n"


@pytest.mark.parametrize(("args", "message"), [
    (["db"], "give exactly one of --class VSCLASS or --to STORE_URL --secret NAME"),
    (["db", "--to", STORE], "--to needs --secret NAME"),
    (["db", "--to", "ftp://x/y", "--secret", "s3-creds"], "--to: 'ftp://x/y' is not an object store URL"),
    (["db", "--to", STORE, "--secret", "nope"], '--secret: secret "nope" not found in namespace "default"'),
    (["db", "--class", "csi-snaps"], "--class: volumesnapshotclass csi-snaps has driver 'csi.example.com'"),
    (["missing", "--class", "csi-snaps"], 'persistentvolumeclaims "missing" not found'),
])
def test_create_refusals_name_the_flag(cli: Cli, args: list[str], message: str) -> None:
    """BC4: a bad command line is one error line naming the flag; nothing is created; no secret value shown."""
    _claim(cli, "db")
    _secret(cli)
    cli.client().create({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                         "metadata": {"name": "csi-snaps"}, "driver": "csi.example.com", "deletionPolicy": "Delete"})
    result = cli.run("backup", "create", *args)
    assert result.code == 1
    assert message in result.err
    assert "very-secret-value" not in result.err + result.out
    assert cli.client().list("volumesnapshots", "default")[0] == []


def test_list_shows_backups_only(cli: Cli) -> None:
    """BC5: NAME CLAIM READY SIZE CREATED STORE for snapshots of backup classes (not other snapshots); -A adds
    NAMESPACE; none -> a message on stderr."""
    _namespace(cli, "team")
    for ns in ("default", "team"):
        _claim(cli, "db", ns)
        _secret(cli, namespace=ns)
    empty = cli.run("backup", "list")
    assert empty.code == 0 and empty.out == "" and "No backups found in default namespace." in empty.err
    cli.ok("backup", "create", "db", "--to", STORE, "--secret", "s3-creds", "--name", "b-ready")
    cli.ok("backup", "create", "db", "--to", STORE, "--secret", "s3-creds", "--name", "b-pending")
    cli.ok("backup", "create", "db", "--to", "gs://other/x", "--secret", "s3-creds", "--name", "b-team", "-n", "team")
    cli.client().create({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                         "metadata": {"name": "csi-snaps"}, "driver": "csi.example.com",
                         "deletionPolicy": "Delete"})
    cli.client().create({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                         "metadata": {"name": "plain", "namespace": "default"},
                         "spec": {"volumeSnapshotClassName": "csi-snaps", "source": {"persistentVolumeClaimName": "db"}}})
    _ready(cli, "b-ready", "2Gi")

    rows = parse_table(cli.ok("backup", "list"), LIST_HEADERS)
    created_pending = cli.client().get("volumesnapshots", "b-pending", "default")["metadata"]["creationTimestamp"]
    assert rows == [
        {"NAME": "b-pending", "CLAIM": "db", "READY": "false", "SIZE": "<unknown>", "CREATED": created_pending,
         "STORE": "s3://team-backups/prod"},
        {"NAME": "b-ready", "CLAIM": "db", "READY": "true", "SIZE": "2Gi", "CREATED": "2026-11-30T21:00:00Z",
         "STORE": "s3://team-backups/prod"},
    ]
    rows = parse_table(cli.ok("backup", "list", "-A"), ["NAMESPACE", *LIST_HEADERS])
    assert [(r["NAMESPACE"], r["NAME"], r["STORE"]) for r in rows] == [
        ("default", "b-pending", "s3://team-backups/prod"), ("default", "b-ready", "s3://team-backups/prod"),
        ("team", "b-team", "gs://other/x")]
    assert [r["NAME"] for r in parse_table(cli.ok("backup", "list", "-n", "team"), LIST_HEADERS)] == ["b-team"]


def test_restore_makes_a_claim_from_the_backup(cli: Cli) -> None:
    """BC6/BC7: restore is a PVC whose dataSource is the VolumeSnapshot, sized by the backup (or --size, never
    smaller), in the backed-up claim's class unless --storage-class says otherwise."""
    _claim(cli, "db", storage_class="fast")
    _secret(cli)
    cli.ok("backup", "create", "db", "--to", STORE, "--secret", "s3-creds", "--name", "b1")
    early = cli.run("backup", "restore", "b1", "--claim", "too-early")
    assert early.code == 1 and "backup b1 has no size yet (is it ready?); give --size" in early.err
    _ready(cli, "b1", "3Gi")

    assert cli.ok("backup", "restore", "b1", "--claim", "db-copy") == "persistentvolumeclaim/db-copy created\n"
    spec = cli.client().get("persistentvolumeclaims", "db-copy", "default")["spec"]
    assert spec["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "b1"}
    assert spec["resources"]["requests"]["storage"] == "3Gi"
    assert spec["storageClassName"] == "fast" and spec["accessModes"] == ["ReadWriteOnce"]

    cli.ok("backup", "restore", "b1", "--claim", "db-big", "--size", "5Gi", "--storage-class", "slow")
    spec = cli.client().get("persistentvolumeclaims", "db-big", "default")["spec"]
    assert spec["resources"]["requests"]["storage"] == "5Gi" and spec["storageClassName"] == "slow"

    small = cli.run("backup", "restore", "b1", "--claim", "db-small", "--size", "1Gi")
    assert small.code == 1 and "--size: 1Gi is smaller than the backup (3Gi)" in small.err
    missing = cli.run("backup", "restore", "nope", "--claim", "x")
    assert missing.code == 1 and 'volumesnapshots.snapshot.storage.k8s.io "nope" not found' in missing.err


def test_delete_removes_backups_but_not_other_snapshots(cli: Cli) -> None:
    """BC8: delete removes the VolumeSnapshot of a backup; a snapshot of another driver is refused."""
    _claim(cli, "db")
    _secret(cli)
    cli.ok("backup", "create", "db", "--to", STORE, "--secret", "s3-creds", "--name", "b1")
    cli.client().create({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                         "metadata": {"name": "csi-snaps"}, "driver": "csi.example.com",
                         "deletionPolicy": "Delete"})
    cli.client().create({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                         "metadata": {"name": "plain", "namespace": "default"},
                         "spec": {"volumeSnapshotClassName": "csi-snaps", "source": {"persistentVolumeClaimName": "db"}}})
    refused = cli.run("backup", "delete", "plain")
    assert refused.code == 1 and "volumesnapshot plain is not a backup" in refused.err
    assert cli.ok("backup", "delete", "b1") == 'volumesnapshot.snapshot.storage.k8s.io "b1" deleted\n'
    names = [s["metadata"]["name"] for s in cli.client().list("volumesnapshots", "default")[0]]
    assert names == ["plain"]


def test_create_wait_returns_when_ready(cli: Cli) -> None:
    """BC9: --wait watches the snapshot and returns once it is readyToUse, printing its size; an error on the
    snapshot ends the wait with that error."""
    _claim(cli, "db")
    _secret(cli)
    argv = [stowage_executable(), "backup", "create", "db", "--to", STORE, "--secret", "s3-creds", "--name", "w1",
            "--wait", "--timeout", "60s", "--kubeconfig", str(cli.kubeconfig)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cli.cwd,
                          env=cli.env()) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline(), proc.stdout.readline()]
            assert lines[1] == "volumesnapshot.snapshot.storage.k8s.io/w1 created\n"
            _ready(cli, "w1", "7Gi")
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert out == "volumesnapshot.snapshot.storage.k8s.io/w1 ready (7Gi)\n"

    argv[argv.index("w1")] = "w2"
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cli.cwd,
                          env=cli.env()) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "volumesnapshot.snapshot.storage.k8s.io/w2 created\n"
            snap = cli.client().get("volumesnapshots", "w2", "default")
            snap["status"] = {"readyToUse": False, "error": {"message": "store unreachable", "time": "2026-11-30T21:00:00Z"}}
            cli.client().update_status(snap)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1
    assert "backup w2: failed: store unreachable" in err


def test_get_backupschedules_prints_cronjob_columns(cli: Cli) -> None:
    """BC14: `stowage get backupschedules` (and the Table the server sends kubectl) has CronJob's columns."""
    cli.client().create({"apiVersion": "backup.stowage.io/v1alpha1", "kind": "BackupSchedule",
                         "metadata": {"name": "nightly", "namespace": "default"},
                         "spec": {"schedule": "0 3 * * *", "claimName": "db", "volumeSnapshotClassName": "b",
                                  "retention": {"keepLast": 7}}})
    rows = parse_table(cli.ok("get", "backupschedules"), ["NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"])
    assert len(rows) == 1
    assert {k: rows[0][k] for k in ("NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE")} == {
        "NAME": "nightly", "SCHEDULE": "0 3 * * *", "SUSPEND": "False", "ACTIVE": "0", "LAST SCHEDULE": "<none>"}
    bad = cli.run("apply", "-f", "-", stdin="""apiVersion: backup.stowage.io/v1alpha1
kind: BackupSchedule
metadata: {name: broken}
spec: {schedule: "every day", claimName: db, volumeSnapshotClassName: b}
""")
    assert bad.code == 1 and "spec.schedule" in bad.err
