"""Bootstrap tokens as Kubernetes has them: ``<id>.<secret>`` backed by Secret ``kube-system/bootstrap-token-<id>``."""
from __future__ import annotations

import base64
import secrets
import string
import time
from typing import Any

from storage.api.timestamps import from_epoch

NAMESPACE = "kube-system"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
DEFAULT_GROUP = "system:bootstrappers:stowage:default-node-token"
_ALPHABET = string.ascii_lowercase + string.digits


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_bootstrap_token(ttl_seconds: int, description: str = "", now: float | None = None) -> tuple[str, dict[str, Any]]:
    """(token, Secret) for a new bootstrap token that expires ``ttl_seconds`` from now (0: never)."""
    token_id, token_secret = _random(6), _random(16)
    data = {
        "token-id": token_id,
        "token-secret": token_secret,
        "usage-bootstrap-authentication": "true",
        "auth-extra-groups": DEFAULT_GROUP,
    }
    if ttl_seconds > 0:
        data["expiration"] = from_epoch((now if now is not None else time.time()) + ttl_seconds)
    if description:
        data["description"] = description
    secret = {
        "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": NAMESPACE},
        "data": {k: base64.b64encode(v.encode()).decode("ascii") for k, v in data.items()},
    }
    return f"{token_id}.{token_secret}", secret
