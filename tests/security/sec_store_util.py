"""Helpers for the store attack tests: a real `stowage serve` process and raw HTTP against it."""
from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import UpProcess

from storage.client.kubeconfig import load_access


class Served:
    """A `stowage serve` process that logged "stowage is ready", with an HTTP client for its API."""

    def __init__(self, up: UpProcess, ready: dict[str, Any]) -> None:
        self.up = up
        self.url = str(ready["server"])
        self.kubeconfig = str(ready["kubeconfig"])
        access = load_access(self.kubeconfig)
        verify: Any = ssl.create_default_context(cadata=access.ca_data.decode()) if access.ca_data else True
        # Generous: a request that waits on a locked database gets its answer at the busy timeout.
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {access.token}"},
                                 timeout=120, verify=verify)

    def create_configmap(self, name: str, namespace: str = "default", **data: str) -> httpx.Response:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        return self.http.post(f"/api/v1/namespaces/{namespace}/configmaps", json=body)

    def configmap_names(self, namespace: str = "default") -> list[str]:
        response = self.http.get(f"/api/v1/namespaces/{namespace}/configmaps")
        assert response.status_code == 200, response.text
        # Every namespace also holds the cluster's root CA (kube-root-ca.crt), as in Kubernetes.
        return sorted(o["metadata"]["name"] for o in response.json()["items"] if o["metadata"]["name"] != "kube-root-ca.crt")

    def close(self) -> None:
        self.http.close()


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env["HOME"] = str(tmp_path / "home")  # never the user's default data dir
    env.update(extra)
    return env


def start_serve(started: list[UpProcess], data_dir: Path, env: dict[str, str], *args: str) -> UpProcess:
    up = UpProcess("serve", ["--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *args], env)
    started.append(up)
    return up


def fresh_pg_schema(postgres_url: str) -> tuple[str, str]:
    """A new schema on the session's private PostgreSQL and a store URL whose search_path is it."""
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{postgres_url}?options=-csearch_path%3D{schema}"


def drop_pg_schema(postgres_url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def started() -> Iterator[list[UpProcess]]:
    """The `stowage serve` processes a test starts; each is killed afterwards, pass or fail."""
    procs: list[UpProcess] = []
    yield procs
    for up in procs:
        up.kill()
