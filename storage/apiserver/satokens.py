"""Bound service-account tokens: ES256 JWTs shaped as Kubernetes issues them (TokenRequest API).

A token names its ServiceAccount and, when bound, the Pod it was issued
for, each with its uid; it is valid only while both still exist with those
uids, before its expiry, and for the audiences it was issued for.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from storage.api.timestamps import parse_time
from storage.errors import NotFound
from storage.system import pki

SA_KEY = "sa.key"
ISSUER = "https://kubernetes.default.svc"
# The API server's own audience, as kube-apiserver's --api-audiences defaults to its issuer.
API_AUDIENCE = ISSUER
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600  # Kubernetes' lower bound on expirationSeconds
MAX_EXPIRATION = 48 * 3600
SA_USER_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class TokenIdentity:
    user: str
    uid: str
    groups: tuple[str, ...]
    extra: dict[str, list[str]]


class TokenInvalid(Exception):
    """Why a token is not accepted: for the server log's reason field only, never for the client."""


class ServiceAccountTokens:
    def __init__(self, pki_dir: Path) -> None:
        path = Path(pki_dir) / SA_KEY
        if not path.exists():
            pki.write_private(path, pki.key_pem(pki.new_key()))
        self._key = pki.load_key(path.read_bytes())
        self._public = self._key.public_key()

    def issue(self, namespace: str, sa_name: str, sa_uid: str, *, audiences: list[str], expiration: int,
              pod: dict[str, Any] | None = None, now: float | None = None) -> tuple[str, int]:
        """(token, expiry as a Unix time)."""
        issued = int(now if now is not None else time.time())
        exp = issued + expiration
        claims: dict[str, Any] = {
            "iss": ISSUER, "sub": f"{SA_USER_PREFIX}{namespace}:{sa_name}", "aud": audiences,
            "iat": issued, "nbf": issued, "exp": exp,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": sa_name, "uid": sa_uid}},
        }
        if pod is not None:
            meta = pod.get("metadata") or {}
            claims["kubernetes.io"]["pod"] = {"name": meta.get("name", ""), "uid": meta.get("uid", "")}
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                claims["kubernetes.io"]["node"] = {"name": node}
        return jwt.encode(claims, self._key, algorithm="ES256"), exp

    def validate(self, token: str, store: Any, audience: str = API_AUDIENCE) -> TokenIdentity:
        try:
            claims = jwt.decode(token, self._public, algorithms=["ES256"], audience=audience, issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "aud"]}, leeway=0)
        except jwt.PyJWTError as exc:
            raise TokenInvalid(type(exc).__name__) from None
        k8s = claims.get("kubernetes.io") or {}
        namespace = str(k8s.get("namespace") or "")
        sa = k8s.get("serviceaccount") or {}
        name, uid = str(sa.get("name") or ""), str(sa.get("uid") or "")
        if claims.get("sub") != f"{SA_USER_PREFIX}{namespace}:{name}":
            raise TokenInvalid("subject does not match the service account")
        _check_alive(store, "serviceaccounts", namespace, name, uid)
        extra: dict[str, list[str]] = {}
        pod = k8s.get("pod")
        if pod:
            _check_alive(store, "pods", namespace, str(pod.get("name") or ""), str(pod.get("uid") or ""))
            extra["authentication.kubernetes.io/pod-name"] = [str(pod.get("name"))]
            extra["authentication.kubernetes.io/pod-uid"] = [str(pod.get("uid"))]
        groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
        return TokenIdentity(f"{SA_USER_PREFIX}{namespace}:{name}", uid, groups, extra)


def _check_alive(store: Any, resource: str, namespace: str, name: str, uid: str) -> None:
    try:
        obj = store.get(resource, namespace, name)
    except NotFound:
        raise TokenInvalid(f"the bound {resource} object no longer exists") from None
    meta = obj.get("metadata") or {}
    if meta.get("uid") != uid:
        raise TokenInvalid(f"the bound {resource} object was replaced (uid differs)")
    # As Kubernetes: a pod in its grace period keeps its token; one past its deletion time does not.
    deleting = parse_time(meta.get("deletionTimestamp")) if resource == "pods" else None
    if deleting is not None and deleting.timestamp() <= time.time():
        raise TokenInvalid("the bound pod has been deleted")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")
