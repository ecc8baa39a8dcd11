"""The book demo, end to end through ``stowage up``: a hostPath PersistentVolume, a claim that
binds to it, and a pod with two containers that both see the same files.

The host directory lies outside the data dir, so it must be allowed with
``--host-path-prefix``; a path outside every allowed prefix is refused.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from storage.errors import Forbidden

from test_quickstart import UpRun, condition, up_dir, wait_until  # noqa: F401  (fixture)

LOOP = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


def manifests(shared: Path) -> list[dict]:
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "task-pv-volume", "labels": {"type": "local"}},
          "spec": {"storageClassName": "manual", "capacity": {"storage": "10Mi"}, "accessModes": ["ReadWriteOnce"],
                   "hostPath": {"path": str(shared)}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "task-pv-claim", "namespace": "default"},
           "spec": {"storageClassName": "manual", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "3Mi"}}}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "task-pv-pod", "namespace": "default"},
           "spec": {"terminationGracePeriodSeconds": 5,
                    "volumes": [{"name": "task-pv-storage", "persistentVolumeClaim": {"claimName": "task-pv-claim"}}],
                    "containers": [
                        {"name": "writer", "image": "debian:12", "command": ["/bin/sh", "-c"],
                         "args": ["echo 'Hello from the writer' > /usr/share/nginx/html/index.html; " + LOOP],
                         "volumeMounts": [{"name": "task-pv-storage", "mountPath": "/usr/share/nginx/html"}]},
                        {"name": "reader", "image": "debian:12", "command": ["/bin/sh", "-c"],
                         "args": ["until test -s /pod-data/index.html; do sleep 0.2; done; "
                                  "cat /pod-data/index.html; cp /pod-data/index.html /pod-data/seen-by-reader; " + LOOP],
                         "readinessProbe": {"exec": {"command": ["test", "-s", "/pod-data/seen-by-reader"]}, "periodSeconds": 1},
                         "volumeMounts": [{"name": "task-pv-storage", "mountPath": "/pod-data"}]}]}}
    return [pv, pvc, pod]


def test_book_demo_hostpath_pv_claim_and_two_containers_sharing_files(up_dir: Path) -> None:
    shared = up_dir.parent / "book-shared"
    shared.mkdir(parents=True)
    up = UpRun(up_dir, "--host-path-prefix", str(shared))
    try:
        client = up.client
        for obj in manifests(shared):
            client.create(obj)
        wait_until(lambda: client.get("persistentvolumeclaims", "task-pv-claim", "default")["status"].get("phase") == "Bound",
                   "the claim to bind")
        assert client.get("persistentvolumeclaims", "task-pv-claim", "default")["spec"]["volumeName"] == "task-pv-volume"
        pod = wait_until(lambda: (lambda p: p if p["status"].get("phase") == "Running" and condition(p, "Ready") == "True" else None)(
            client.get("pods", "task-pv-pod", "default")), f"the demo pod Running and Ready; log:\n{up.log()}")
        # Both containers saw the same file: the writer's line, copied by the reader, is on the host directory.
        assert (shared / "index.html").read_text() == "Hello from the writer\n"
        assert (shared / "seen-by-reader").read_text() == "Hello from the writer\n"
        # The reader printed it too: its log, through the API server's proxy to the node agent (over TLS).
        log = b"".join(client.logs("task-pv-pod", "default", container="reader")).decode()
        assert "Hello from the writer" in log

        # A pod's own hostPath volume needs a namespace that allows it: refused under the default (baseline) level...
        outside = dict(manifests(up_dir.parent / "not-allowed")[2])
        outside["metadata"] = {"name": "outside", "namespace": "default"}
        outside["spec"] = {**outside["spec"], "volumes": [{"name": "task-pv-storage", "hostPath": {"path": "/etc"}}]}
        with pytest.raises(Forbidden, match='violates PodSecurity "baseline:latest": hostPath volumes'):
            client.create(outside)
        # ...and once the namespace allows it, a hostPath outside the allowed prefixes is still refused, by the agent.
        default_ns = client.get("namespaces", "default")  # exists from the start (SEMANTICS N1)
        default_ns["metadata"].setdefault("labels", {})["pod-security.kubernetes.io/enforce"] = "privileged"
        client.update(default_ns)
        client.create(outside)
        wait_until(lambda: any("not under an allowed host path prefix" in str(cs.get("state"))
                               for cs in client.get("pods", "outside", "default")["status"].get("containerStatuses") or []),
                   "the hostPath refusal on the pod")

        for name in ("task-pv-pod", "outside"):
            client.delete("pods", name, "default")
        wait_until(lambda: not client.list("pods", "default")[0], "the pods to be gone")
        assert (shared / "index.html").exists(), "hostPath data stays on the host"
        assert up.stop() == 0
    finally:
        up.kill()
