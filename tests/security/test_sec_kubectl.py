"""The real kubectl over TLS with the kubeconfig the server writes (bearer token), with a ``stowage
create-user`` kubeconfig (client certificate). No extra flags: apply and create validate against the
server's OpenAPI. Each test runs with every kubectl the README promises (``kubectl_version``)."""
from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from serverutil import running_server
from storage.apiserver.server import RunningServer
from storage.errors import Unauthorized
from storage.system import pki
from support import kubectl_binary, need_kubectl_command, stowage_executable

@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as srv:
        yield srv


def kubectl(version: str, kubeconfig: Path, home: Path, *args: str, stdin: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env.update({"KUBECONFIG": str(kubeconfig), "HOME": str(home)})
    proc = subprocess.run([kubectl_binary(version), *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, f"kubectl {version} {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


CLAIM = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"""


GROUP_BINDING = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: storage-admins}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: storage-admins}]
"""


def csr_manifest(name: str) -> str:
    request = base64.b64encode(pki.new_csr(pki.new_key(), "anyone")).decode()
    return (f"apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\n"
            f"spec: {{request: {request}, signerName: example.com/nobody, usages: [client auth]}}\n")


def test_kubectl_with_the_generated_kubeconfig(server: RunningServer, kubectl_version: str, tmp_path: Path) -> None:
    assert server.kubeconfig is not None and server.url.startswith("https://")
    client = server.client()
    client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})
    client.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-a"},
                   "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                            "hostPath": {"path": "/tmp/pv-a"}}})
    assert "node-a" in kubectl(kubectl_version, server.kubeconfig, tmp_path, "get", "nodes")
    assert "pv-a" in kubectl(kubectl_version, server.kubeconfig, tmp_path, "get", "pv")
    claim_file = tmp_path / "claim.yaml"
    claim_file.write_text(CLAIM)
    assert "persistentvolumeclaim/data" in kubectl(kubectl_version, server.kubeconfig, tmp_path, "apply", "-f", str(claim_file))
    assert client.get("persistentvolumeclaims", "data", "default")["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # kubectl sent the admin token over TLS: the server records who made this request.
    kubectl(kubectl_version, server.kubeconfig, tmp_path, "create", "-f", "-", stdin=csr_manifest("by-kubectl"))
    assert client.get("certificatesigningrequests", "by-kubectl")["spec"]["username"] == "admin"


def test_kubectl_with_a_create_user_client_certificate(server: RunningServer, kubectl_version: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "carol.kubeconfig"
    proc = subprocess.run([stowage_executable(), "create-user", "carol", "--group", "storage-admins",
                           "--data-dir", str(server.data_dir), "-o", str(kubeconfig)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # RBAC is on: the admin grants the group a role, as a user would.
    assert server.kubeconfig is not None
    kubectl(kubectl_version, server.kubeconfig, tmp_path, "apply", "-f", "-", stdin=GROUP_BINDING)
    kubectl(kubectl_version, kubeconfig, tmp_path, "get", "pvc")
    kubectl(kubectl_version, kubeconfig, tmp_path, "create", "-f", "-", stdin=csr_manifest("by-carol"))
    spec = server.client().get("certificatesigningrequests", "by-carol")["spec"]
    assert (spec["username"], spec["groups"]) == ("carol", ["storage-admins", "system:authenticated"])


def test_kubectl_create_token_gives_a_working_service_account_token(server: RunningServer, kubectl_version: str, tmp_path: Path) -> None:
    """kubectl sends this TokenRequest in protobuf; the answer is JSON, which kubectl reads."""
    from storage.client import Client

    need_kubectl_command(kubectl_version, "create token")
    assert server.kubeconfig is not None
    server.client().create({"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": "robot", "namespace": "default"}})
    token = kubectl(kubectl_version, server.kubeconfig, tmp_path, "create", "token", "robot", "--duration=10m",
                    "--audience=https://kubernetes.default.svc").strip()
    with Client(server.url, token, ca_data=server.ca_pem) as robot:
        review = robot.create({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert review["status"]["userInfo"]["username"] == "system:serviceaccount:default:robot"
    # Another audience asked through kubectl is honoured: that token is no good for this API server.
    elsewhere = kubectl(kubectl_version, server.kubeconfig, tmp_path, "create", "token", "robot", "--audience=vault").strip()
    with Client(server.url, elsewhere, ca_data=server.ca_pem) as robot:
        with pytest.raises(Unauthorized):
            robot.list("configmaps", "default")
