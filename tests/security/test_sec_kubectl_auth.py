"""The real kubectl against RBAC: ``auth can-i`` (one check and ``--list``), ``auth whoami``, and a 403,
with every kubectl the README promises (``kubectl_version``).

kubectl runs against the real HTTPS API server, with a kubeconfig for alice written as the
server writes its own (her token and the cluster CA as certificate-authority-data), no extra
flags. kubectl posts its reviews as protobuf (storage/api/k8s_protobuf.py reads them).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from sec_authz_util import namespace, role_binding, secret
from serverutil import running_server
from storage.apiserver.auth import TOKEN_FILE, User, append_token
from storage.client.kubeconfig import write_kubeconfig
from support import kubectl_binary, need_kubectl_command


@pytest.fixture
def alice(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a kubectl run as alice (a view binding in ns1, her namespace by default)."""
    data = tmp_path / "apiserver"  # running_server's data dir: the token is there before it starts
    data.mkdir()
    append_token(data / TOKEN_FILE, "alice-token", User("alice", "uid-a", ("team-a",)))
    with running_server(tmp_path) as server:
        assert server.url.startswith("https://") and server.ca_pem
        store = server.store
        store.create("namespaces", namespace("ns1"))
        store.create("secrets", secret("s", "ns1"))
        store.create("rolebindings", role_binding("alice-view", "ns1", "view", user="alice"))
        kubeconfig = write_kubeconfig(tmp_path / "alice.kubeconfig", server.url, "alice-token",
                                      ca_data=server.ca_pem)
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"].keys() == {"server", "certificate-authority-data"}
        config["contexts"][0]["context"]["namespace"] = "ns1"
        kubeconfig.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env.update({"KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)})
        yield env


def run(version: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl_binary(version), *args], capture_output=True, text=True, timeout=60, env=env)


def test_kubectl_auth_can_i_and_forbidden(alice: dict[str, str], kubectl_version: str) -> None:
    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return run(kubectl_version, alice, *args)

    def can_i(*args: str) -> str:
        # The index may still be reading the binding written behind the API's back: a denial waits for it.
        done = kubectl("auth", "can-i", *args)
        assert done.stdout.strip() in ("yes", "no"), f"kubectl auth can-i {args}: {done.stderr}"
        return done.stdout.strip()

    assert can_i("list", "pods") == "yes"
    assert can_i("get", "secrets") == "no"
    assert can_i("list", "pods", "-n", "ns2") == "no"
    assert can_i("get", "pods", "--subresource=log") == "yes"
    listed = kubectl("auth", "can-i", "--list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert "pods" in rows and "secrets" not in rows and "selfsubjectaccessreviews.authorization.k8s.io" in rows
    denied = kubectl("get", "secret", "s")
    assert denied.returncode != 0
    assert ('secrets "s" is forbidden: User "alice" cannot get resource "secrets" in API group "" '
            'in the namespace "ns1"') in denied.stderr
    pods = kubectl("get", "pods")
    assert pods.returncode == 0 and "No resources found" in pods.stderr + pods.stdout


def test_kubectl_auth_whoami(kubectl_version: str, alice: dict[str, str]) -> None:
    need_kubectl_command(kubectl_version, "auth whoami")
    whoami = run(kubectl_version, alice, "auth", "whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert "alice" in whoami.stdout and "system:authenticated" in whoami.stdout and "team-a" in whoami.stdout
