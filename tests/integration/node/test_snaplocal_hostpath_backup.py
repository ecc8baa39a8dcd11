"""hostPath volumes backed up in-process by backup.stowage.io and restored into a directory
(SEMANTICS LS25, LS26)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from provisioners.backup import (
    SECRET_NAME,
    SECRET_NAMESPACE,
    BackupSnapshotter,
    restore_tree_from,
)
from provisioners.base import (
    ANN_PROVISIONED_BY,
    BACKUP_DRIVER,
    ProvisionRequest,
    DataSource,
    SnapshotRequest,
    secrets_available,
)
from storage.errors import NotFound, PermanentError
from storage.system import backupstore


def test_hostpath_backup_runs_in_the_background_and_restores_into_a_directory(
        node_tmp: Path, object_store_target: Any) -> None:
    store_url, credentials = object_store_target
    reader = lambda ns, name: dict(credentials) if (ns, name) == ("ns1", "creds") else None
    params = {"store": store_url, SECRET_NAME: "creds", SECRET_NAMESPACE: "ns1"}
    src = node_tmp / "hostpath" / "pvc-1"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "big").write_bytes(os.urandom(5 * 2**20))
    (src / "small").write_text("small")
    os.chmod(src / "small", 0o640)
    os.symlink("sub/big", src / "link")
    pv = {"metadata": {"name": "pvc-1", "annotations": {ANN_PROVISIONED_BY: "stowage.io/hostpath"}},
          "spec": {"hostPath": {"path": str(src)}}}
    snapshotter = BackupSnapshotter()
    req = SnapshotRequest(name="snapcontent-h1", pv=pv, parameters=params, secrets=reader)
    first = snapshotter.create_snapshot(req)
    results = [first]
    deadline = time.monotonic() + 120
    while not results[-1].ready:  # the controller is never blocked: it asks again
        assert time.monotonic() < deadline
        time.sleep(0.1)
        results.append(snapshotter.create_snapshot(req))
    done = results[-1]
    assert done.handle == backupstore.backup_url(store_url, "snapcontent-h1")
    assert done.restore_size >= 5 * 2**20 and done.creation_time > 0
    assert snapshotter.create_snapshot(req).ready  # idempotent: found by its manifest

    dest = node_tmp / "restored"
    source = DataSource(kind="VolumeSnapshot", driver=BACKUP_DRIVER, snapshot_handle=done.handle,
                        restore_size=done.restore_size, snapshot_parameters=params)
    restore_tree_from(source, reader, dest)
    assert (dest / "sub" / "big").read_bytes() == (src / "sub" / "big").read_bytes()
    assert (dest / "small").read_text() == "small" and (dest / "small").stat().st_mode & 0o777 == 0o640
    assert os.readlink(dest / "link") == "sub/big"

    # The hostPath provisioner restores a claim from it through restore_tree_from (LS26).
    from provisioners.hostpath import HostPathProvisioner
    from provisioners.testing import make_claim

    hostpath = HostPathProvisioner(node_tmp / "hp-root")
    claim = make_claim("1Gi", class_name="hp")
    result = hostpath.provision(ProvisionRequest(
        volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, secrets=reader, data_source=source,
        storage_class={"metadata": {"name": "hp"}, "provisioner": hostpath.name}))
    filled = Path(result.source["hostPath"]["path"])
    assert (filled / "sub" / "big").read_bytes() == (src / "sub" / "big").read_bytes()
    assert os.readlink(filled / "link") == "sub/big"

    with secrets_available(reader):
        snapshotter.delete_snapshot(done.handle, params)
        assert snapshotter.snapshot_status(done.handle, params) is None
    with pytest.raises(NotFound):  # deleted: the manifest is gone
        restore_tree_from(source, reader, node_tmp / "again")


def test_backup_class_parameters_are_checked(node_tmp: Path) -> None:
    snapshotter = BackupSnapshotter()
    pv = {"metadata": {"name": "p"}, "spec": {"hostPath": {"path": str(node_tmp)}}}
    with pytest.raises(PermanentError, match="'store': Required value"):
        snapshotter.create_snapshot(SnapshotRequest(name="s", pv=pv, parameters={}))
    with pytest.raises(PermanentError, match="bogus"):
        snapshotter.create_snapshot(SnapshotRequest(name="s", pv=pv, parameters={"store": "s3://b/p", "bogus": "1"}))
