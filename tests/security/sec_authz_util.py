"""An API server with token-file users beside the admin, for the authorization tests (a unique module name)."""
from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from storage.apiserver.auth import TOKEN_FILE, User, append_token, ensure_admin_token
from storage.apiserver.server import RunningServer, start_in_thread
from storage.client import Client
from storage.store import open_store

Obj = dict[str, Any]
RBAC = "rbac.authorization.k8s.io"


@dataclass
class AuthzServer:
    server: RunningServer
    tokens: dict[str, str] = field(default_factory=dict)  # user name -> token

    @property
    def url(self) -> str:
        return self.server.url

    def admin(self) -> Client:
        return self.server.client()

    def client(self, user: str) -> Client:
        return Client(self.server.url, self.tokens[user], ca_data=self.server.ca_pem)

    def http(self, user: str | None, method: str, path: str, *, headers: Any = None, **kwargs: Any) -> httpx.Response:
        """A raw request as ``user`` ("admin", a token-file user, or None for no credentials)."""
        sent = httpx.Headers(headers or {})
        if user:
            sent["Authorization"] = f"Bearer {self.tokens[user] if user != 'admin' else self.server.token}"
        return httpx.request(method, self.server.url + path, headers=sent, timeout=30, **kwargs, verify=self.server.verify())


@contextlib.contextmanager
def authz_server(tmp_path: Path, users: dict[str, tuple[str, ...]]) -> Iterator[AuthzServer]:
    """``users``: name -> groups, each written to the token file with a random token before the server starts."""
    data_dir = Path(tmp_path) / "apiserver"
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_admin_token(data_dir)
    tokens: dict[str, str] = {}
    for name, groups in users.items():
        token = secrets.token_urlsafe(24)
        append_token(data_dir / TOKEN_FILE, token, User(name, f"uid-{name}", tuple(groups)))
        tokens[name] = token
    store = open_store(str(data_dir / "stowage.db"))
    try:
        server = start_in_thread(store, host="127.0.0.1", port=0, data_dir=data_dir, kubeconfig=data_dir / "kubeconfig")
        try:
            yield AuthzServer(server, tokens)
        finally:
            server.stop()
    finally:
        store.close()


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def secret(name: str, ns: str, value: str = "c2VjcmV0") -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "data": {"key": value}}


def config_map(name: str, ns: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": {"k": "v"}}


def role_binding(name: str, ns: str, role: str, *, user: str | None = None, group: str | None = None,
                 kind: str = "ClusterRole", sa: tuple[str, str] | None = None) -> Obj:
    subjects: list[Obj] = []
    if user:
        subjects.append({"kind": "User", "apiGroup": RBAC, "name": user})
    if group:
        subjects.append({"kind": "Group", "apiGroup": RBAC, "name": group})
    if sa:
        subjects.append({"kind": "ServiceAccount", "namespace": sa[0], "name": sa[1]})
    return {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": RBAC, "kind": kind, "name": role}, "subjects": subjects}


def cluster_role(name: str, rules: list[Obj], labels: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": name, "labels": labels or {}},
            "rules": rules}


def pod(name: str, ns: str, node: str = "", **spec: Any) -> Obj:
    body: Obj = {"containers": [{"name": "c", "image": "busybox"}], **spec}
    if node:
        body["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": body}


def until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    from support import wait_for

    return wait_for(predicate, what, timeout)
