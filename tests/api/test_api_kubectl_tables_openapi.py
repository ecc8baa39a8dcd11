"""The real kubectl against the API server: server-side printing, explain, validating apply, get all.

kubectl runs against the real HTTPS API server with the kubeconfig it writes (the admin token and the
cluster CA as certificate-authority-data), with no extra flags, once with each kubectl the README
promises (``kubectl_version``). Current kubectl reads the OpenAPI v3 documents and leaves validation
to the server (``fieldValidation=Strict``); 1.20 reads only the protobuf OpenAPI v2 document and
validates on the client before anything is sent.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from serverutil import running_server
from support import kubectl_binary

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
            version: str = "1.37", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cache = config.parent / f"kube-cache-{version}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    proc = subprocess.run([kubectl_binary(version), "--kubeconfig", str(config), "--cache-dir", str(cache), *args],
                          input=stdin, capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})
    if ok:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def header(out: str, line: int = 0) -> list[str]:
    return out.splitlines()[line].split()


def unknown_field(version: str, path: str, kind: str, in_type: str) -> str:
    """kubectl's message for an unknown field: the server's strict decoding error, or 1.20's own
    validation against the protobuf OpenAPI v2 document (``path`` is dotted from the object)."""
    if version == "1.20":
        parent, _, field = path.rpartition(".")
        return f'ValidationError({kind}.{parent}): unknown field "{field}" in {in_type}'
    return f'strict decoding error: unknown field "{path}"'


def test_kubectl_get_wide_explain_apply_and_get_all(kubeconfig: Path, kubectl_version: str) -> None:
    def run(*args: str, stdin: str | None = None, ok: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl(kubeconfig, *args, stdin=stdin, ok=ok, version=kubectl_version, env=env)

    created = run("apply", "-f", "-", stdin=MANIFESTS)  # validates by default
    assert "persistentvolume/kpv created" in created.stdout

    out = run("get", "pv,pvc,pods", "-o", "wide").stdout
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 3, out
    assert blocks[0].splitlines()[0].split() == [
        "NAME", "CAPACITY", "ACCESS", "MODES", "RECLAIM", "POLICY", "STATUS", "CLAIM", "STORAGECLASS",
        "VOLUMEATTRIBUTESCLASS", "REASON", "AGE", "VOLUMEMODE"]
    assert blocks[0].splitlines()[1].split()[:3] == ["persistentvolume/kpv", "2Gi", "RWO"]
    assert blocks[1].splitlines()[0].split()[:3] == ["NAME", "STATUS", "VOLUME"]
    assert blocks[1].splitlines()[0].split()[-1] == "VOLUMEMODE"
    assert blocks[2].splitlines()[0].split() == [
        "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
    assert blocks[2].splitlines()[1].split()[:3] == ["pod/kpod", "0/1", "Pending"]
    rows = run("get", "pv", "-o", "wide").stdout.splitlines()
    assert rows[0].split()[-1] == "VOLUMEMODE" and rows[1].split()[:2] == ["kpv", "2Gi"]

    explained = run("explain", "pv.spec").stdout
    assert re.search(r"^KIND:\s+PersistentVolume$", explained, re.M), explained
    # 1.20 reads the protobuf OpenAPI v2 document, later releases the v3 one (which names the type).
    field = "RESOURCE: spec <Object>" if kubectl_version == "1.20" else "FIELD: spec <PersistentVolumeSpec>"
    assert field in explained
    assert "persistentVolumeReclaimPolicy" in explained and "accessModes" in explained
    policy = run("explain", "pv.spec.persistentVolumeReclaimPolicy").stdout
    assert "Retain" in policy and "Delete" in policy
    # Quantities and int-or-strings are named as Kubernetes' OpenAPI 3 documents make kubectl name them
    # (a oneOf with no type of its own); 1.20's OpenAPI 2 shows their type, string, there as here.
    resources = run("explain", "pod.spec.containers.resources").stdout
    strategy = run("explain", "deployment.spec.strategy.rollingUpdate").stdout
    quantity, int_or_string = ("string", "string") if kubectl_version == "1.20" else ("Quantity", "IntOrString")
    assert re.search(rf"^\s+limits\s+<map\[string\]{quantity}>$", resources, re.M), resources
    assert re.search(rf"^\s+maxSurge\s+<{int_or_string}>$", strategy, re.M), strategy

    # Validation by default: an unknown field is refused, by the server (current kubectl sends
    # fieldValidation=Strict) or by 1.20 itself, before anything reaches the server.
    colour = unknown_field(kubectl_version, "spec.hostPath.colour", "PersistentVolume",
                           "io.k8s.api.core.v1.HostPathVolumeSource")
    bad = MANIFESTS.split("---")[0].replace("name: kpv", "name: kpv2").replace(
        "hostPath: {path: /tmp/kubectl-test}", "hostPath: {path: /tmp/kubectl-test, colour: blue}")
    refused = run("apply", "-f", "-", stdin=bad, ok=False)
    assert refused.returncode != 0
    assert colour in refused.stderr, refused.stderr
    assert "failed to download openapi" not in refused.stderr
    assert run("get", "pv", "kpv2", ok=False).returncode != 0
    # The same on update (a PATCH of an existing object).
    changed = MANIFESTS.split("---")[0].replace("accessModes: [ReadWriteOnce]", "accessModes: [ReadWriteOnce]\n  x: 1")
    refused = run("apply", "-f", "-", stdin=changed, ok=False)
    assert unknown_field(kubectl_version, "spec.x", "PersistentVolume",
                         "io.k8s.api.core.v1.PersistentVolumeSpec") in refused.stderr, refused.stderr

    # create, replace and edit validate by default too, with no --validate=false.
    refused = run("create", "-f", "-", stdin=bad, ok=False)
    assert colour in refused.stderr, refused.stderr
    replaced = run("replace", "-f", "-", stdin=MANIFESTS.split("---")[0].replace("2Gi", "3Gi"))
    assert "persistentvolume/kpv replaced" in replaced.stdout
    refused = run("replace", "-f", "-", stdin=bad.replace("name: kpv2", "name: kpv"), ok=False)
    assert colour in refused.stderr, refused.stderr
    run("edit", "pv", "kpv", env={"EDITOR": "sed -i s/3Gi/4Gi/", "KUBE_EDITOR": "sed -i s/3Gi/4Gi/"})
    assert run("get", "pv", "kpv", "-o", "jsonpath={.spec.capacity.storage}").stdout == "4Gi"

    everything = run("get", "all").stdout
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
    run("apply", "-f", "-", stdin=web)
    changed = web.replace("containerPort: 443", "containerPort: 8443").replace("name: b, mountPath: /b",
                                                                              "name: b, mountPath: /bb")
    run("apply", "-f", "-", stdin=changed)
    spec = json.loads(run("get", "rc", "kweb", "-o", "json").stdout)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [80, 8443]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/a", "/bb"]
    assert spec["volumes"] == [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]

    # kubectl delete --dry-run=server keeps the object.
    run("delete", "pod", "kpod", "--dry-run=server")
    assert "kpod" in run("get", "pods", "-o", "name").stdout


def test_kubectl_create_generators(kubeconfig: Path, kubectl_version: str) -> None:
    """``kubectl create KIND NAME ...`` builds the object itself and posts it: as JSON from 1.20, as
    Kubernetes' protobuf from current releases."""

    def run(*args: str) -> str:
        return kubectl(kubeconfig, *args, version=kubectl_version).stdout.strip()

    assert run("create", "namespace", "made") == "namespace/made created"
    assert run("create", "configmap", "settings", "-n", "made", "--from-literal=colour=blue") == \
        "configmap/settings created"
    assert run("create", "secret", "generic", "creds", "-n", "made", "--from-literal=password=s3cret") == \
        "secret/creds created"
    assert run("create", "serviceaccount", "robot", "-n", "made") == "serviceaccount/robot created"
    assert run("create", "deployment", "web", "-n", "made", "--image=nginx:1", "--replicas=2") == \
        "deployment.apps/web created"
    assert run("create", "role", "reader", "-n", "made", "--verb=get", "--resource=pods") == \
        "role.rbac.authorization.k8s.io/reader created"
    assert run("create", "rolebinding", "reader", "-n", "made", "--role=reader", "--serviceaccount=made:robot") == \
        "rolebinding.rbac.authorization.k8s.io/reader created"
    assert run("get", "configmap", "settings", "-n", "made", "-o", "jsonpath={.data.colour}") == "blue"
    assert run("get", "secret", "creds", "-n", "made", "-o", "jsonpath={.data.password}") == "czNjcmV0"
    assert run("get", "deployment", "web", "-n", "made",
               "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}") == "2 nginx:1"
    assert run("auth", "can-i", "get", "pods", "-n", "made", "--as=system:serviceaccount:made:robot") == "yes"
