"""The cluster's PKI in the data dir, and HTTPS for the API server.

``<data-dir>/pki`` holds the cluster CA (signs serving certificates, users'
and nodes' client certificates), the API server's serving certificate and
the client certificate the API server presents to node agents (as
kube-apiserver's ``--kubelet-client-certificate``). Every key file is 0600.
A serving certificate that lacks a wanted name or is close to expiry is
issued again on start, so an old data dir is upgraded in place.
"""
from __future__ import annotations

import datetime
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import structlog
from cryptography import x509

from storage.system import pki

log = structlog.get_logger(__name__)

PKI_DIR = "pki"
CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVING_CERT, SERVING_KEY = "apiserver.crt", "apiserver.key"
AGENT_CLIENT_CERT, AGENT_CLIENT_KEY = "apiserver-agent-client.crt", "apiserver-agent-client.key"
# The API server's identity towards node agents: an administrator, as Kubernetes' kubelet client is.
AGENT_CLIENT_USER = "system:apiserver-agent-client"
AGENT_CLIENT_GROUPS = ("system:masters",)
_RENEW_BEFORE = datetime.timedelta(days=30)


def default_sans(listen_host: str, extra: Iterable[str] = ()) -> list[str]:
    names = ["127.0.0.1", "::1", "localhost", socket.gethostname()]
    if listen_host not in ("", "0.0.0.0", "::"):
        names.append(listen_host)
    else:
        # Listening everywhere: the host's own addresses are names clients will use.
        try:
            names += sorted({str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)})
        except OSError:
            pass
    return [*names, *extra]


@dataclass
class ClusterPKI:
    """The CA and the certificates derived from it, loaded from (and created in) ``<data-dir>/pki``."""

    directory: Path
    ca_cert: x509.Certificate
    _ca_key: Any = field(repr=False)

    @property
    def ca_pem(self) -> bytes:
        return pki.cert_pem(self.ca_cert)

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_CERT

    def issue_client(self, user: str, groups: Iterable[str] = (), days: int = pki.LEAF_DAYS) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) of a new client certificate for ``user`` in ``groups``."""
        key = pki.new_key()
        cert = pki.sign(self.ca_cert, self._ca_key, key.public_key(), user, tuple(groups), client=True, days=days)
        return pki.cert_pem(cert), pki.key_pem(key)

    def issue_serving(self, name: str, sans: Iterable[str], days: int = pki.LEAF_DAYS) -> tuple[bytes, bytes]:
        key = pki.new_key()
        cert = pki.sign(self.ca_cert, self._ca_key, key.public_key(), name, server=True, sans=sans, days=days)
        return pki.cert_pem(cert), pki.key_pem(key)

    def sign_csr(self, info: pki.CsrInfo, *, client: bool, server: bool, days: int,
                 lifetime: datetime.timedelta | None = None) -> bytes:
        cert = pki.sign(self.ca_cert, self._ca_key, info.public_key, info.common_name, info.organizations,
                        client=client, server=server, sans=(*info.dns_names, *info.ip_addresses), days=days,
                        lifetime=lifetime)
        return pki.cert_pem(cert)

    def agent_client_context(self) -> ssl.SSLContext:
        """How the control plane calls node agents: trusting the CA, presenting its agent-client certificate."""
        cert_path, key_path = self.directory / AGENT_CLIENT_CERT, self.directory / AGENT_CLIENT_KEY
        if not _valid_for(cert_path, ()):
            cert, key = self.issue_client(AGENT_CLIENT_USER, AGENT_CLIENT_GROUPS)
            pki.write_private(key_path, key)
            pki.write_private(cert_path, cert)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        ctx.load_cert_chain(cert_path, key_path)
        return ctx


def load_or_create_pki(data_dir: Path) -> ClusterPKI:
    directory = Path(data_dir) / PKI_DIR
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if cert_path.exists() and key_path.exists():
        return ClusterPKI(directory, pki.load_cert(cert_path.read_bytes()), pki.load_key(key_path.read_bytes()))
    cert, key = pki.new_ca()
    pki.write_private(key_path, pki.key_pem(key))
    pki.write_private(cert_path, pki.cert_pem(cert))
    log.info("cluster CA created", path=str(cert_path))
    return ClusterPKI(directory, cert, key)


def _valid_for(cert_path: Path, sans: Iterable[str]) -> bool:
    if not cert_path.exists():
        return False
    try:
        cert = pki.load_cert(cert_path.read_bytes())
    except ValueError:
        return False
    if pki.expires_at(cert) - datetime.datetime.now(datetime.timezone.utc) < _RENEW_BEFORE:
        return False
    wanted = {s.strip().strip("[]") for s in sans if s.strip()}
    return wanted <= pki.cert_sans(cert)


@dataclass(frozen=True)
class ServerTLS:
    """What uvicorn needs to serve HTTPS and what a kubeconfig needs to trust it."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path  # client certificates signed by these CAs authenticate
    trust_pem: bytes  # the CA a client must trust for the serving certificate (kubeconfig certificate-authority-data)
    pki: ClusterPKI

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.client_ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        # Optional: bearer tokens need no certificate; a certificate that is sent must verify.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx


def prepare_server_tls(
    data_dir: Path,
    sans: Iterable[str],
    *,
    cert_file: str | None = None,
    key_file: str | None = None,
    client_ca_file: str | None = None,
) -> ServerTLS:
    """The cluster PKI plus the serving certificate: the user's own (``cert_file``/``key_file``) or one
    issued by the cluster CA for ``sans``, renewed when a name is missing or expiry is near."""
    cluster = load_or_create_pki(data_dir)
    if bool(cert_file) != bool(key_file):
        raise ValueError("--tls-cert-file and --tls-private-key-file must be given together")
    if cert_file and key_file:
        serving_cert, serving_key = Path(cert_file), Path(key_file)
        chain = serving_cert.read_bytes()
        trust = chain
    else:
        serving_cert, serving_key = cluster.directory / SERVING_CERT, cluster.directory / SERVING_KEY
        wanted = list(sans)
        if not _valid_for(serving_cert, wanted):
            cert, key = cluster.issue_serving("stowage-apiserver", wanted)
            pki.write_private(serving_key, key)
            pki.write_private(serving_cert, cert)
            log.info("serving certificate issued", names=sorted({s.strip("[]") for s in wanted}))
        trust = cluster.ca_pem
    client_ca = cluster.ca_file
    if client_ca_file:
        bundle = cluster.directory / "client-ca-bundle.crt"
        pki.write_private(bundle, cluster.ca_pem + b"\n" + Path(client_ca_file).read_bytes())
        client_ca = bundle
    return ServerTLS(serving_cert, serving_key, client_ca, trust, cluster)


@dataclass(frozen=True)
class TLSOptions:
    """The command line's TLS choices (``--tls-san``, ``--tls-cert-file``, ...)."""

    extra_sans: tuple[str, ...] = ()
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    insecure_http: bool = False  # serve plain HTTP: tokens cross the network in clear

    def prepare(self, data_dir: Path, listen_host: str) -> ServerTLS:
        return prepare_server_tls(data_dir, default_sans(listen_host, self.extra_sans), cert_file=self.cert_file,
                                  key_file=self.key_file, client_ca_file=self.client_ca_file)
