"""The README's snapshot and backup walk-through, with the files in examples/backup/ as they are: on a real
`stowage up` with the quickstart, a local snapshot, a restore and a clone of the writer's claim (LS1, DS10),
then a backup of it to S3 (moto started by examples/backup/local-s3.sh) through `stowage backup` and a restore
from that backup (BC2, BC8, LS21)."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from stowage_e2e import Stowage, poll

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "backup"

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def local_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    state = tmp_path_factory.mktemp("local-s3")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PORT": str(port)}
    subprocess.run([str(EXAMPLE / "local-s3.sh"), "start", str(state)], check=True, env=env, timeout=120)
    try:
        yield port
    finally:
        subprocess.run([str(EXAMPLE / "local-s3.sh"), "stop", str(state)], check=False, env=env, timeout=60)


@pytest.fixture(scope="module")
def cluster(start_stowage: Any) -> Stowage:
    stowage = start_stowage([REPO / "examples" / "quickstart"])
    stowage.wait_ready("app=writer", ["writer"], timeout=300)
    return stowage


def test_local_snapshot_restore_and_clone(cluster: Stowage) -> None:
    """The writer's first log line is in the restored claim and in the clone, read by one pod."""
    uid = cluster.client.get("pods", "writer", "default")["metadata"]["uid"]
    log = next((Path(cluster.data_dir) / "agent" / "pods" / uid / "volumes").glob("*/data/log.txt"))
    original = log.read_text().splitlines()[0]
    assert original.startswith("started on")
    cluster.cli("apply", "-f", str(EXAMPLE / "local-snapshots.yaml"))
    poll("the snapshot ready", lambda: (cluster.client.get("volumesnapshots", "data-snap", "default").get("status")
                                         or {}).get("readyToUse"), 300, diagnose=cluster.describe)
    listed = cluster.cli("get", "volumesnapshot", "data-snap").stdout
    assert listed.split()[:4] == ["NAME", "READYTOUSE", "SOURCEPVC", "SOURCESNAPSHOTCONTENT"] and "data" in listed
    def both_read() -> str | None:
        out = cluster.cli("logs", "reader", check=False).stdout
        return out if out.count(original) == 2 else None

    logs = poll("the reader's output", both_read, 300, diagnose=cluster.describe)
    assert "/restored/log.txt" in logs and "/clone/log.txt" in logs
    cluster.cli("delete", "-f", str(EXAMPLE / "local-snapshots.yaml"), "--wait=false")


def test_backup_to_s3_and_restore(cluster: Stowage, local_s3: int) -> None:
    text = (EXAMPLE / "s3-class.yaml").read_text().replace("127.0.0.1:9000", f"127.0.0.1:{local_s3}")
    manifest = Path(cluster.data_dir) / "s3-class.yaml"
    manifest.write_text(text)
    cluster.cli("apply", "-f", str(manifest))
    out = cluster.cli("backup", "create", "data", "--class", "s3-backups", "--name", "nightly", "--wait",
                      "--timeout", "10m", timeout=700).stdout
    assert "nightly ready" in out, out
    listed = cluster.cli("backup", "list").stdout
    assert "nightly" in listed and "s3://stowage-backups/demo" in listed, listed
    cluster.cli("backup", "restore", "nightly", "--claim", "from-backup")
    cluster.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check", "namespace": "default"},
                           "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                               "name": "c", "image": "debian:12", "command": ["/bin/sh", "-c",
                                                                                "head -1 /d/log.txt; sleep 600"],
                               "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                               "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "from-backup"}}]}})
    poll("the restored log read", lambda: "started on" in cluster.cli("logs", "check", check=False).stdout, 300,
         diagnose=cluster.describe)
    cluster.client.delete("pods", "check", "default")
    cluster.client.delete("persistentvolumeclaims", "from-backup", "default")
    assert cluster.cli("backup", "delete", "nightly").returncode == 0
