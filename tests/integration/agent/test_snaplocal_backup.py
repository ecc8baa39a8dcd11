"""Backups of local pool volumes to object stores and restores on another node, through real agents
(SEMANTICS LS10-LS15, LS21-LS24), and an etcd member's data dir snapshotted and backed up while etcd
runs, then read by etcd after the restore."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from agent_cluster import Cluster, wait_until
from support import need_programs

from provisioners.backup import SECRET_NAME, SECRET_NAMESPACE, BackupSnapshotter
from provisioners.base import (
    BACKUP_DRIVER,
    DataSource,
    ProvisionRequest,
    SnapshotRequest,
)
from provisioners.local import LocalProvisioner
from provisioners.testing import make_claim, pv_from_result
from storage.system import backupstore, loop, mounts

Obj = dict[str, Any]
MiB = 2**20
CLASS = {"metadata": {"name": "local"}, "provisioner": "stowage.io/local", "parameters": {"fsType": "ext4"},
         "volumeBindingMode": "WaitForFirstConsumer"}


@pytest.fixture
def agents(cluster: Cluster) -> Cluster:
    for name in ("n1", "n2"):
        cluster.add_agent(name)
    for name in ("n1", "n2"):
        wait_until(lambda n=name: (cluster.store.get("nodes", "", n).get("status") or {}).get("daemonEndpoints"),
                   f"node {name} registered")
    return cluster


def provision(local: LocalProvisioner, cluster: Cluster, node: str, size: str = "64Mi",
              data_source: DataSource | None = None, secrets: Any = None) -> Obj:
    claim = make_claim(size, class_name="local")
    req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=CLASS,
                           selected_node=cluster.store.get("nodes", "", node), data_source=data_source, secrets=secrets)
    result = local.provision(req)
    assert result.status == "finished", result.message
    return pv_from_result(local, req, result)


@contextmanager
def mounted(pv: Obj, read_only: bool = False) -> Iterator[Path]:
    dev = loop.find_by_backing_file(pv["spec"]["local"]["path"])
    assert dev is not None
    with tempfile.TemporaryDirectory(prefix="snaplocal-m-") as mnt:
        mounts.mount(dev, mnt, "ext4", ["ro"] if read_only else [])
        try:
            yield Path(mnt)
        finally:
            mounts.unmount(mnt)


def backup(snapshotter: BackupSnapshotter, pv: Obj, params: dict[str, str], secrets: Any) -> Any:
    req = SnapshotRequest(name=f"snapcontent-{os.urandom(6).hex()}", pv=pv, parameters=params, secrets=secrets)
    deadline = time.monotonic() + 180
    result = snapshotter.create_snapshot(req)
    while not result.ready:
        assert time.monotonic() < deadline, result.message
        time.sleep(0.2)
        result = snapshotter.create_snapshot(req)
    again = snapshotter.create_snapshot(req)  # idempotent by name: the same backup
    assert again.handle == result.handle and again.ready
    return result


def test_backup_of_a_local_volume_restores_on_another_node(agents: Cluster, object_store_target: Any) -> None:
    """LS10, LS11, LS21, LS22, LS24: uploaded by the volume's agent from a frozen copy while mounted,
    restored by another node's agent into a bigger volume; deleting the backup removes its manifest."""
    store_url, credentials = object_store_target
    secrets = lambda ns, name: dict(credentials) if (ns, name) == ("backups", "store-creds") else None
    params = {"store": store_url, SECRET_NAME: "store-creds", SECRET_NAMESPACE: "backups"}
    local = LocalProvisioner(nodes=agents._node, tls=agents.agent_client_tls)
    snapshotter = BackupSnapshotter(local)
    pv = provision(local, agents, "n1")
    payload = os.urandom(3 * MiB)
    with mounted(pv) as mnt:
        (mnt / "payload").write_bytes(payload)
        (mnt / "dir").mkdir()
        (mnt / "dir" / "note").write_text("hello")
        os.sync()
        snap = backup(snapshotter, pv, params, secrets)  # while mounted: frozen around the copy
        (mnt / "dir" / "note").write_text("after the backup")
    assert snap.handle == backupstore.backup_url(store_url, snap.handle.rsplit("#", 1)[1])
    assert snap.restore_size == 64 * MiB
    # The backup is ready once its manifest is in the store; the agent removes its temporary copy just after.
    wait_until(lambda: agents.agents["n1"].pool(None).list_snapshots() == [], "the temporary copy removed", 30)
    with secrets_for(secrets):  # the snapshot controller's calls without a request carry the reader so
        status = snapshotter.snapshot_status(snap.handle, params)
    assert status is not None and status.ready and status.restore_size == 64 * MiB

    source = DataSource(kind="VolumeSnapshot", driver=BACKUP_DRIVER, snapshot_handle=snap.handle,
                        restore_size=snap.restore_size, snapshot_parameters=params)
    restored = provision(local, agents, "n2", "96Mi", source, secrets)
    assert "n2" in str(restored["spec"]["nodeAffinity"])
    with mounted(restored, read_only=True) as mnt:
        assert (mnt / "payload").read_bytes() == payload
        assert (mnt / "dir" / "note").read_text() == "hello"
        st = os.statvfs(mnt)
        assert st.f_blocks * st.f_frsize > 80 * MiB  # grown to the claim
    local.delete(restored)
    local.delete(pv)
    with secrets_for(secrets):
        snapshotter.delete_snapshot(snap.handle, params)
        snapshotter.delete_snapshot(snap.handle, params)  # gone already: success
        assert snapshotter.snapshot_status(snap.handle, params) is None


@contextmanager
def secrets_for(reader: Any) -> Iterator[None]:
    from provisioners.base import secrets_available

    with secrets_available(reader):
        yield


@pytest.mark.parametrize("object_store_target", ["s3"], indirect=True)
def test_backup_of_a_volume_not_in_use_anywhere_is_refused(agents: Cluster, object_store_target: Any) -> None:
    """LS23: a volume that is neither a pool nor a hostPath volume is read where it is in use."""
    store_url, credentials = object_store_target
    local = LocalProvisioner(nodes=agents._node, tls=agents.agent_client_tls)
    snapshotter = BackupSnapshotter(local, node_lister=lambda: agents.store.list("nodes")[0])
    pv = {"metadata": {"name": "pv-nfs"}, "spec": {"nfs": {"server": "127.0.0.1", "path": "/x"}}}
    from storage.errors import TemporaryError

    with pytest.raises(TemporaryError, match="must be in use on a node"):
        snapshotter.create_snapshot(SnapshotRequest(
            name="snapcontent-x", pv=pv, parameters={"store": store_url, SECRET_NAME: "c"},
            secrets=lambda ns, name: dict(credentials)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def etcd(data_dir: Path, client: int, peer: int) -> Iterator[str]:
    url = f"http://127.0.0.1:{client}"
    log = subprocess.DEVNULL  # the data dir's filesystem is copied: no log file beside it
    proc = subprocess.Popen(
        ["etcd", "--name", "m0", "--data-dir", str(data_dir), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"m0=http://127.0.0.1:{peer}", "--initial-cluster-state", "new"],
        stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until(lambda: etcdctl(url, "endpoint", "health").returncode == 0 or proc.poll() is not None,
                   "etcd healthy", 60)
        assert proc.poll() is None, "etcd exited"
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


def etcdctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["etcdctl", "--endpoints", url, "--command-timeout=5s", *args], check=False,
                          capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})


@pytest.mark.parametrize("object_store_target", ["s3"], indirect=True)
def test_etcd_data_dir_snapshot_and_backup_while_running(agents: Cluster, object_store_target: Any) -> None:
    """LS2, LS6, LS7, LS11: etcd writes keys into a pool volume; a pool snapshot and a backup are cut
    while it runs (and keeps writing); each restored volume holds a data dir etcd starts on and serves
    the keys written before the cut, not those written after."""
    need_programs("etcd", "etcdctl")
    store_url, credentials = object_store_target
    secrets = lambda ns, name: dict(credentials) if (ns, name) == ("default", "s3") else None
    params = {"store": store_url, SECRET_NAME: "s3", SECRET_NAMESPACE: "default"}
    local = LocalProvisioner(nodes=agents._node, tls=agents.agent_client_tls)
    snapshotter = BackupSnapshotter(local)
    pv = provision(local, agents, "n1", "256Mi")
    client, peer = free_port(), free_port()
    with mounted(pv) as mnt, etcd(mnt / "etcd", client, peer) as url:
        for i in range(200):
            assert etcdctl(url, "put", f"/before/{i:03d}", f"value-{i}").returncode == 0
        snap = local.create_snapshot(SnapshotRequest(name=f"snapcontent-{os.urandom(6).hex()}", pv=pv,
                                                     parameters={}))
        assert snap.ready
        bk = backup(snapshotter, pv, params, secrets)
        assert etcdctl(url, "put", "/after/x", "late").returncode == 0
    snap_source = DataSource(kind="VolumeSnapshot", driver=local.name, snapshot_handle=snap.handle,
                             restore_size=snap.restore_size)
    backup_source = DataSource(kind="VolumeSnapshot", driver=BACKUP_DRIVER, snapshot_handle=bk.handle,
                               restore_size=bk.restore_size, snapshot_parameters=params)
    restored = [provision(local, agents, "n1", "256Mi", snap_source),
                provision(local, agents, "n2", "256Mi", backup_source, secrets)]
    for copy in restored:
        with mounted(copy) as mnt, etcd(mnt / "etcd", client, peer) as url:
            got = etcdctl(url, "get", "--prefix", "/before/", "--print-value-only")
            assert got.returncode == 0, got.stderr
            assert got.stdout.split() == [f"value-{i}" for i in range(200)]
            assert etcdctl(url, "get", "/after/x", "--print-value-only").stdout.strip() == ""
        local.delete(copy)
    local.delete(pv)
    local.delete_snapshot(snap.handle, {})
    with secrets_for(secrets):
        snapshotter.delete_snapshot(bk.handle, params)


@pytest.mark.parametrize("object_store_target", ["s3"], indirect=True)
def test_backup_of_a_mounted_disk_reads_its_files_on_the_node_using_it(agents: Cluster, object_store_target: Any) -> None:
    """LS12, LS23, LS7: a disk that is not a pool volume (an attached EBS disk, here a loop device mounted
    where the volume manager mounts device volumes) is backed up file by file by the agent of the node
    where it is mounted, found among all nodes; it restores into a pool volume on another node."""
    store_url, credentials = object_store_target
    secrets = lambda ns, name: dict(credentials)
    params = {"store": store_url, SECRET_NAME: "s3", SECRET_NAMESPACE: "default"}
    image = agents.base / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    dev = loop.attach(image)
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    agent = agents.agents["n1"]
    global_mount = agent.volumes.plugins_dir / "kubernetes.io/local-volume" / "mounts" / "pv-disk"
    global_mount.mkdir(parents=True)
    mounts.mount(dev, global_mount, "ext4")
    (global_mount / "db").mkdir()
    (global_mount / "db" / "rows").write_bytes(b"row\n" * 10000)
    os.symlink("db/rows", global_mount / "link")
    local = LocalProvisioner(nodes=agents._node, tls=agents.agent_client_tls)
    snapshotter = BackupSnapshotter(local, node_lister=lambda: agents.store.list("nodes")[0])
    pv = {"metadata": {"name": "pv-disk"}, "spec": {"awsElasticBlockStore": {"volumeID": "vol-0123", "fsType": "ext4"}}}
    snap = backup(snapshotter, pv, params, secrets)
    with secrets_for(secrets):
        manifest = backupstore.read_manifest(backupstore.open_store(store_url, credentials), snap.handle.rsplit("#", 1)[1])
    assert manifest.kind == "tree" and manifest.labels.get("pv") == "pv-disk"
    source = DataSource(kind="VolumeSnapshot", driver=BACKUP_DRIVER, snapshot_handle=snap.handle,
                        restore_size=snap.restore_size, snapshot_parameters=params)
    restored = provision(local, agents, "n2", "64Mi", source, secrets)
    with mounted(restored, read_only=True) as mnt:
        assert (mnt / "db" / "rows").read_bytes() == b"row\n" * 10000
        assert os.readlink(mnt / "link") == "db/rows"
    local.delete(restored)
    mounts.unmount(global_mount)
    loop.detach(dev)
