"""The cluster-wide credentials every API server replica must share (SEMANTICS HA7).

One ``stowage serve`` keeps the admin token, the cluster CA (certificate and
key) and the service-account signing key as files in its data dir. Replicas on
one shared store have data dirs of their own (each is locked by its process),
so these files are kept in the store too, as the Secret
``kube-system/stowage-cluster-credentials``: a Secret, so it is encrypted at rest
with the replicas' (shared) EncryptionConfiguration and readable through the
API by cluster administrators only. The first replica to start puts its files
there; every later one writes the stored ones over its own, so all replicas
accept the same tokens, serve certificates of the same CA and sign and verify
the same service-account tokens. A replica whose serving certificate came from
another CA gets a new one (the old data dir of a single server upgrades in place).
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import structlog

from storage.apiserver.auth import TOKEN_FILE, ensure_admin_token
from storage.apiserver.satokens import SA_KEY, ServiceAccountTokens
from storage.apiserver.tls import (
    AGENT_CLIENT_CERT,
    AGENT_CLIENT_KEY,
    CA_CERT,
    CA_KEY,
    PKI_DIR,
    SERVING_CERT,
    SERVING_KEY,
    load_or_create_pki,
)
from storage.errors import AlreadyExists, NotFound
from storage.store.encryption import DecryptionError
from storage.system import pki

log = structlog.get_logger(__name__)

NAMESPACE = "kube-system"
NAME = "stowage-cluster-credentials"
SECRET_TYPE = "stowage.io/cluster-credentials"
# Secret data key -> path in the data dir.
FILES = {
    "tokens.csv": TOKEN_FILE,
    "ca.crt": f"{PKI_DIR}/{CA_CERT}",
    "ca.key": f"{PKI_DIR}/{CA_KEY}",
    "sa.key": f"{PKI_DIR}/{SA_KEY}",
}
# Issued from the CA by each replica: stale once the CA is replaced.
_DERIVED = (SERVING_CERT, SERVING_KEY, AGENT_CLIENT_CERT, AGENT_CLIENT_KEY)


class CredentialsUnreadable(ValueError):
    """The stored credentials cannot be decrypted: the replicas' encryption configurations differ."""


def _local_files(data_dir: Path) -> dict[str, bytes]:
    ensure_admin_token(data_dir)
    load_or_create_pki(data_dir)
    ServiceAccountTokens(data_dir / PKI_DIR)
    return {key: (data_dir / rel).read_bytes() for key, rel in FILES.items()}


def _write_files(data_dir: Path, files: dict[str, bytes]) -> bool:
    """Write the stored files over the local ones; True when anything changed."""
    changed = False
    ca_changed = False
    for key, rel in FILES.items():
        path = data_dir / rel
        content = files.get(key)
        if content is None:
            continue
        if path.exists() and path.read_bytes() == content:
            continue
        pki.write_private(path, content)
        changed = True
        ca_changed |= key in ("ca.crt", "ca.key")
    if ca_changed:
        for name in _DERIVED:
            (data_dir / PKI_DIR / name).unlink(missing_ok=True)
    return changed


def share_cluster_credentials(store: Any, data_dir: Path) -> str:
    """Make ``data_dir``'s credentials the cluster's (from the store, or put there first); returns which."""
    data_dir = Path(data_dir)
    for _attempt in range(3):
        try:
            secret = store.get("secrets", NAMESPACE, NAME)
        except NotFound:
            secret = None
        except DecryptionError:
            raise CredentialsUnreadable(
                f"the cluster credentials in the store ({NAMESPACE}/{NAME}) cannot be decrypted: start every "
                "replica with the same --encryption-provider-config") from None
        if secret is not None:
            data = secret.get("data") or {}
            files = {key: base64.b64decode(value) for key, value in data.items() if key in FILES}
            changed = _write_files(data_dir, files)
            log.info("cluster credentials taken from the store", secret=f"{NAMESPACE}/{NAME}", updated=changed)
            return "store"
        files = _local_files(data_dir)
        try:
            store.create("secrets", {
                "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
                "metadata": {"name": NAME, "namespace": NAMESPACE,
                             "annotations": {"stowage.io/description": "admin token, cluster CA and service-account "
                                                                        "signing key shared by the API server replicas"}},
                "data": {key: base64.b64encode(value).decode() for key, value in files.items()},
            })
        except AlreadyExists:
            continue  # another replica started at the same moment: take its files
        log.info("cluster credentials stored for other replicas", secret=f"{NAMESPACE}/{NAME}")
        return "local"
    raise RuntimeError("cluster credentials: the Secret kept changing while starting")
