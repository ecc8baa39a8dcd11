"""Kubernetes' "normal user" certificate flow with the real kubectl: a user's CSR for
``kubernetes.io/kube-apiserver-client``, ``kubectl certificate approve|deny`` through the ``/approval``
subresource, the certificate signed by the cluster CA, and that certificate authenticating as its CN with its
O as groups (SEMANTICS CSR1-CSR4); and the kubelet signers' requests approved by hand (CSR6)."""
from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from storage.apiserver.server import RunningServer
from storage.system import pki
from support import kubectl_binary, wait_for

CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
BASE = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def _kubectl(kubeconfig: Path, tmp_path: Path, *args: str, stdin: str | None = None,
             ok: bool = True) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    done = subprocess.run([kubectl_binary(), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                           *args], capture_output=True, text=True, timeout=120, env=clean, input=stdin)
    if ok:
        assert done.returncode == 0, (args, done.stderr)
    return done


def _openssl_request(tmp_path: Path, name: str, subject: str) -> tuple[Path, bytes]:
    """As Kubernetes' documentation: ``openssl genrsa`` and ``openssl req``; (key file, CSR PEM)."""
    key = tmp_path / f"{name}.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    done = subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj", subject], check=True,
                          capture_output=True)
    return key, done.stdout


def _ec_request(common_name: str, org: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


def _csr(name: str, request: bytes, usages: list[str] | None = None, seconds: int = 86400) -> dict[str, Any]:
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
            "spec": {"request": base64.b64encode(request).decode(), "signerName": CLIENT_SIGNER,
                     "expirationSeconds": seconds, "usages": usages or ["client auth"]}}


def _user_kubeconfig(server: RunningServer, tmp_path: Path, user: str, key: Path, crt: Path) -> Path:
    """The documentation's kubeconfig for a new user: the CA, the issued certificate and the user's own key,
    written with kubectl config."""
    kubeconfig = tmp_path / f"{user}.kubeconfig"
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(server.ca_pem or b"")
    for args in (("config", "set-cluster", "stowage", f"--server={server.url}", f"--certificate-authority={ca_file}",
                  "--embed-certs=true"),
                 ("config", "set-credentials", user, f"--client-key={key}", f"--client-certificate={crt}",
                  "--embed-certs=true"),
                 ("config", "set-context", user, "--cluster=stowage", f"--user={user}"),
                 ("config", "use-context", user)):
        _kubectl(kubeconfig, tmp_path, *args)
    return kubeconfig


def _row(server: RunningServer, tmp_path: Path, name: str) -> list[str]:
    lines = _kubectl(server.kubeconfig, tmp_path, "get", "csr", name).stdout.strip().splitlines()
    assert lines[0].split() == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"]
    return lines[1].split()


def test_discovery_lists_the_approval_subresource(http: httpx.Client) -> None:
    """CSR1: kubectl finds certificatesigningrequests/approval (verbs get, patch, update), as Kubernetes lists it."""
    resources = {r["name"]: r for r in http.get("/apis/certificates.k8s.io/v1").json()["resources"]}
    assert resources["certificatesigningrequests/approval"]["verbs"] == ["get", "patch", "update"]
    assert resources["certificatesigningrequests/approval"]["kind"] == "CertificateSigningRequest"
    assert "certificatesigningrequests/status" in resources


def test_kubectl_approve_issues_a_client_certificate_that_authenticates_as_the_user(
        module_server: RunningServer, tmp_path: Path) -> None:
    """CSR1, CSR4: Kubernetes' documented flow, step by step, with an openssl RSA key."""
    key, request = _openssl_request(tmp_path, "jane", "/CN=jane/O=dev")
    _kubectl(module_server.kubeconfig, tmp_path, "create", "-f", "-", stdin=yaml.safe_dump(_csr("jane", request)))
    row = _row(module_server, tmp_path, "jane")
    assert row[2] == CLIENT_SIGNER and row[-2:] == ["24h", "Pending"]

    done = _kubectl(module_server.kubeconfig, tmp_path, "certificate", "approve", "jane")
    assert "certificatesigningrequest.certificates.k8s.io/jane approved" in done.stdout
    assert _row(module_server, tmp_path, "jane")[-1] == "Approved,Issued"

    encoded = _kubectl(module_server.kubeconfig, tmp_path, "get", "csr", "jane", "-o",
                       "jsonpath={.status.certificate}").stdout
    crt = tmp_path / "jane.crt"
    crt.write_bytes(base64.b64decode(encoded))
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "jane"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["dev"]
    ca = x509.load_pem_x509_certificate(module_server.ca_pem or b"")
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(hours=23) < lifetime <= datetime.timedelta(hours=24)  # min(expirationSeconds, 1 year)
    stored = json.loads(_kubectl(module_server.kubeconfig, tmp_path, "get", "csr", "jane", "-o", "json").stdout)
    approved = [c for c in stored["status"]["conditions"] if c["type"] == "Approved"]
    assert approved and approved[0]["reason"] == "KubectlApprove" and approved[0]["lastTransitionTime"]

    kubeconfig = _user_kubeconfig(module_server, tmp_path, "jane", key, crt)
    whoami = json.loads(_kubectl(kubeconfig, tmp_path, "auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == "jane"
    assert "dev" in whoami["status"]["userInfo"]["groups"]
    # Authenticated, and nothing more: jane has no RBAC grants yet.
    refused = _kubectl(kubeconfig, tmp_path, "get", "pods", ok=False)
    assert refused.returncode != 0 and 'User "jane" cannot list resource "pods"' in refused.stderr


def test_kubectl_deny_issues_nothing_and_an_approval_after_a_denial_is_refused(
        module_server: RunningServer, http: httpx.Client, tmp_path: Path) -> None:
    """CSR2: Denied stays Denied: no certificate; adding Approved (422) or swapping Denied for it (422) fails."""
    assert http.post(BASE, json=_csr("deny-me", _ec_request("mallory", "dev"))).status_code == 201
    done = _kubectl(module_server.kubeconfig, tmp_path, "certificate", "deny", "deny-me")
    assert "certificatesigningrequest.certificates.k8s.io/deny-me denied" in done.stdout
    assert _row(module_server, tmp_path, "deny-me")[-1] == "Denied"
    current = http.get(f"{BASE}/deny-me").json()
    assert "certificate" not in current["status"]
    # kubectl refuses by itself; the server refuses too.
    again = _kubectl(module_server.kubeconfig, tmp_path, "certificate", "approve", "deny-me", ok=False)
    assert again.returncode != 0 and "already Denied" in again.stderr

    both = json.loads(json.dumps(current))
    both["status"]["conditions"].append({"type": "Approved", "status": "True", "reason": "Sneaky"})
    refused = http.put(f"{BASE}/deny-me/approval", json=both)
    assert refused.status_code == 422, refused.text
    assert refused.json()["message"] == (
        'CertificateSigningRequest.certificates.k8s.io "deny-me" is invalid: status.conditions[1].type: '
        'Invalid value: "Approved": Approved and Denied conditions are mutually exclusive')
    assert refused.json()["details"]["group"] == "certificates.k8s.io"

    swapped = json.loads(json.dumps(current))
    swapped["status"]["conditions"] = [{"type": "Approved", "status": "True", "reason": "Sneaky"}]
    refused = http.put(f"{BASE}/deny-me/approval", json=swapped)
    assert refused.status_code == 422
    assert 'updates may not remove a condition of type "Denied"' in refused.json()["message"]
    merge = http.patch(f"{BASE}/deny-me/approval", content=json.dumps({"status": {"conditions": []}}),
                       headers={"Content-Type": "application/merge-patch+json"})
    assert merge.status_code == 422
    final = http.get(f"{BASE}/deny-me").json()
    assert [c["type"] for c in final["status"]["conditions"]] == ["Denied"] and "certificate" not in final["status"]


def test_approval_needs_approve_on_the_signer(module_server: RunningServer, http: httpx.Client) -> None:
    """CSR3: update on certificatesigningrequests/approval is not enough: verb approve on signers, named by the
    signer or ``<domain>/*``; else Kubernetes' 403."""
    assert module_server.tls is not None
    cert, key = module_server.tls.pki.issue_client("bob", ("approvers",))
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    assert http.post(f"{rbac}/clusterroles", json={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "csr-updater"},
        "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests",
                                                                        "certificatesigningrequests/approval"],
                   "verbs": ["get", "list", "update"]}]}).status_code == 201
    for role in ("csr-updater",):
        assert http.post(f"{rbac}/clusterrolebindings", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": f"bob-{role}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]}).status_code == 201
    assert http.post(BASE, json=_csr("for-bob", _ec_request("carol", "dev"))).status_code == 201
    with httpx.Client(base_url=module_server.url, verify=pki.client_context(module_server.ca_pem, cert, key),
                      timeout=60) as bob:
        current = bob.get(f"{BASE}/for-bob").json()
        current["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "Bob"}]}
        refused = bob.put(f"{BASE}/for-bob/approval", json=current)
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"] == (
            'certificatesigningrequests.certificates.k8s.io "for-bob" is forbidden: user not permitted to approve '
            f'requests with signerName "{CLIENT_SIGNER}"')
        assert "conditions" not in (http.get(f"{BASE}/for-bob").json().get("status") or {})
        # The default approver role (unbound, as in Kubernetes) names the signer: bound, bob may approve.
        assert http.post(f"{rbac}/clusterrolebindings", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "bob-approver"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:certificates.k8s.io:kube-apiserver-client-approver"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]}).status_code == 201
        done = bob.put(f"{BASE}/for-bob/approval", json=current)
        assert done.status_code == 200, done.text
        assert done.json()["status"]["certificate"]
        # Without update on the subresource itself the request never gets that far (RBAC's own 403).
        assert http.delete(f"{rbac}/clusterrolebindings/bob-csr-updater").status_code == 200

        def revoked() -> bool:
            # A revocation reaches the authorizer's watch-fed index a moment later, as Kubernetes' RBAC informers'
            # does (only a denial waits for the index to catch up): wait until bob's own review says so.
            review = bob.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json={
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"group": "certificates.k8s.io", "resource": "certificatesigningrequests",
                                                "subresource": "approval", "verb": "update", "name": "for-bob-2"}}})
            assert review.status_code == 201, review.text
            return not review.json()["status"]["allowed"]

        wait_for(revoked, "the removed binding out of the authorizer's index", 30)
        other = http.post(BASE, json=_csr("for-bob-2", _ec_request("dave", "dev")))
        assert other.status_code == 201
        body = other.json()
        body["status"] = {"conditions": [{"type": "Approved", "status": "True"}]}
        refused = bob.put(f"{BASE}/for-bob-2/approval", json=body)
        assert refused.status_code == 403 and "certificatesigningrequests/approval" in refused.json()["message"]


def test_the_approval_subresource_changes_only_the_conditions(http: httpx.Client) -> None:
    """CSR1: spec, labels and status.certificate sent to /approval are ignored; only the conditions are taken,
    given lastUpdateTime and lastTransitionTime when the writer left them out."""
    created = http.post(BASE, json=_csr("only-conditions", _ec_request("erin", "dev"))).json()
    body = json.loads(json.dumps(created))
    body["metadata"]["labels"] = {"x": "y"}
    body["spec"]["signerName"] = "example.com/other"
    body["spec"]["usages"] = ["server auth"]
    body["spec"]["username"] = "system:admin"
    body["status"] = {"certificate": base64.b64encode(b"not a certificate").decode(),
                      "conditions": [{"type": "Denied", "status": "True", "reason": "Nope", "message": "no"}]}
    done = http.put(f"{BASE}/only-conditions/approval", json=body)
    assert done.status_code == 200, done.text
    stored = http.get(f"{BASE}/only-conditions").json()
    assert stored["spec"] == created["spec"]
    assert "labels" not in stored["metadata"]
    assert "certificate" not in stored["status"]
    [denied] = stored["status"]["conditions"]
    assert denied["type"] == "Denied" and denied["lastUpdateTime"] and denied["lastTransitionTime"]
    managers = {(m["manager"], m.get("subresource")) for m in stored["metadata"].get("managedFields") or []}
    assert any(sub == "approval" for _, sub in managers), managers
    # A stale resourceVersion is a conflict, as for any update.
    body["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    assert http.put(f"{BASE}/only-conditions/approval", json=body).status_code == 409


def test_the_status_subresource_cannot_approve_or_deny(http: httpx.Client) -> None:
    """CSR5: an Approved or Denied condition written through /status is dropped, and a stored one stays:
    only /approval, with its `approve` check, decides. Nothing is signed."""
    created = http.post(BASE, json=_csr("status-approve", _ec_request("frank", "dev"))).json()
    body = json.loads(json.dumps(created))
    body["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "ByStatus", "message": "m"},
                                     {"type": "Failed", "status": "True", "reason": "Other", "message": "m"}]}
    done = http.put(f"{BASE}/status-approve/status", json=body)
    assert done.status_code == 200, done.text
    stored = http.get(f"{BASE}/status-approve").json()
    assert [c["type"] for c in stored["status"]["conditions"]] == ["Failed"]
    assert "certificate" not in stored["status"]

    denied = http.get(f"{BASE}/status-approve").json()
    denied["status"]["conditions"].append({"type": "Denied", "status": "True", "reason": "No", "message": "no"})
    assert http.put(f"{BASE}/status-approve/approval", json=denied).status_code == 200
    cleared = http.get(f"{BASE}/status-approve").json()
    cleared["status"]["conditions"] = []
    assert http.put(f"{BASE}/status-approve/status", json=cleared).status_code == 200
    # Failed is an ordinary status condition here (this write removed it); Denied stays.
    assert [c["type"] for c in http.get(f"{BASE}/status-approve").json()["status"]["conditions"]] == ["Denied"]


def test_a_request_whose_usages_do_not_fit_the_signer_fails(module_server: RunningServer, http: httpx.Client,
                                                             tmp_path: Path) -> None:
    """CSR4: approved, but server auth is no client usage: a Failed condition, no certificate; a request longer
    than a year gets a year."""
    request = _ec_request("frank", "dev")
    assert http.post(BASE, json=_csr("wrong-usage", request, ["client auth", "server auth"])).status_code == 201
    _kubectl(module_server.kubeconfig, tmp_path, "certificate", "approve", "wrong-usage")
    stored = http.get(f"{BASE}/wrong-usage").json()
    failed = [c for c in stored["status"]["conditions"] if c["type"] == "Failed"]
    assert failed and failed[0]["reason"] == "SignerValidationFailure"
    assert failed[0]["message"] == "invalid usage for client certificate: server auth"
    assert "certificate" not in stored["status"]
    assert _row(module_server, tmp_path, "wrong-usage")[-1] == "Approved,Failed"

    assert http.post(BASE, json=_csr("long", _ec_request("gina", "dev"), seconds=5 * 365 * 86400)).status_code == 201
    _kubectl(module_server.kubeconfig, tmp_path, "certificate", "approve", "long")
    cert = x509.load_pem_x509_certificate(base64.b64decode(http.get(f"{BASE}/long").json()["status"]["certificate"]))
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=364) < lifetime <= datetime.timedelta(days=365)


@pytest.mark.parametrize("seconds,shown", [(600, "10m"), (86400, "24h"), (7 * 86400, "7d")])
def test_kubectl_prints_the_requested_duration_as_kubernetes_does(module_server: RunningServer, http: httpx.Client,
                                                                  tmp_path: Path, seconds: int, shown: str) -> None:
    """CSR4: REQUESTEDDURATION is a human duration."""
    name = f"duration-{seconds}"
    assert http.post(BASE, json=_csr(name, _ec_request("h", "dev"), seconds=seconds)).status_code == 201
    assert _row(module_server, tmp_path, name)[-2:] == [shown, "Pending"]


def _node_csr(name: str, request: bytes, signer: str, usages: list[str]) -> dict[str, Any]:
    return {**_csr(name, request, usages), "spec": {**_csr(name, request, usages)["spec"], "signerName": signer}}


def test_kubectl_approve_signs_the_kubelet_signers_requests_as_kube_controller_manager_does(
        module_server: RunningServer, http: httpx.Client, tmp_path: Path) -> None:
    """CSR6: a node's client or serving request that nothing approved by itself (here the admin asked, not
    the node) is signed once approved by hand, after the csrsigning controller's checks; one that fails them
    gets a Failed condition in its words, and no certificate."""
    client_signer, serving_signer = "kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kubelet-serving"
    key, request = _openssl_request(tmp_path, "n9", "/O=system:nodes/CN=system:node:n9")
    usages = ["digital signature", "key encipherment", "client auth"]
    _kubectl(module_server.kubeconfig, tmp_path, "create", "-f", "-",
             stdin=yaml.safe_dump(_node_csr("node-n9", request, client_signer, usages)))
    assert _row(module_server, tmp_path, "node-n9")[-1] == "Pending"  # the admin is not the node: not auto-approved
    _kubectl(module_server.kubeconfig, tmp_path, "certificate", "approve", "node-n9")
    assert _row(module_server, tmp_path, "node-n9")[-1] == "Approved,Issued"
    crt = tmp_path / "n9.crt"
    crt.write_bytes(base64.b64decode(http.get(f"{BASE}/node-n9").json()["status"]["certificate"]))
    kubeconfig = _user_kubeconfig(module_server, tmp_path, "n9", key, crt)
    whoami = json.loads(_kubectl(kubeconfig, tmp_path, "auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == "system:node:n9"
    assert "system:nodes" in whoami["status"]["userInfo"]["groups"]

    # A serving request: the node's names in the certificate, for server auth only.
    server_key = ec.generate_private_key(ec.SECP256R1())
    serving = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, "system:node:n9")]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("n9.example")]), critical=False)
               .sign(server_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    assert http.post(BASE, json=_node_csr("serving-n9", serving, serving_signer,
                                          ["digital signature", "server auth"])).status_code == 201
    _kubectl(module_server.kubeconfig, tmp_path, "certificate", "approve", "serving-n9")
    cert = x509.load_pem_x509_certificate(
        base64.b64decode(http.get(f"{BASE}/serving-n9").json()["status"]["certificate"]))
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["n9.example"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]

    # What the kubelet signers refuse, in their words.
    refused = {
        "wrong-org": (_ec_request("system:node:n9", "dev"), client_signer, usages,
                      "subject organization is not system:nodes"),
        "wrong-cn": (_ec_request("n9", "system:nodes"), client_signer, usages,
                     "subject common name does not begin with 'system:node:'"),
        "wrong-usages": (_ec_request("system:node:n9", "system:nodes"), client_signer, ["client auth"],
                         "usages did not match [client auth digital signature key encipherment]"),
        "no-names": (_ec_request("system:node:n9", "system:nodes"), serving_signer,
                     ["digital signature", "server auth"], "DNS or IP subjectAltName is required"),
    }
    for name, (req, signer, wanted, message) in refused.items():
        assert http.post(BASE, json=_node_csr(name, req, signer, wanted)).status_code == 201
        _kubectl(module_server.kubeconfig, tmp_path, "certificate", "approve", name)
        stored = http.get(f"{BASE}/{name}").json()
        failed = [c for c in stored["status"]["conditions"] if c["type"] == "Failed"]
        assert failed and (failed[0]["reason"], failed[0]["message"]) == ("SignerValidationFailure", message), name
        assert "certificate" not in stored["status"]
