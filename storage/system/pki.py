"""X.509 for the cluster: a CA, serving and client certificates, CSRs, and TLS contexts built from PEM.

Shared by the API server (serving, client-certificate authentication, signing
CSRs), the node agent (its own serving and client certificates) and the
clients. Identities follow Kubernetes: a client certificate's CN is the user
name and its O entries are the groups.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
_CLOCK_SKEW = datetime.timedelta(minutes=5)  # a peer whose clock runs a little behind still accepts a new cert


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("only EC private keys are supported")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically (a reader never sees half a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_ca(common_name: str = "stowage-ca") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_key()
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san_entries(sans: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in sans:
        value = raw.strip().strip("[]")
        if not value or value in seen:
            continue
        seen.add(value)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            out.append(x509.DNSName(value))
    return out


def sign(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    organizations: Iterable[str] = (),
    *,
    server: bool = False,
    client: bool = False,
    sans: Iterable[str] = (),
    days: int = LEAF_DAYS,
    lifetime: datetime.timedelta | None = None,
) -> x509.Certificate:
    """A leaf certificate for ``public_key``; ``server`` and ``client`` choose its extended key usage.
    ``lifetime``, when given, is how long it is valid from now (instead of ``days``)."""
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    if not usages:
        raise ValueError("a certificate must be for a server, a client or both")
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations)).issuer_name(ca_cert.subject)
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + (lifetime if lifetime is not None else datetime.timedelta(days=days)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    entries = _san_entries(sans)
    if entries:
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def new_csr(key: ec.EllipticCurvePrivateKey, common_name: str, organizations: Iterable[str] = (),
            sans: Iterable[str] = ()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name, organizations))
    entries = _san_entries(sans)
    if entries:
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CsrInfo:
    common_name: str
    organizations: tuple[str, ...]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    public_key: ec.EllipticCurvePublicKey  # or, with ``any_key``, an RSA or Ed25519 one
    # SANs no signer here puts in a certificate: the kubelet signers refuse a request that has them.
    emails: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()


def parse_csr(pem: bytes, *, any_key: bool = False) -> CsrInfo:
    """The request's subject and SANs; ValueError when it is malformed, badly signed or not an EC P-256 key.

    ``any_key``: also RSA (2048 bits or more), the other NIST curves and Ed25519, the keys Kubernetes' signers
    take (a user following Kubernetes' documentation makes an RSA key with openssl)."""
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise ValueError("not a PEM-encoded certificate request") from None
    if not csr.is_signature_valid:
        raise ValueError("the request's signature does not match its public key")
    key = csr.public_key()
    if any_key and isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("the request's RSA key must be at least 2048 bits")
    elif any_key and (isinstance(key, ed25519.Ed25519PublicKey) or (
            isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1", "secp521r1"))):
        pass
    elif not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("the request's key must be an ECDSA P-256 key")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = tuple(str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(i) for i in san.get_values_for_type(x509.IPAddress))
        emails = tuple(san.get_values_for_type(x509.RFC822Name))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        pass
    return CsrInfo(str(cns[0].value) if cns else "", orgs, dns, ips, key, emails, uris)


def identity(cert: x509.Certificate) -> tuple[str, tuple[str, ...]]:
    """(user, groups) a client certificate stands for: CN and O, as Kubernetes reads them."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return (str(cns[0].value) if cns else ""), orgs


def is_client_cert(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no EKU restriction: usable for any purpose, as X.509 says
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def expires_at(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after_utc


def cert_sans(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName)) | {str(i) for i in san.get_values_for_type(x509.IPAddress)}


def client_context(ca_pem: bytes | None, cert_pem_data: bytes | None = None, key_pem_data: bytes | None = None,
                   *, insecure: bool = False) -> ssl.SSLContext:
    """A TLS client context that trusts ``ca_pem`` (else the system roots) and presents an optional client cert."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_pem:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_pem_data and key_pem_data:
        load_chain_from_memory(ctx, cert_pem_data, key_pem_data)
    return ctx


def load_chain_from_memory(ctx: ssl.SSLContext, cert_pem_data: bytes, key_pem_data: bytes) -> None:
    """``load_cert_chain`` takes only paths: stage the PEM in a private temp dir that is removed at once."""
    with tempfile.TemporaryDirectory(prefix="stowage-tls-") as tmp:
        cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        write_private(cert_path, cert_pem_data)
        write_private(key_path, key_pem_data)
        ctx.load_cert_chain(cert_path, key_path)
