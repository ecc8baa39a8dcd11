"""Who a request is (issue 8 item 4): client certificates, bootstrap tokens, node identities and bound
service-account tokens.

The server's view of a caller is read from a CertificateSigningRequest the caller creates: the API server
records its requester (``spec.username``, ``spec.groups``) as Kubernetes does, whatever the body claims.
"""
from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from serverutil import running_server
from storage.agent.credentials import node_credentials
from storage.api.bootstrap_tokens import new_bootstrap_token
from storage.apiserver.satokens import ServiceAccountTokens
from storage.apiserver.server import RunningServer
from storage.client import Client
from storage.client.kubeconfig import ClusterAccess, load_access
from storage.errors import Forbidden, Unauthorized
from storage.system import pki
from support import stowage_executable

Obj = dict[str, Any]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as srv:
        yield srv


def whoami(client: Client, name: str) -> tuple[str, list[str]]:
    """The server's view of ``client``'s identity, as ``kubectl auth whoami`` asks for it (SelfSubjectReview,
    which every authenticated user may create)."""
    review = client.create({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    info = review["status"]["userInfo"]
    return info["username"], info["groups"]


def csr_requester(client: Client, name: str) -> tuple[str, list[str]]:
    """The requester the server records on a CSR made by ``client`` (SEMANTICS I2: whatever the body says)."""
    request = pki.new_csr(pki.new_key(), "whoever")
    created = client.create({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
        "spec": {"request": base64.b64encode(request).decode(), "signerName": "example.com/nobody",
                 "usages": ["client auth"], "username": "system:admin", "groups": ["system:masters"]},
    })
    return created["spec"]["username"], created["spec"]["groups"]


def cert_client(server: RunningServer, user: str, groups: tuple[str, ...]) -> Client:
    assert server.tls is not None
    cert, key = server.tls.pki.issue_client(user, groups)
    return Client(server.url, ca_data=server.ca_pem, cert_data=cert, key_data=key)


def test_client_certificate_is_cn_user_and_o_groups(server: RunningServer) -> None:
    with cert_client(server, "alice", ("devs", "ops")) as alice:
        assert whoami(alice, "alice-1") == ("alice", ["devs", "ops", "system:authenticated"])


def test_token_file_users_get_system_authenticated(server: RunningServer) -> None:
    assert whoami(server.client(), "admin-1") == ("admin", ["system:masters", "system:authenticated"])
    # A CSR records who asked, not who the body claims to be.
    assert csr_requester(server.client(), "admin-csr") == ("admin", ["system:masters", "system:authenticated"])


def test_a_certificate_from_another_ca_is_refused(server: RunningServer) -> None:
    other, other_key = pki.new_ca("not-the-cluster")
    key = pki.new_key()
    forged = pki.sign(other, other_key, key.public_key(), "admin", ("system:masters",), client=True)
    with Client(server.url, ca_data=server.ca_pem, cert_data=pki.cert_pem(forged), key_data=pki.key_pem(key)) as c:
        with pytest.raises(httpx.HTTPError):
            c.list("configmaps")


def test_a_serving_certificate_is_no_client_identity(server: RunningServer) -> None:
    """A certificate without the clientAuth usage (an agent's serving one) does not authenticate."""
    assert server.tls is not None
    cert, key = server.tls.pki.issue_serving("system:node:n1", ["127.0.0.1"])
    with Client(server.url, ca_data=server.ca_pem, cert_data=cert, key_data=key) as c:
        with pytest.raises((Unauthorized, httpx.HTTPError)):
            c.list("configmaps")


def test_create_user_writes_a_working_client_certificate_kubeconfig(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "bob.kubeconfig"
    proc = subprocess.run([stowage_executable(), "create-user", "bob", "--group", "devs", "--group", "qa",
                           "--data-dir", str(server.data_dir), "-o", str(out)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o077 == 0
    access = load_access(out)
    assert access.token is None and access.cert_data and access.key_data and access.server == server.url
    with Client.from_access(access) as bob:
        assert whoami(bob, "bob-1") == ("bob", ["devs", "qa", "system:authenticated"])
    refused = subprocess.run([stowage_executable(), "create-user", "system:admin", "--data-dir",
                              str(server.data_dir)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "reserved" in refused.stderr


# ---- bootstrap tokens and node identities --------------------------------------------------------

def bootstrap_access(server: RunningServer, ttl: int = 600) -> ClusterAccess:
    token, secret = new_bootstrap_token(ttl, "test")
    server.client().create(secret)
    return ClusterAccess(server.url, token, ca_data=server.ca_pem)


def test_bootstrap_token_only_requests_node_certificates(server: RunningServer) -> None:
    access = bootstrap_access(server)
    token_id = access.token.split(".")[0]  # type: ignore[union-attr]
    with Client.from_access(access) as boot:
        user, groups = whoami(boot, "boot-1")
        assert user == f"system:bootstrap:{token_id}"
        assert "system:bootstrappers" in groups and "system:authenticated" in groups
        for call in (lambda: boot.list("pods"), lambda: boot.list("secrets", "kube-system"),
                     lambda: boot.create({"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "x", "namespace": "default"}})):
            with pytest.raises(Forbidden):
                call()


def test_unknown_wrong_or_expired_bootstrap_tokens_are_refused(server: RunningServer) -> None:
    good = bootstrap_access(server)
    token_id = good.token.split(".")[0]  # type: ignore[union-attr]
    expired_token, expired = new_bootstrap_token(60, "old", now=time.time() - 3600)
    server.client().create(expired)
    for token in ("abcdef.0123456789abcdef", f"{token_id}.0123456789abcdef", expired_token):
        with Client(server.url, token, ca_data=server.ca_pem) as c:
            with pytest.raises(Unauthorized) as info:
                whoami(c, "never")
            assert token.split(".")[1] not in info.value.message  # no secret in the answer


def test_agent_bootstraps_its_own_node_identity(server: RunningServer, tmp_path: Path) -> None:
    creds = node_credentials("n7", tmp_path / "agent-pki", "127.0.0.1", lambda: bootstrap_access(server))
    assert creds.access.token is None and creds.access.cert_data
    with Client.from_access(creds.access) as node:
        assert whoami(node, "node-1") == ("system:node:n7", ["system:nodes", "system:authenticated"])
    serving = pki.load_cert(creds.tls.cert_file.read_bytes())
    assert pki.identity(serving)[0] == "system:node:n7" and "127.0.0.1" in pki.cert_sans(serving)
    assert not pki.is_client_cert(serving)  # serving only
    for f in (creds.tls.key_file, creds.kubeconfig):
        assert f.stat().st_mode & 0o777 == 0o600
    # On restart the saved identity is reused: no bootstrap token is needed any more.
    again = node_credentials("n7", tmp_path / "agent-pki", "127.0.0.1", None)
    assert again.access.cert_data == creds.access.cert_data


def test_a_bootstrapper_cannot_get_a_certificate_beyond_a_node_client_one(server: RunningServer) -> None:
    access = bootstrap_access(server)
    with Client.from_access(access) as boot:
        for name, subject, orgs, signer, usages in (
            ("admin-cert", "admin", ("system:masters",), "kubernetes.io/kube-apiserver-client-kubelet", ["client auth"]),
            ("node-masters", "system:node:x", ("system:nodes", "system:masters"),
             "kubernetes.io/kube-apiserver-client-kubelet", ["client auth"]),
            ("serving", "system:node:x", ("system:nodes",), "kubernetes.io/kubelet-serving", ["server auth"]),
        ):
            request = pki.new_csr(pki.new_key(), subject, orgs, ["127.0.0.1"] if "serving" in name else [])
            created = boot.create({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                                   "metadata": {"name": name},
                                   "spec": {"request": base64.b64encode(request).decode(), "signerName": signer,
                                            "usages": usages}})
            assert not (created.get("status") or {}).get("certificate"), name


# ---- service-account tokens ----------------------------------------------------------------------

def _sa_and_pod(client: Client, name: str = "app") -> tuple[Obj, Obj]:
    sa = client.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": "default"}})
    pod = client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-pod", "namespace": "default"},
                         "spec": {"serviceAccountName": name,
                                  "containers": [{"name": "c", "image": "debian:12", "command": ["true"]}]}})
    return sa, pod


def request_token(server: RunningServer, sa: str, body: Obj) -> httpx.Response:
    return server.client().http.post(f"/api/v1/namespaces/default/serviceaccounts/{sa}/token",
                                     json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", **body})


def test_token_request_issues_a_bound_token_that_authenticates_the_service_account(server: RunningServer) -> None:
    _, pod = _sa_and_pod(server.client())
    response = request_token(server, "app", {"spec": {"expirationSeconds": 600, "boundObjectRef": {
        "kind": "Pod", "apiVersion": "v1", "name": "app-pod", "uid": pod["metadata"]["uid"]}}})
    assert response.status_code == 201, response.text
    status = response.json()["status"]
    assert status["token"] and status["expirationTimestamp"]
    with Client(server.url, status["token"], ca_data=server.ca_pem) as sa_client:
        assert whoami(sa_client, "sa-1") == ("system:serviceaccount:default:app", [
            "system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"])
    # Deleting the pod it is bound to (never scheduled: it goes at once) ends the token at once.
    server.client().delete("pods", "app-pod", "default")
    assert not _exists(server, "app-pod")
    with Client(server.url, status["token"], ca_data=server.ca_pem) as sa_client:
        with pytest.raises(Unauthorized):
            sa_client.list("configmaps", "default")


def _exists(server: RunningServer, pod: str) -> bool:
    try:
        server.store.get("pods", "default", pod)
        return True
    except Exception:
        return False


def test_tokens_for_another_audience_expired_or_of_a_deleted_account_are_refused(server: RunningServer) -> None:
    client = server.client()
    sa, _ = _sa_and_pod(client)
    elsewhere = request_token(server, "app", {"spec": {"audiences": ["https://vault.example"]}})
    assert elsewhere.status_code == 201
    signer = ServiceAccountTokens(server.data_dir / "pki")
    expired, _ = signer.issue("default", "app", sa["metadata"]["uid"], audiences=["https://kubernetes.default.svc"],
                              expiration=600, now=time.time() - 3600)
    forged_uid, _ = signer.issue("default", "app", "not-the-uid", audiences=["https://kubernetes.default.svc"],
                                 expiration=600)
    other_key = ServiceAccountTokens(server.data_dir / "elsewhere")
    foreign, _ = other_key.issue("default", "app", sa["metadata"]["uid"], audiences=["https://kubernetes.default.svc"],
                                 expiration=600)
    for token in (elsewhere.json()["status"]["token"], expired, forged_uid, foreign):
        with Client(server.url, token, ca_data=server.ca_pem) as c:
            with pytest.raises(Unauthorized):
                c.list("configmaps", "default")
    valid = request_token(server, "app", {"spec": {}}).json()["status"]["token"]
    with Client(server.url, valid, ca_data=server.ca_pem) as c:
        assert whoami(c, "sa")[0] == "system:serviceaccount:default:app"
        with pytest.raises(Forbidden):  # authenticated, and RBAC grants the account nothing
            c.list("configmaps", "default")
        client.delete("serviceaccounts", "app", "default")
        with pytest.raises(Unauthorized):
            c.list("configmaps", "default")


def test_token_request_rejects_bad_input_with_field_names(server: RunningServer) -> None:
    _sa_and_pod(server.client())
    short = request_token(server, "app", {"spec": {"expirationSeconds": 10}})
    assert short.status_code == 400 and "spec.expirationSeconds" in short.json()["message"]
    # A bound object that is not there, or not the pod's service account, or another uid: Kubernetes'
    # TokenREST answers (404 of the pod, 400, 409), so kubectl create token prints the same.
    wrong_pod = request_token(server, "app", {"spec": {"boundObjectRef": {"kind": "Pod", "name": "nope"}}})
    assert wrong_pod.status_code == 404 and wrong_pod.json()["message"] == 'pods "nope" not found'
    server.client().create({"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": "other", "namespace": "default"}})
    other = request_token(server, "other", {"spec": {"boundObjectRef": {"kind": "Pod", "name": "app-pod"}}})
    assert other.status_code == 400 and other.json()["message"] == (
        'cannot bind token for serviceaccount "other" to pod running with different serviceaccount name.')
    stale = request_token(server, "app", {"spec": {"boundObjectRef": {"kind": "Pod", "name": "app-pod",
                                                                      "uid": "00000000-0000-0000-0000-000000000000"}}})
    assert stale.status_code == 409 and "does not match the UID in record" in stale.json()["message"]
    missing = request_token(server, "ghost", {"spec": {}})
    assert missing.status_code == 404


def test_every_namespace_gets_a_default_service_account_and_the_root_ca(server: RunningServer) -> None:
    from support import get_or_none, running_controllers, wait_for

    client = server.client()
    client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    with running_controllers(server.store):
        wait_for(lambda: get_or_none(server.store, "serviceaccounts", "team-a", "default"), "team-a's default SA")
        published = wait_for(lambda: get_or_none(server.store, "configmaps", "team-a", "kube-root-ca.crt"),
                             "team-a's kube-root-ca.crt")
        assert published["data"]["ca.crt"].encode() == server.ca_pem
        # Level-triggered: a deleted default account comes back.
        client.delete("serviceaccounts", "default", "team-a")
        wait_for(lambda: get_or_none(server.store, "serviceaccounts", "team-a", "default"), "the SA recreated")
