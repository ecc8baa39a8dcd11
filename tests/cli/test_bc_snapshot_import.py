"""``stowage snapshot import`` against a real object store (moto's S3 server): a backup written by "another
cluster" (the backup engine, straight to the bucket) becomes a pre-provisioned VolumeSnapshotContent and a
VolumeSnapshot bound to it here (SEMANTICS BC10, BC11). Needs storage.system.backupstore (helper
"backupstore"); the test runs once that is merged."""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from cliutil import Cli, parse_table

pytest.importorskip("storage.system.backupstore", reason="the backup engine (helper backupstore) is not merged yet")

SIZE = 6 * 1024 * 1024 + 4096  # a partial last chunk


def _write_backup(target: Any, tmp_path: Path, backup_id: str) -> tuple[str, Any]:
    """What the other cluster did: a block backup of a sparse image with some data, straight to the bucket."""
    from storage.system.backupstore import backup_block, backup_url, open_store

    image = tmp_path / "volume.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
        f.seek(1024 * 1024)
        f.write(os.urandom(512 * 1024))
        f.seek(SIZE - 100)
        f.write(b"the end" * 10)
    manifest, _ = backup_block(open_store(target.url, target.credentials), image, backup_id=backup_id)
    image.unlink()
    return backup_url(target.url, backup_id), manifest


def _secret(cli: Cli, credentials: dict[str, str], name: str = "bucket-creds") -> None:
    cli.client().create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
                         "data": {k: base64.b64encode(v.encode()).decode() for k, v in credentials.items()}})


@pytest.mark.parametrize("object_store_target", ["s3"], indirect=True)
def test_import_binds_a_retained_content_to_a_new_snapshot(cli: Cli, object_store_target: Any, tmp_path: Path) -> None:
    """BC10: the manifest is read (size, proof the handle is right); a VolumeSnapshotContent with driver
    backup.stowage.io, snapshotHandle = the handle, deletionPolicy Retain and volumeSnapshotRef, and a
    VolumeSnapshot naming it are created; `backup list` shows it; importing again changes nothing."""
    target = object_store_target
    handle, manifest = _write_backup(target, tmp_path, "pg-data-20261130")
    assert manifest.size == SIZE
    _secret(cli, target.credentials)

    out = cli.ok("snapshot", "import", handle, "--secret", "bucket-creds", "--name", "pg-data")
    client = cli.client()
    contents = [c for c in client.list("volumesnapshotcontents")[0]
                if (c["spec"].get("source") or {}).get("snapshotHandle") == handle]
    assert len(contents) == 1
    content = contents[0]
    classes = [c for c in client.list("volumesnapshotclasses")[0] if c.get("driver") == "backup.stowage.io"]
    assert len(classes) == 1 and classes[0]["parameters"]["store"] == target.url
    assert classes[0]["parameters"]["csi.storage.k8s.io/snapshotter-secret-name"] == "bucket-creds"
    assert content["spec"] == {
        "driver": "backup.stowage.io", "deletionPolicy": "Retain",
        "volumeSnapshotClassName": classes[0]["metadata"]["name"], "source": {"snapshotHandle": handle},
        "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                              "name": "pg-data", "namespace": "default"}}
    assert content["status"]["restoreSize"] == SIZE and content["status"]["readyToUse"] is True
    assert content["status"]["creationTime"] == int(manifest.created * 1_000_000_000)
    snap = client.get("volumesnapshots", "pg-data", "default")
    assert snap["spec"] == {"volumeSnapshotClassName": classes[0]["metadata"]["name"],
                            "source": {"volumeSnapshotContentName": content["metadata"]["name"]}}
    store_shown = target.url.split("?")[0]
    assert out.splitlines()[-1].startswith(
        "volumesnapshot.snapshot.storage.k8s.io/pg-data imported (6148Ki, taken ")
    assert out.splitlines()[-1].endswith(f"from {store_shown})")
    assert target.credentials.get("secretAccessKey", "\0") not in out

    rows = parse_table(cli.ok("backup", "list"), ["NAME", "CLAIM", "READY", "SIZE", "CREATED", "STORE"])
    assert [(r["NAME"], r["CLAIM"], r["SIZE"], r["STORE"]) for r in rows] == [
        ("pg-data", "<imported>", "6148Ki", store_shown)]

    # Restore needs nothing more: the size comes from the content until the snapshot controller copies it.
    cli.ok("backup", "restore", "pg-data", "--claim", "pg-restored")
    spec = client.get("persistentvolumeclaims", "pg-restored", "default")["spec"]
    assert spec["dataSource"]["name"] == "pg-data" and spec["resources"]["requests"]["storage"] == "6148Ki"

    again = cli.run("snapshot", "import", handle, "--secret", "bucket-creds", "--name", "pg-data")
    assert again.code == 0, again.err
    assert len(client.list("volumesnapshotcontents")[0]) == 1 and len(client.list("volumesnapshots", "default")[0]) == 1


@pytest.mark.parametrize("object_store_target", ["s3"], indirect=True)
def test_import_refuses_what_the_store_does_not_hold(cli: Cli, object_store_target: Any, tmp_path: Path) -> None:
    """BC11: a handle whose backup is not in the store, a malformed handle, or a missing Secret is one error line
    naming it, and nothing is created."""
    target = object_store_target
    _secret(cli, target.credentials)
    missing = cli.run("snapshot", "import", f"{target.url}#no-such-backup", "--secret", "bucket-creds")
    assert missing.code == 1
    assert f"HANDLE: there is no backup 'no-such-backup' in {target.url.split('?')[0]}" in missing.err
    malformed = cli.run("snapshot", "import", "s3://bucket/prefix", "--secret", "bucket-creds")
    assert malformed.code == 1 and "HANDLE: expected STORE_URL#BACKUP_ID" in malformed.err
    no_secret = cli.run("snapshot", "import", f"{target.url}#x1", "--secret", "nope")
    assert no_secret.code == 1 and '--secret: secret "nope" not found in namespace "default"' in no_secret.err
    client = cli.client()
    assert client.list("volumesnapshotcontents")[0] == [] and client.list("volumesnapshots", "default")[0] == []
    assert client.list("volumesnapshotclasses")[0] == []
