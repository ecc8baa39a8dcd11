"""SEMANTICS FS3 with the real kubectl: a field selector on a Go bool or int field an object leaves out
compares with its zero value, as the kinds' ToSelectableFields print it (`kubectl get nodes --field-selector
spec.unschedulable=false` lists the schedulable nodes), a pod's status.podIP is its first podIPs entry, and
status.podIPs, which the pods' conversion function accepts but no object carries as a selectable field, is
always empty."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from serverutil import running_server
from support import kubectl_binary

OBJECTS = """\
apiVersion: v1
kind: Namespace
metadata:
  name: fs
  labels: {pod-security.kubernetes.io/enforce: privileged}  # a pod on the host's network is not baseline
---
apiVersion: v1
kind: Node
metadata: {name: fs-ready}
---
apiVersion: v1
kind: Node
metadata: {name: fs-cordoned}
spec: {unschedulable: true}
---
apiVersion: v1
kind: Pod
metadata: {name: fs-plain, namespace: fs}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: fs-host, namespace: fs}
spec:
  hostNetwork: true
  containers: [{name: c, image: busybox}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: fs-rs, namespace: fs}
spec:
  replicas: 0
  selector: {matchLabels: {app: fs-rs}}
  template:
    metadata: {labels: {app: fs-rs}}
    spec: {containers: [{name: c, image: busybox}]}
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    with running_server(tmp_path) as server:
        assert server.kubeconfig is not None
        yield server.kubeconfig


def kubectl(config: Path, *args: str, stdin: str | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    proc = subprocess.run([kubectl_binary(), "--kubeconfig", str(config), "--cache-dir", str(config.parent / "cache"),
                           *args], input=stdin, capture_output=True, text=True, timeout=120, env=clean)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def names(config: Path, kind: str, selector: str) -> set[str]:
    return set(kubectl(config, "get", kind, "-n", "fs", "--field-selector", selector, "-o", "name").split())


def test_fs3_zero_values_and_pod_ips(kubeconfig: Path) -> None:
    kubectl(kubeconfig, "apply", "-f", "-", stdin=OBJECTS)
    assert names(kubeconfig, "nodes", "spec.unschedulable=false") >= {"node/fs-ready"}
    assert "node/fs-cordoned" not in names(kubeconfig, "nodes", "spec.unschedulable=false")
    assert names(kubeconfig, "nodes", "spec.unschedulable=true") == {"node/fs-cordoned"}
    assert names(kubeconfig, "pods", "spec.hostNetwork=false") == {"pod/fs-plain"}
    assert names(kubeconfig, "pods", "spec.hostNetwork=true") == {"pod/fs-host"}
    assert names(kubeconfig, "replicasets", "status.replicas=0") == {"replicaset.apps/fs-rs"}

    kubectl(kubeconfig, "patch", "-n", "fs", "pod", "fs-plain", "--subresource=status", "--type=merge", "-p",
            '{"status": {"podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00::3"}]}}')
    assert names(kubeconfig, "pods", "status.podIP=10.1.2.3") == {"pod/fs-plain"}
    assert names(kubeconfig, "pods", "status.podIP=fd00::3") == set()
    assert names(kubeconfig, "pods", "status.podIPs=10.1.2.3") == set()
    assert names(kubeconfig, "pods", "status.podIPs=") == {"pod/fs-plain", "pod/fs-host"}
