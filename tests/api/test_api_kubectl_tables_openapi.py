"""The real kubectl against the API server: server-side printing, explain, validating apply, get all.

kubectl runs against the real HTTPS API server with the kubeconfig it writes (the admin token and the
cluster CA as certificate-authority-data), with no extra flags.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from serverutil import running_server
from support import kubectl_binary

# A kubectl from before 1.27 (Debian's kubernetes-client is 1.20) reads only the protobuf OpenAPI v2 document.
OLD_KUBECTL = os.environ.get("STOWAGE_OLD_KUBECTL")

MANIFESTS = """
apiVersion: v1
kind: PersistentVolume
metadata: {name: kpv}
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/kubectl-test}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: kpvc}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
  storageClassName: ""
---
apiVersion: v1
kind: Pod
metadata: {name: kpod}
spec:
  containers: [{name: main, image: busybox}]
---
apiVersion: v1
kind: Service
metadata: {name: ksvc}
spec:
  selector: {app: k}
  ports: [{port: 80}]
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    with running_server(tmp_path) as server:
        assert server.kubeconfig is not None and server.url.startswith("https://")
        yield server.kubeconfig


def kubectl(config: Path, *args: str, stdin: str | None = None, ok: bool = True,
            binary: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cache = config.parent / "kube-cache"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    proc = subprocess.run([binary or kubectl_binary(), "--kubeconfig", str(config), "--cache-dir", str(cache), *args],
                          input=stdin, capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})
    if ok:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def header(out: str, line: int = 0) -> list[str]:
    return out.splitlines()[line].split()


def test_kubectl_get_wide_explain_apply_and_get_all(kubeconfig: Path) -> None:
    created = kubectl(kubeconfig, "apply", "-f", "-", stdin=MANIFESTS)  # validates (Strict) by default
    assert "persistentvolume/kpv created" in created.stdout

    out = kubectl(kubeconfig, "get", "pv,pvc,pods", "-o", "wide").stdout
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 3, out
    assert blocks[0].splitlines()[0].split() == [
        "NAME", "CAPACITY", "ACCESS", "MODES", "RECLAIM", "POLICY", "STATUS", "CLAIM", "STORAGECLASS", "REASON",
        "AGE", "VOLUMEMODE"]
    assert blocks[0].splitlines()[1].split()[:3] == ["persistentvolume/kpv", "2Gi", "RWO"]
    assert blocks[1].splitlines()[0].split()[:3] == ["NAME", "STATUS", "VOLUME"]
    assert blocks[1].splitlines()[0].split()[-1] == "VOLUMEMODE"
    assert blocks[2].splitlines()[0].split() == [
        "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
    assert blocks[2].splitlines()[1].split()[:3] == ["pod/kpod", "0/1", "Pending"]

    explained = kubectl(kubeconfig, "explain", "pv.spec").stdout
    assert "KIND:       PersistentVolume" in explained and "FIELD: spec <PersistentVolumeSpec>" in explained
    assert "persistentVolumeReclaimPolicy" in explained and "accessModes" in explained
    policy = kubectl(kubeconfig, "explain", "pv.spec.persistentVolumeReclaimPolicy").stdout
    assert "Retain" in policy and "Delete" in policy

    # Validation by default: an unknown field is refused by the server (kubectl sends fieldValidation=Strict).
    bad = MANIFESTS.split("---")[0].replace("name: kpv", "name: kpv2").replace(
        "hostPath: {path: /tmp/kubectl-test}", "hostPath: {path: /tmp/kubectl-test, colour: blue}")
    refused = kubectl(kubeconfig, "apply", "-f", "-", stdin=bad, ok=False)
    assert refused.returncode != 0
    assert 'strict decoding error: unknown field "spec.hostPath.colour"' in refused.stderr
    assert "failed to download openapi" not in refused.stderr
    assert kubectl(kubeconfig, "get", "pv", "kpv2", ok=False).returncode != 0
    # The same on update (a PATCH of an existing object).
    changed = MANIFESTS.split("---")[0].replace("accessModes: [ReadWriteOnce]", "accessModes: [ReadWriteOnce]\n  x: 1")
    refused = kubectl(kubeconfig, "apply", "-f", "-", stdin=changed, ok=False)
    assert 'unknown field "spec.x"' in refused.stderr

    # create, replace and edit validate by default too, with no --validate=false.
    refused = kubectl(kubeconfig, "create", "-f", "-", stdin=bad, ok=False)
    assert 'strict decoding error: unknown field "spec.hostPath.colour"' in refused.stderr
    replaced = kubectl(kubeconfig, "replace", "-f", "-", stdin=MANIFESTS.split("---")[0].replace("2Gi", "3Gi"))
    assert "persistentvolume/kpv replaced" in replaced.stdout
    refused = kubectl(kubeconfig, "replace", "-f", "-", stdin=bad.replace("name: kpv2", "name: kpv"), ok=False)
    assert 'unknown field "spec.hostPath.colour"' in refused.stderr
    kubectl(kubeconfig, "edit", "pv", "kpv", env={"EDITOR": "sed -i s/3Gi/4Gi/", "KUBE_EDITOR": "sed -i s/3Gi/4Gi/"})
    assert kubectl(kubeconfig, "get", "pv", "kpv", "-o", "jsonpath={.spec.capacity.storage}").stdout == "4Gi"

    everything = kubectl(kubeconfig, "get", "all").stdout
    assert "pod/kpod" in everything and "service/ksvc" in everything
    assert "persistentvolume" not in everything  # not in the "all" category, as Kubernetes

    # A second apply sends a strategic merge patch keyed as the OpenAPI documents say: unchanged entries stay.
    web = """
apiVersion: v1
kind: ReplicationController
metadata: {name: kweb}
spec:
  replicas: 0
  selector: {app: kweb}
  template:
    metadata: {labels: {app: kweb}}
    spec:
      containers:
      - name: main
        image: nginx:1
        ports: [{containerPort: 80}, {containerPort: 443}]
        volumeMounts: [{name: a, mountPath: /a}, {name: b, mountPath: /b}]
      volumes: [{name: a}, {name: b}]
"""
    kubectl(kubeconfig, "apply", "-f", "-", stdin=web)
    changed = web.replace("containerPort: 443", "containerPort: 8443").replace("name: b, mountPath: /b",
                                                                              "name: b, mountPath: /bb")
    kubectl(kubeconfig, "apply", "-f", "-", stdin=changed)
    spec = json.loads(kubectl(kubeconfig, "get", "rc", "kweb", "-o", "json").stdout)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [80, 8443]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/a", "/bb"]
    assert spec["volumes"] == [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]

    # kubectl delete --dry-run=server keeps the object.
    kubectl(kubeconfig, "delete", "pod", "kpod", "--dry-run=server")
    assert "kpod" in kubectl(kubeconfig, "get", "pods", "-o", "name").stdout


@pytest.mark.skipif(not OLD_KUBECTL, reason="no kubectl older than 1.27: set STOWAGE_OLD_KUBECTL to one "
                                            "(Debian's kubernetes-client package has 1.20)")
def test_old_kubectl_validates_and_explains_with_protobuf_openapi_v2(kubeconfig: Path) -> None:
    old = OLD_KUBECTL
    created = kubectl(kubeconfig, "apply", "-f", "-", stdin=MANIFESTS, binary=old)
    assert "persistentvolume/kpv created" in created.stdout
    rows = kubectl(kubeconfig, "get", "pv", "-o", "wide", binary=old).stdout.splitlines()
    assert rows[0].split()[-1] == "VOLUMEMODE" and rows[1].split()[:2] == ["kpv", "2Gi"]
    explained = kubectl(kubeconfig, "explain", "pv.spec", binary=old).stdout
    assert "KIND:     PersistentVolume" in explained and "persistentVolumeReclaimPolicy" in explained
    # Client-side validation from the protobuf document, before anything reaches the server.
    bad = MANIFESTS.split("---")[0].replace("name: kpv", "name: kpv2").replace(
        "hostPath: {path: /tmp/kubectl-test}", "hostPath: {path: /tmp/kubectl-test, colour: blue}")
    refused = kubectl(kubeconfig, "apply", "-f", "-", stdin=bad, ok=False, binary=old)
    assert refused.returncode != 0
    assert 'unknown field "colour" in io.k8s.api.core.v1.HostPathVolumeSource' in refused.stderr
    assert "pod/kpod" in kubectl(kubeconfig, "get", "all", binary=old).stdout
