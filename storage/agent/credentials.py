"""The node agent's own credentials, obtained as the kubelet obtains them (TLS bootstrapping).

With a bootstrap kubeconfig (a bootstrap token, group ``system:bootstrappers``)
the agent sends a CertificateSigningRequest for ``CN=system:node:<name>,
O=system:nodes`` (signer ``kubernetes.io/kube-apiserver-client-kubelet``),
waits for the signed certificate and writes its own kubeconfig with the
certificate and key embedded. As that node identity it then requests its
serving certificate (signer ``kubernetes.io/kubelet-serving``) for the names
the control plane reaches it by. Both are reused on restart while valid.
"""
from __future__ import annotations

import base64
import datetime
import secrets
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import structlog

from storage.client import Client
from storage.client.kubeconfig import ClusterAccess, load_access, write_kubeconfig
from storage.errors import StowageError
from storage.system import pki

log = structlog.get_logger(__name__)

NODE_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
NODE_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
NODES_GROUP = "system:nodes"
CA_FILE, SERVING_CERT, SERVING_KEY, KUBECONFIG = "ca.crt", "agent-serving.crt", "agent-serving.key", "kubeconfig"
_RENEW_BEFORE = datetime.timedelta(days=30)
CSR_WAIT_SECONDS = 600.0


@dataclass(frozen=True)
class AgentTLS:
    """The agent's HTTPS: its serving certificate and the CA its callers' client certificates must chain to."""

    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True)
class NodeCredentials:
    access: ClusterAccess  # the node's own identity towards the API server
    kubeconfig: Path
    tls: AgentTLS


def node_user(node_name: str) -> str:
    return f"system:node:{node_name}"


def _fresh(cert_pem: bytes | None, common_name: str, sans: tuple[str, ...] = ()) -> bool:
    if not cert_pem:
        return False
    try:
        cert = pki.load_cert(cert_pem)
    except ValueError:
        return False
    if pki.identity(cert)[0] != common_name:
        return False
    if pki.expires_at(cert) - datetime.datetime.now(datetime.timezone.utc) < _RENEW_BEFORE:
        return False
    return set(sans) <= pki.cert_sans(cert)


def _request_certificate(client: Client, key: Any, node_name: str, signer: str, usages: list[str],
                         sans: tuple[str, ...] = ()) -> bytes:
    """Create a CSR and wait (event-driven: a watch) until it is signed; StowageError when denied or failed."""
    request = pki.new_csr(key, node_user(node_name), (NODES_GROUP,), sans)
    name = f"node-csr-{node_name[:200]}-{secrets.token_hex(4)}"
    created = client.create({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64.b64encode(request).decode("ascii"), "signerName": signer, "usages": usages},
    })
    csr = created
    if not _signed(csr):
        rv = (created.get("metadata") or {}).get("resourceVersion")
        for event in client.watch("certificatesigningrequests", resource_version=rv, timeout=CSR_WAIT_SECONDS,
                                  field_selector=f"metadata.name={name}"):
            csr = event.get("object") or {}
            if _signed(csr):
                break
    certificate = (csr.get("status") or {}).get("certificate")
    if not certificate:
        raise StowageError(f"certificate signing request {name} was not signed within {CSR_WAIT_SECONDS:.0f}s "
                           f"(approve it, or check the signer {signer})")
    return base64.b64decode(certificate)


def _signed(csr: dict[str, Any]) -> bool:
    status = csr.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("Denied", "Failed") and cond.get("status") == "True":
            raise StowageError(f"certificate signing request {(csr.get('metadata') or {}).get('name')} was "
                               f"{cond['type'].lower()}: {cond.get('message') or cond.get('reason') or ''}")
    return bool(status.get("certificate"))


def serving_names(address: str) -> tuple[str, ...]:
    names = [address, socket.gethostname()]
    if address in ("127.0.0.1", "::1", "0.0.0.0", "::"):
        names += ["127.0.0.1", "localhost"]
    return tuple(dict.fromkeys(n for n in names if n not in ("0.0.0.0", "::")))


def node_credentials(
    node_name: str,
    cert_dir: Path,
    address: str,
    bootstrap: Callable[[], ClusterAccess] | None,
    kubeconfig: Path | None = None,
    server: str | None = None,
) -> NodeCredentials:
    """The node's client identity and serving certificate in ``cert_dir``, bootstrapped when missing or stale.

    ``bootstrap`` gives the bootstrap credentials (read only when they are needed); the node's own kubeconfig
    is ``kubeconfig`` (default ``cert_dir/kubeconfig``). ``server`` overrides the API server URL saved there
    (``stowage up`` on port 0 listens somewhere new each start)."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    cert_dir.chmod(0o700)
    own = kubeconfig or cert_dir / KUBECONFIG
    access: ClusterAccess | None = None
    if own.exists():
        try:
            access = load_access(own)
        except (OSError, ValueError):
            access = None
        if access is not None and not _fresh(access.cert_data, node_user(node_name)):
            access = None
        if access is not None and server and access.server != server:
            access = replace(access, server=server)
    if access is None:
        if bootstrap is None:
            raise StowageError(f"the agent has no valid credentials in {own} and no bootstrap kubeconfig "
                               "(--bootstrap-kubeconfig; mint one with `stowage token create`)")
        boot = bootstrap()
        key = pki.new_key()
        with Client.from_access(boot) as client:
            cert = _request_certificate(client, key, node_name, NODE_CLIENT_SIGNER,
                                        ["digital signature", "client auth"])
        write_kubeconfig(own, boot.server, None, f"system:node:{node_name}", ca_data=boot.ca_data,
                         client_cert=cert, client_key=pki.key_pem(key), servers=boot.servers)
        access = load_access(own)
        log.info("node client certificate issued", node=node_name, kubeconfig=str(own))
    ca_file = cert_dir / CA_FILE
    if access.ca_data:
        pki.write_private(ca_file, access.ca_data)
    names = serving_names(address)
    cert_path, key_path = cert_dir / SERVING_CERT, cert_dir / SERVING_KEY
    current = cert_path.read_bytes() if cert_path.exists() and key_path.exists() else None
    if not _fresh(current, node_user(node_name), names):
        key = pki.new_key()
        with Client.from_access(access) as client:
            cert = _request_certificate(client, key, node_name, NODE_SERVING_SIGNER,
                                        ["digital signature", "server auth"], names)
        pki.write_private(key_path, pki.key_pem(key))
        pki.write_private(cert_path, cert)
        log.info("node serving certificate issued", node=node_name, names=list(names))
    return NodeCredentials(access, own, AgentTLS(cert_path, key_path, ca_file))
