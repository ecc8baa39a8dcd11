"""Manifests as the Kubernetes documentation writes them (k8s_docs_manifests/: every storage kind
Stowage serves, every volume source, the workloads that use them), driven by the real kubectl of
each release the README promises, with its defaults: client-side ``apply -f DIR`` (validation on:
server-side for current kubectl, against the protobuf OpenAPI v2 document for 1.20), ``get -f DIR
-o json`` gives back every field the files set, ``diff -f DIR`` finds nothing after the apply, and
``delete -f DIR`` removes it all.

The API server runs with its controllers and no node, so pods whose sources cannot work here are
accepted and stay Pending; claims bind where a volume fits (SEMANTICS B1-B11).
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from serverutil import running_server
from storage.api.quantity import canonical
from storage.apiserver.server import RunningServer
from support import get_or_none, kubectl_binary, running_controllers, wait_for

DOCS = Path(__file__).parent / "k8s_docs_manifests"
NAMESPACE = "k8s-docs"  # the namespace the files' claimRef and secret references name
SA_VOLUME = "kube-api-access-"
QUANTITY_KEYS = {"storage", "cpu", "memory", "ephemeral-storage", "sizeLimit", "divisor"}


def documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(DOCS.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as server, running_controllers(server.store):
        # hostPath pods need the privileged Pod Security level, as on Kubernetes.
        server.client().create({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})
        wait_for(lambda: get_or_none(server.store, "serviceaccounts", NAMESPACE, "default"),
                 "the namespace's default ServiceAccount")
        yield server


def expected_live(doc: dict[str, Any]) -> dict[str, Any]:
    """What the API keeps of a document: a Secret's write-only stringData is stored base64 in data."""
    if doc["kind"] != "Secret" or "stringData" not in doc:
        return doc
    kept = {k: v for k, v in doc.items() if k != "stringData"}
    kept["data"] = {**doc.get("data", {}),
                    **{k: base64.b64encode(v.encode()).decode() for k, v in doc["stringData"].items()}}
    return kept


def assert_kept(sent: Any, live: Any, path: str) -> None:
    """Every field ``sent`` sets is in ``live`` with the same value (the server may add defaults;
    a quantity may come back in its canonical form, Q2)."""
    if isinstance(sent, dict):
        assert isinstance(live, dict), f"{path}: {live!r}"
        for key, value in sent.items():
            assert key in live, f"{path}.{key} was dropped"
            assert_kept(value, live[key], f"{path}.{key}")
    elif isinstance(sent, list):
        assert isinstance(live, list), f"{path}: {live!r}"
        added = live[len(sent):]
        # The ServiceAccount admission appends the API access volume and its mounts, as on Kubernetes.
        assert len(live) >= len(sent) and all(
            path.endswith((".volumes", ".volumeMounts")) and str(extra.get("name", "")).startswith(SA_VOLUME)
            for extra in added), f"{path}: {sent!r} -> {live!r}"
        for i, (a, b) in enumerate(zip(sent, live)):
            assert_kept(a, b, f"{path}[{i}]")
    elif sent != live:
        key = path.rsplit(".", 1)[-1]
        assert key in QUANTITY_KEYS and isinstance(live, str) and canonical(str(sent)) == live, \
            f"{path}: sent {sent!r}, read back {live!r}"


def test_documented_manifests_apply_read_back_diff_and_delete(cluster: RunningServer, kubectl_version: str,
                                                             tmp_path: Path) -> None:
    assert cluster.kubeconfig is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env.update({"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(tmp_path)})

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(kubectl_version), "-n", NAMESPACE, *args, "-f", str(DOCS)],
                              capture_output=True, text=True, env=env, timeout=180)

    docs = documents()
    kinds = {doc["kind"] for doc in docs}
    assert {"PersistentVolume", "PersistentVolumeClaim", "StorageClass", "VolumeAttachment", "Pod",
            "StatefulSet", "Deployment", "Secret", "ConfigMap", "Service"} <= kinds

    applied = kubectl("apply")
    assert applied.returncode == 0, applied.stderr
    lines = applied.stdout.splitlines()
    assert len(lines) == len(docs) and all(line.endswith(" created") for line in lines), applied.stdout

    read = kubectl("get", "-o", "json")
    assert read.returncode == 0, read.stderr
    live = {(o["kind"], o["metadata"]["name"]): o for o in json.loads(read.stdout)["items"]}
    assert len(live) == len(docs)
    for doc in docs:
        name = doc["metadata"]["name"]
        assert_kept(expected_live(doc), live[(doc["kind"], name)], f"{doc['kind']}/{name}")

    # kubectl diff asks the server for a dry-run of the same apply: nothing may differ.
    diff = kubectl("diff")
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr

    # kubectl's own wait for the deletions reads each object again through a client throttled to
    # 5 requests a second (16 s for these files); one listing of what is left does the same check.
    deleted = kubectl("delete", "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    lines = deleted.stdout.splitlines()
    # "pod "x" deleted", or "... deleted from NAMESPACE namespace" from recent kubectl.
    assert len(lines) == len(docs) and all('" deleted' in line for line in lines), deleted.stdout

    def left() -> bool:
        listed = kubectl("get", "--ignore-not-found", "-o", "name")
        assert listed.returncode == 0, listed.stderr
        return listed.stdout == ""

    wait_for(left, "every object of the files to be gone (finalizers removed by the controllers)", interval=0.5)
