"""SEMANTICS WN1-WN2 through the real API server and the real kubectl: a write Kubernetes accepts with a
warning is accepted here with the same warning, printed by kubectl as ``Warning: ...``."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from storage.apiserver.server import RunningServer
from support import kubectl_binary

# kubernetes/examples' staging/volumes/rbd/rbd.yaml without its imageformat and imagefeatures, which no
# Kubernetes release knows (kubectl's strict field validation refuses them there too).
RBD_POD = """apiVersion: v1
kind: Pod
metadata:
  name: rbd
spec:
  containers:
    - image: kubernetes/pause
      name: rbd-rw
      volumeMounts:
      - name: rbdpd
        mountPath: /mnt/rbd
  volumes:
    - name: rbdpd
      rbd:
        monitors:
        - '10.16.154.78:6789'
        - '10.16.154.82:6789'
        - '10.16.154.83:6789'
        pool: kube
        image: foo
        fsType: ext4
        readOnly: true
        user: admin
        keyring: /etc/ceph/keyring
"""

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: warned
spec:
  replicas: 0
  selector:
    matchLabels: {app: warned}
  template:
    metadata:
      labels: {app: warned}
    spec:
      nodeSelector:
        beta.kubernetes.io/os: linux
      containers:
      - name: c
        image: busybox
"""


def test_wn1_wn2_kubectl_prints_kubernetes_warnings(module_server: RunningServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), "--kubeconfig", str(module_server.kubeconfig), "--cache-dir",
                               str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=120, env=env)

    (tmp_path / "rbd.yaml").write_text(RBD_POD)
    done = kubectl("apply", "--dry-run=server", "-f", str(tmp_path / "rbd.yaml"))
    assert done.returncode == 0, done.stderr
    assert "Warning: spec.volumes[0].rbd: deprecated in v1.28, non-functional in v1.31+" in done.stderr
    assert done.stdout.strip() == "pod/rbd created (server dry run)"

    (tmp_path / "deploy.yaml").write_text(DEPLOYMENT)
    created = kubectl("apply", "-f", str(tmp_path / "deploy.yaml"))
    warning = ('Warning: spec.template.spec.nodeSelector[beta.kubernetes.io/os]: deprecated since v1.14; use '
               '"kubernetes.io/os" instead')
    try:
        assert created.returncode == 0, created.stderr
        assert warning in created.stderr
        # A change that leaves the template alone is not warned about again (Kubernetes' strategies).
        scaled = kubectl("scale", "deployment/warned", "--replicas=0")
        labelled = kubectl("label", "deployment/warned", "team=storage")
        assert scaled.returncode == 0 and labelled.returncode == 0, scaled.stderr + labelled.stderr
        assert "Warning" not in labelled.stderr
        # A write with nothing to warn about prints nothing.
        clean = kubectl("create", "configmap", "quiet", "--from-literal=a=b")
        assert clean.returncode == 0 and clean.stderr == "", clean.stderr
    finally:
        kubectl("delete", "deployment/warned", "configmap/quiet", "--ignore-not-found", "--wait=false")
