"""The snapshot controller and the data-source path through the real controllers, API server and store,
with the hostPath provisioner as the backend (VS20-VS41, DS10-DS19)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from provisioners import registry
from provisioners.hostpath import HostPathProvisioner
from serverutil import running_server
from support import running_controllers, wait_for

from snapctl_support import (
    claim, events, get, snapshot, snapshot_class, snapshot_source, storage_class, wait_bound, wait_event, wait_gone,
    wait_ready,
)

Obj = dict[str, Any]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Any, Any, HostPathProvisioner]]:
    hp = HostPathProvisioner(tmp_path / "hostpath")
    registry.register(hp)
    try:
        with running_server(tmp_path) as server, running_controllers(server.store):
            client = server.client()
            client.create(storage_class("hp", hp.name, str(hp.root)))
            try:
                yield server, client, hp
            finally:
                client.close()
    finally:
        registry.unregister(hp.name)


def _data(client: Any, claim_name: str, namespace: str = "default") -> Path:
    c = wait_bound(client, claim_name, namespace)
    return Path(client.get("persistentvolumes", c["spec"]["volumeName"])["spec"]["hostPath"]["path"])


def test_dynamic_snapshot_restore_clone_and_delete(cluster: Any) -> None:
    """VS20-VS26 (default class, content, status, events), VS30 (claim protection released), DS15-DS17
    (restore and clone carry the data), VS31/VS34 (Delete removes content and backend snapshot)."""
    _server, client, hp = cluster
    client.create(claim("src"))
    (_data(client, "src") / "hello.txt").write_text("hello from src")
    client.create(snapshot_class("hp-snap", hp.name, default=True))
    client.create(snapshot("snap1", "src"))
    ready = wait_ready(client, "snap1")
    status = ready["status"]
    content_name = f"snapcontent-{ready['metadata']['uid']}"
    assert ready["spec"]["volumeSnapshotClassName"] == "hp-snap"  # the default class was written in (VS22)
    assert status["boundVolumeSnapshotContentName"] == content_name
    assert status["restoreSize"] == "1Gi" and status["creationTime"].endswith("Z") and "error" not in status
    assert set(ready["metadata"]["finalizers"]) == {
        "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection",
        "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"}
    content = client.get("volumesnapshotcontents", content_name)
    assert content["spec"]["volumeSnapshotRef"]["uid"] == ready["metadata"]["uid"]
    assert content["spec"]["deletionPolicy"] == "Delete" and content["spec"]["driver"] == hp.name
    assert content["spec"]["source"]["volumeHandle"] == client.get("persistentvolumeclaims", "src", "default")["spec"]["volumeName"]
    assert content["status"]["readyToUse"] is True and content["status"]["restoreSize"] == 1024**3
    assert content["status"]["creationTime"] > 10**18  # nanoseconds
    handle = Path(content["status"]["snapshotHandle"])
    assert (handle / "hello.txt").read_text() == "hello from src" and handle.parent == hp.root / ".snapshots"
    assert "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection" in content["metadata"]["finalizers"]
    reasons = {e["reason"] for e in events(client, "default", "snap1")}
    assert {"CreatingSnapshot", "SnapshotCreated", "SnapshotReady"} <= reasons
    wait_for(lambda: "snapshot.storage.kubernetes.io/pvc-as-source-protection" not in
             (client.get("persistentvolumeclaims", "src", "default")["metadata"].get("finalizers") or []),
             "the source claim's snapshot protection released", 30, interval=0.1)

    (_data(client, "src") / "hello.txt").write_text("changed after the snapshot")
    client.create(claim("restored", source=snapshot_source("snap1")))
    assert (_data(client, "restored") / "hello.txt").read_text() == "hello from src"
    client.create(claim("cloned", source={"kind": "PersistentVolumeClaim", "name": "src"}))
    assert (_data(client, "cloned") / "hello.txt").read_text() == "changed after the snapshot"

    client.delete("volumesnapshots", "snap1", "default")
    wait_gone(client, "volumesnapshots", "snap1", "default")
    wait_gone(client, "volumesnapshotcontents", content_name)
    assert not handle.exists() and not handle.with_name(handle.name + ".json").exists()
    # The restored claim keeps its data after its snapshot is gone.
    assert (_data(client, "restored") / "hello.txt").read_text() == "hello from src"


def test_retain_keeps_content_and_backend_and_static_snapshot_binds_to_it(cluster: Any) -> None:
    """VS32 (Retain), VS27/VS28 (a pre-provisioned content checked by snapshot_status and bound by uid)."""
    _server, client, hp = cluster
    client.create(claim("src"))
    (_data(client, "src") / "f").write_text("kept")
    client.create(snapshot_class("keep", hp.name, policy="Retain"))
    client.create(snapshot("s1", "src", klass="keep"))
    ready = wait_ready(client, "s1")
    content_name = ready["status"]["boundVolumeSnapshotContentName"]
    handle = client.get("volumesnapshotcontents", content_name)["status"]["snapshotHandle"]
    assert "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection" not in ready["metadata"]["finalizers"]
    client.delete("volumesnapshots", "s1", "default")
    wait_gone(client, "volumesnapshots", "s1", "default")
    content = client.get("volumesnapshotcontents", content_name)
    assert content["metadata"]["annotations"]["snapshot.storage.kubernetes.io/volumesnapshot-being-deleted"] == "yes"
    assert (Path(handle) / "f").read_text() == "kept"

    client.create({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                   "metadata": {"name": "static-content"},
                   "spec": {"deletionPolicy": "Retain", "driver": hp.name, "source": {"snapshotHandle": handle},
                            "volumeSnapshotRef": {"name": "static", "namespace": "default"}}})
    client.create(snapshot("static", content="static-content"))
    static = wait_ready(client, "static")
    assert static["status"]["boundVolumeSnapshotContentName"] == "static-content"
    bound = client.get("volumesnapshotcontents", "static-content")
    assert bound["spec"]["volumeSnapshotRef"]["uid"] == static["metadata"]["uid"]
    assert bound["status"]["snapshotHandle"] == handle and bound["status"]["restoreSize"] == 1024**3
    client.create(claim("from-static", source=snapshot_source("static")))
    assert (_data(client, "from-static") / "f").read_text() == "kept"

    # A pre-provisioned content whose handle is not a snapshot fails for good (VS38).
    client.create({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                   "metadata": {"name": "bogus"},
                   "spec": {"deletionPolicy": "Delete", "driver": hp.name,
                            "source": {"snapshotHandle": str(hp.root / ".snapshots" / "nothing")},
                            "volumeSnapshotRef": {"name": "bogus", "namespace": "default"}}})
    client.create(snapshot("bogus", content="bogus"))

    def failed() -> Obj | None:
        s = get(client, "volumesnapshots", "bogus", "default")
        return s if ((s or {}).get("status") or {}).get("error") else None

    bogus = wait_for(failed, "the bogus snapshot's error", 30, interval=0.1)
    assert "does not exist" in bogus["status"]["error"]["message"] and bogus["status"]["readyToUse"] is False


def test_restore_refusals_size_grant_kind_and_waiting(cluster: Any) -> None:
    """DS16 (too small, both sizes named), DS13/DS14 (cross-namespace needs a ReferenceGrant), DS11 (unknown
    kind stays Pending), DS15 (a snapshot not ready yet is waited for), VS33 (deletion waits for a restore)."""
    _server, client, hp = cluster
    client.create(claim("src"))
    (_data(client, "src") / "f").write_text("data")
    client.create(snapshot_class("hp-snap", hp.name, default=True))

    client.create(claim("early", source=snapshot_source("later")))  # its snapshot does not exist yet
    wait_event(client, "default", "early", "ProvisioningFailed", "later")
    client.create(snapshot("later", "src"))
    assert (_data(client, "early") / "f").read_text() == "data"

    client.create(claim("small", size="512Mi", source=snapshot_source("later")))
    event = wait_event(client, "default", "small", "ProvisioningFailed", "less than")
    assert "536870912 (512Mi)" in event["message"] and "1073741824 (1Gi)" in event["message"]
    assert client.get("persistentvolumeclaims", "small", "default")["status"]["phase"] == "Pending"

    client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    ref = {**snapshot_source("later"), "namespace": "default"}
    client.create(claim("xns", namespace="other", source_ref=ref))
    wait_event(client, "other", "xns", "ProvisioningFailed", "isn't allowed")
    assert client.get("persistentvolumeclaims", "xns", "other")["status"]["phase"] == "Pending"
    client.create({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                   "metadata": {"name": "snapshots-for-other", "namespace": "default"},
                   "spec": {"from": [{"group": "", "kind": "PersistentVolumeClaim", "namespace": "other"}],
                            "to": [{"group": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot"}]}})
    assert (_data(client, "xns", "other") / "f").read_text() == "data"

    client.create(claim("popul", source_ref={"apiGroup": "example.io", "kind": "Populator", "name": "p"}))
    wait_event(client, "default", "popul", "ProvisioningFailed", "example.io/Populator")
    assert client.get("persistentvolumeclaims", "popul", "default")["status"]["phase"] == "Pending"

    # A claim of a class nobody provisions keeps restoring from "later": its deletion waits (VS33).
    client.create(claim("stuck", klass="nobody", source=snapshot_source("later")))
    wait_for(lambda: (get(client, "persistentvolumeclaims", "stuck", "default") or {}).get("metadata", {})
             .get("annotations", {}).get("volume.kubernetes.io/storage-provisioner") or
             events(client, "default", "stuck"), "the stuck claim seen", 30, interval=0.1)
    client.delete("volumesnapshots", "later", "default")
    wait_event(client, "default", "later", "SnapshotDeletePending")
    assert get(client, "volumesnapshots", "later", "default") is not None
    client.delete("persistentvolumeclaims", "stuck", "default")
    assert get(client, "volumesnapshots", "later", "default") is not None  # "small" still waits on it
    client.delete("persistentvolumeclaims", "small", "default")
    wait_gone(client, "volumesnapshots", "later", "default")


def test_snapshot_errors_missing_class_and_unbound_claim(cluster: Any) -> None:
    """VS22-VS25: no default class, a missing class and an unbound claim are errors on the snapshot that heal
    once the cause is gone (level-triggered)."""
    _server, client, hp = cluster
    client.create(claim("src"))
    _data(client, "src")
    client.create(snapshot("s", "src"))
    wait_event(client, "default", "s", "SnapshotContentCreationFailed", "cannot find default snapshot class")
    client.create(snapshot("named", "src", klass="missing"))
    wait_event(client, "default", "named", "SnapshotContentCreationFailed", '"missing" not found')
    client.create(snapshot_class("hp-snap", hp.name, default=True))
    wait_ready(client, "s")
    client.create(snapshot_class("missing", hp.name))
    wait_ready(client, "named")
    client.create(claim("unbound", klass="nobody"))
    client.create(snapshot("u", "unbound", klass="hp-snap"))
    event = wait_event(client, "default", "u", "SnapshotContentCreationFailed", "not yet bound")
    assert event["type"] == "Warning"
    assert client.get("volumesnapshots", "u", "default")["status"]["readyToUse"] is False


class _FlakyHostPath(HostPathProvisioner):
    """The real hostPath snapshotter behind a backend that first says "not now" twice (a TemporaryError), and
    that, for volumes labelled for it, fails for good naming the credential it was handed (so the test sees that
    the message is scrubbed before it is stored)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.temporary_left = 2
        self.seen: list[Any] = []

    def create_snapshot(self, req: Any) -> Any:
        from storage.errors import PermanentError, TemporaryError

        params = req.parameters
        own = req.secrets(params.get("csi.storage.k8s.io/snapshotter-secret-namespace", ""),
                          params.get("csi.storage.k8s.io/snapshotter-secret-name", "")) if req.secrets else None
        other = req.secrets("default", "unrelated") if req.secrets else None
        self.seen.append((own, other))
        if self.temporary_left > 0:
            self.temporary_left -= 1
            raise TemporaryError("backend busy", delay=0.2)
        if (req.pv["metadata"].get("labels") or {}).get("fail") == "yes":
            raise PermanentError(f"refused with key {own['token'] if own else '?'}")
        return super().create_snapshot(req)


def test_temporary_errors_retry_permanent_errors_stick_and_secrets_stay_secret(tmp_path: Path) -> None:
    """VS39 (TemporaryError: events, back-off, then ready), VS38 (PermanentError: status.error on content and
    snapshot, not retried), VS40 (only the class's Secret is readable), VS41 (its value never stored)."""
    hp = _FlakyHostPath(tmp_path / "hostpath")
    registry.register(hp)
    try:
        with running_server(tmp_path) as server, running_controllers(server.store):
            client = server.client()
            try:
                client.create(storage_class("hp", hp.name, str(hp.root)))
                for name, value in (("snap-cred", "s3cr3t-token-value"), ("unrelated", "other-value")):
                    client.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
                                   "stringData": {"token": value}})
                client.create(snapshot_class("cred", hp.name, parameters={
                    "csi.storage.k8s.io/snapshotter-secret-name": "snap-cred",
                    "csi.storage.k8s.io/snapshotter-secret-namespace": "${volumesnapshot.namespace}"}))
                client.create(claim("src"))
                _data(client, "src")
                client.create(snapshot("flaky", "src", klass="cred"))
                ready = wait_ready(client, "flaky")
                assert "error" not in ready["status"]
                content = ready["status"]["boundVolumeSnapshotContentName"]
                failures = events(client, "default", content, lambda e: e["reason"] == "SnapshotCreationFailed")
                assert failures and "backend busy" in failures[0]["message"]
                assert hp.seen[0] == ({"token": "s3cr3t-token-value"}, None)

                client.create(claim("bad"))
                pv = client.get("persistentvolumes", wait_bound(client, "bad")["spec"]["volumeName"])
                pv["metadata"].setdefault("labels", {})["fail"] = "yes"
                client.update(pv)
                client.create(snapshot("doomed", "bad", klass="cred"))

                def failed() -> Obj | None:
                    s = get(client, "volumesnapshots", "doomed", "default")
                    return s if ((s or {}).get("status") or {}).get("error") else None

                doomed = wait_for(failed, "the doomed snapshot's error", 30, interval=0.1)
                message = doomed["status"]["error"]["message"]
                assert "refused with key ***" in message and doomed["status"]["readyToUse"] is False
                calls = len(hp.seen)
                wait_event(client, "default", "doomed", "SnapshotCreationFailed", "refused with key")
                import time
                time.sleep(1.5)
                assert len(hp.seen) == calls  # final: not asked again
                texts = [str(e) for e in client.list("events", "default")[0]]
                texts += [str(o) for o in client.list("volumesnapshotcontents")[0]]
                texts += [str(o) for o in client.list("volumesnapshots", "default")[0]]
                assert not any("s3cr3t-token-value" in t for t in texts)
            finally:
                client.close()
    finally:
        registry.unregister(hp.name)


def test_clone_source_is_protected_while_the_clone_is_pending(cluster: Any) -> None:
    """DS20: a claim being cloned carries provisioner.storage.kubernetes.io/cloning-protection: deleting it
    waits until no clone of it is pending; a finished clone releases it at once."""
    _server, client, hp = cluster
    protection = "provisioner.storage.kubernetes.io/cloning-protection"
    client.create(claim("src"))
    src_dir = _data(client, "src")
    (src_dir / "f").write_text("x")
    client.create(claim("good", source={"kind": "PersistentVolumeClaim", "name": "src"}))
    assert (_data(client, "good") / "f").read_text() == "x"
    wait_for(lambda: protection not in (client.get("persistentvolumeclaims", "src", "default")["metadata"]
                                        .get("finalizers") or []), "the protection released", 30, interval=0.1)

    src_dir.rename(src_dir.with_name("moved-away"))  # the copy now fails (PermanentError), the clone stays Pending
    client.create(claim("stuck", source={"kind": "PersistentVolumeClaim", "name": "src"}))
    wait_event(client, "default", "stuck", "ProvisioningFailed", "does not exist")
    assert protection in client.get("persistentvolumeclaims", "src", "default")["metadata"]["finalizers"]
    client.delete("persistentvolumeclaims", "src", "default")
    wait_for(lambda: client.get("persistentvolumeclaims", "src", "default")["metadata"].get("deletionTimestamp"),
             "the source marked for deletion", 30, interval=0.1)
    assert protection in client.get("persistentvolumeclaims", "src", "default")["metadata"]["finalizers"]
    client.delete("persistentvolumeclaims", "stuck", "default")
    wait_gone(client, "persistentvolumeclaims", "src", "default")
