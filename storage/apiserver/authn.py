"""Who a request is: client certificate, then bearer token (token file, bootstrap token, service-account JWT).

As kube-apiserver: a verified client certificate's CN is the user and its O
entries the groups; every authenticated user also gets ``system:authenticated``.
A failure is one plain 401 whatever the reason; the reason goes to the log
without the credential.
"""
from __future__ import annotations

import base64
import hmac
import re
import time
from typing import Any

import structlog

from storage.api.timestamps import parse_time
from storage.apiserver.auth import ADMIN_GROUPS, ADMIN_USER, TokenAuth, User
from storage.apiserver.satokens import ServiceAccountTokens, TokenInvalid, looks_like_jwt
from storage.errors import NotFound, Unauthorized
from storage.system import pki

log = structlog.get_logger(__name__)

AUTHENTICATED = "system:authenticated"
BOOTSTRAPPERS = "system:bootstrappers"
BOOTSTRAP_SECRET_TYPE = "bootstrap.kubernetes.io/token"
BOOTSTRAP_NAMESPACE = "kube-system"
BOOTSTRAP_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_CERT_CACHE_LIMIT = 1024


def with_authenticated(user: User) -> User:
    if AUTHENTICATED in user.groups:
        return user
    return User(user.name, user.uid, (*user.groups, AUTHENTICATED))


class Authenticator:
    """The API server's authentication chain. ``tokens`` is the token file; ``store`` backs bootstrap tokens and
    service-account tokens (both are checked against live objects on every request)."""

    def __init__(self, tokens: TokenAuth, store: Any = None, sa_tokens: ServiceAccountTokens | None = None) -> None:
        self.tokens = tokens
        self.store = store
        self.sa_tokens = sa_tokens
        self._certs: dict[str, User] = {}

    @property
    def enabled(self) -> bool:
        return self.tokens.enabled

    def authenticate(self, authorization: str | None, peer_cert: str | None = None) -> User:
        if not self.tokens.enabled:
            return User(ADMIN_USER, groups=ADMIN_GROUPS)
        if peer_cert:
            user = self._from_cert(peer_cert)
            if user is not None:
                return user
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Unauthorized")
        match = BOOTSTRAP_TOKEN.match(token)
        if match and self.store is not None:
            return self._bootstrap(match.group(1), match.group(2))
        if self.sa_tokens is not None and self.store is not None and looks_like_jwt(token):
            try:
                ident = self.sa_tokens.validate(token, self.store)
            except TokenInvalid as exc:
                log.info("service account token refused", reason=str(exc))
                raise Unauthorized("Unauthorized") from None
            return User(ident.user, ident.uid, (*ident.groups, AUTHENTICATED))
        return with_authenticated(self.tokens.authenticate(authorization))

    def _from_cert(self, pem: str) -> User | None:
        """The TLS layer already verified the chain against the client CAs; this reads the identity."""
        cached = self._certs.get(pem)
        if cached is not None:
            return cached
        cert = pki.load_cert(pem.encode("ascii"))
        if not pki.is_client_cert(cert):
            return None
        name, groups = pki.identity(cert)
        if not name:
            return None
        user = User(name, "", (*groups, AUTHENTICATED))
        if len(self._certs) >= _CERT_CACHE_LIMIT:
            self._certs.clear()
        self._certs[pem] = user
        return user

    def _bootstrap(self, token_id: str, secret: str) -> User:
        """Kubernetes' bootstrap tokens: a Secret ``bootstrap-token-<id>`` in kube-system holds the secret part."""
        try:
            obj = self.store.get("secrets", BOOTSTRAP_NAMESPACE, f"bootstrap-token-{token_id}")
        except NotFound:
            log.info("bootstrap token refused", token_id=token_id, reason="no such token")
            raise Unauthorized("Unauthorized") from None
        data = {k: _b64(v) for k, v in (obj.get("data") or {}).items()}
        data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
        reason = ""
        if obj.get("type") != BOOTSTRAP_SECRET_TYPE:
            reason = "secret has the wrong type"
        elif (obj.get("metadata") or {}).get("deletionTimestamp"):
            reason = "token is being deleted"
        elif data.get("token-id") != token_id:
            reason = "token-id does not match the secret's name"
        elif not hmac.compare_digest(data.get("token-secret", "").encode(), secret.encode()):
            reason = "wrong secret"
        elif data.get("usage-bootstrap-authentication") != "true":
            reason = "token is not for authentication"
        else:
            expires = parse_time(data.get("expiration")) if data.get("expiration") else None
            if expires is not None and expires.timestamp() <= time.time():
                reason = "token has expired"
        if reason:
            log.info("bootstrap token refused", token_id=token_id, reason=reason)
            raise Unauthorized("Unauthorized")
        extra = tuple(g.strip() for g in data.get("auth-extra-groups", "").split(",")
                      if g.strip().startswith("system:bootstrappers:"))
        return User(f"system:bootstrap:{token_id}", "", (BOOTSTRAPPERS, *extra, AUTHENTICATED))


def _b64(value: Any) -> str:
    try:
        return base64.b64decode(str(value)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
