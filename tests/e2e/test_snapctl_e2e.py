"""Snapshots, restores and clones end to end: the real kubectl against a running ``stowage up``, the hostPath
provisioner as the backend, pods writing and reading the data (VS20-VS33, DS10-DS18)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from stowage_e2e import Stowage, poll
from support import kubectl_binary

pytestmark = [pytest.mark.root, pytest.mark.slow]
Obj = dict[str, Any]


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.binary = kubectl_binary("1.37")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        self.env["KUBECONFIG"] = str(kubeconfig)

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=120)

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done.stdout

    def apply(self, *docs: Obj) -> None:
        self("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def json(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json"))


@pytest.fixture(scope="module")
def stowage(start_stowage: Callable[[list[Path]], Stowage]) -> Stowage:
    return start_stowage([])


def _claim(name: str, size: str = "64Mi", namespace: str = "default", source: Obj | None = None,
           source_ref: Obj | None = None) -> Obj:
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "storageClassName": "snap-hp", "resources": {"requests": {"storage": size}}}
    if source:
        spec["dataSource"] = source
    if source_ref:
        spec["dataSourceRef"] = source_ref
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def _pod(name: str, script: str, claims: list[str], namespace: str = "default") -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", script],
                                     "volumeMounts": [{"name": c, "mountPath": f"/{c}"} for c in claims]}],
                     "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]}}


def _snapshot(name: str, claim: str, klass: str) -> Obj:
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": name},
            "spec": {"volumeSnapshotClassName": klass, "source": {"persistentVolumeClaimName": claim}}}


SNAP_SOURCE = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}


def test_snapshot_restore_clone_delete_and_refusals_with_kubectl(stowage: Stowage) -> None:
    k = Kubectl(stowage.kubeconfig)
    root = stowage.data_dir / "hostpath" / "snapvols"

    def phase(kind: str, name: str, namespace: str = "default") -> str:
        return (k.json(kind, name, "-n", namespace).get("status") or {}).get("phase", "")

    def succeeded(name: str) -> str:
        poll(f"pod {name} Succeeded", lambda: phase("pod", name) == "Succeeded" or
             (phase("pod", name) == "Failed" and pytest.fail(k("logs", name))), 240, diagnose=stowage.describe)
        return k("logs", name)

    def events_of(name: str, namespace: str = "default") -> list[Obj]:
        return [e for e in k.json("events", "-n", namespace)["items"] if e["involvedObject"]["name"] == name]

    k.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "snap-hp"},
             "provisioner": "stowage.io/hostpath", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
             "parameters": {"root": str(root)}},
            {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass", "metadata": {"name": "hp-delete"},
             "driver": "stowage.io/hostpath", "deletionPolicy": "Delete"},
            {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass", "metadata": {"name": "hp-retain"},
             "driver": "stowage.io/hostpath", "deletionPolicy": "Retain"},
            _claim("src"), _pod("writer", "echo 'written by a pod' > /src/hello.txt", ["src"]))
    succeeded("writer")

    k.apply(_snapshot("snap", "src", "hp-delete"))
    poll("snap readyToUse", lambda: k("get", "volumesnapshot", "snap", "-o", "jsonpath={.status.readyToUse}") == "true",
         120, diagnose=stowage.describe)
    listing = k("get", "volumesnapshot")
    assert "snap" in listing.split() and "NAME" in listing, listing
    content_name = k("get", "volumesnapshot", "snap", "-o", "jsonpath={.status.boundVolumeSnapshotContentName}")
    handle = Path(k("get", "volumesnapshotcontent", content_name, "-o", "jsonpath={.status.snapshotHandle}"))
    assert (handle / "hello.txt").read_text() == "written by a pod\n"

    k.apply(_pod("changer", "echo changed > /src/hello.txt", ["src"]))
    succeeded("changer")
    k.apply(_claim("restored", source=SNAP_SOURCE),
            _claim("cloned", source={"kind": "PersistentVolumeClaim", "name": "src"}),
            _pod("reader", "cat /restored/hello.txt /cloned/hello.txt", ["restored", "cloned"]))
    assert succeeded("reader") == "written by a pod\nchanged\n"

    # DS16: smaller than the snapshot's restore size: Pending, and the event names both sizes.
    k.apply(_claim("small", size="32Mi", source=SNAP_SOURCE))
    event = poll("the too-small claim's event", lambda: next(
        (e for e in events_of("small") if e["reason"] == "ProvisioningFailed" and "less than" in e["message"]), None), 60)
    assert "32Mi" in event["message"] and "64Mi" in event["message"] and phase("pvc", "small") == "Pending"
    k("delete", "pvc", "small")

    # DS13/DS14: from another namespace only with a ReferenceGrant in the snapshot's.
    k("create", "namespace", "elsewhere")
    k.apply(_claim("xns", namespace="elsewhere", source_ref={**SNAP_SOURCE, "namespace": "default"}))
    poll("the refusal of the cross-namespace restore", lambda: any(
        "isn't allowed" in e["message"] for e in events_of("xns", "elsewhere")), 60)
    assert phase("pvc", "xns", "elsewhere") == "Pending"
    k.apply({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
             "metadata": {"name": "let-elsewhere-restore", "namespace": "default"},
             "spec": {"from": [{"group": "", "kind": "PersistentVolumeClaim", "namespace": "elsewhere"}],
                      "to": [{"group": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}]}},
            _pod("xreader", "cat /xns/hello.txt", ["xns"], namespace="elsewhere"))
    poll("the cross-namespace restore Bound", lambda: phase("pvc", "xns", "elsewhere") == "Bound", 60)
    poll("xreader Succeeded", lambda: phase("pod", "xreader", "elsewhere") == "Succeeded", 240, diagnose=stowage.describe)
    assert k("logs", "-n", "elsewhere", "xreader") == "written by a pod\n"

    # VS31: Delete removes the content and the backend snapshot.
    k("delete", "volumesnapshot", "snap", "--timeout=120s")
    poll("the content deleted", lambda: k.run("get", "volumesnapshotcontent", content_name).returncode != 0, 60)
    assert not handle.exists()

    # VS32: Retain keeps both.
    k.apply(_snapshot("kept", "src", "hp-retain"))
    poll("kept readyToUse", lambda: k("get", "volumesnapshot", "kept", "-o", "jsonpath={.status.readyToUse}") == "true", 120)
    kept_content = k("get", "volumesnapshot", "kept", "-o", "jsonpath={.status.boundVolumeSnapshotContentName}")
    kept_handle = Path(k("get", "volumesnapshotcontent", kept_content, "-o", "jsonpath={.status.snapshotHandle}"))
    k("delete", "volumesnapshot", "kept", "--timeout=120s")
    content = k.json("volumesnapshotcontent", kept_content)
    assert content["spec"]["deletionPolicy"] == "Retain"
    assert (kept_handle / "hello.txt").read_text() == "changed\n"
    k("delete", "volumesnapshotcontent", kept_content, "--timeout=120s")
    assert (kept_handle / "hello.txt").exists()  # Retain: the backend snapshot outlives its content

    for pod in ("writer", "changer", "reader"):
        k("delete", "pod", pod, "--wait=false")
    k("delete", "pod", "-n", "elsewhere", "xreader", "--wait=false")
