"""Real `stowage serve` replicas on one PostgreSQL schema, for the HA tests and benchmarks/failover.py."""
from __future__ import annotations

import os
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from support import UpProcess

from storage.client.kubeconfig import load_access

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/stowage-controller-manager"
# The failover settings the tests and the benchmark use: a dead leader's Lease expires after 3 s,
# candidates look every 0.5 s (Kubernetes' defaults are 15 s / 10 s / 2 s).
FAST_ELECTION = ("--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s",
                 "--leader-elect-retry-period", "500ms")


def fresh_pg_schema(postgres_url: str) -> tuple[str, str]:
    import psycopg

    schema = "ha_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{postgres_url}?options=-csearch_path%3D{schema}"


def drop_pg_schema(postgres_url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class Replica:
    """One `stowage serve` process that logged "stowage is ready"."""

    def __init__(self, name: str, up: UpProcess, ready: dict[str, Any]) -> None:
        self.name = name
        self.up = up
        self.url = str(ready["server"])
        self.kubeconfig = str(ready["kubeconfig"])
        self.access = load_access(self.kubeconfig)

    def http(self, access: Any = None, timeout: float = 30) -> httpx.Client:
        """A client of this replica with ``access``'s credentials and CA (default: its own)."""
        access = access or self.access
        verify = ssl.create_default_context(cadata=access.ca_data.decode())
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {access.token}"},
                            timeout=timeout, verify=verify)

    @property
    def alive(self) -> bool:
        return self.up.proc.poll() is None

    def kill(self) -> None:
        self.up.kill()


class ReplicaSet:
    """Replicas of one cluster: same store, same EncryptionConfiguration, a data dir each."""

    def __init__(self, root: Path, store_url: str, env: dict[str, str]) -> None:
        from storage.store.encryption import ensure_config

        self.root = root
        self.store_url = store_url
        self.env = env
        self.encryption = ensure_config(root)
        self.replicas: list[Replica] = []
        self._procs: list[UpProcess] = []

    def start(self, name: str, *extra: str, env: dict[str, str] | None = None, wait: bool = True) -> Replica | UpProcess:
        merged = dict(self.env)
        merged["STOWAGE_LEADER_IDENTITY"] = name
        merged.update(env or {})
        up = UpProcess("serve", ["--data-dir", str(self.root / name), "--listen", "127.0.0.1:0",
                                 "--store", self.store_url, "--encryption-provider-config", str(self.encryption),
                                 *FAST_ELECTION, *extra], merged)
        self._procs.append(up)
        if not wait:
            return up
        replica = Replica(name, up, up.wait_for("stowage is ready"))
        self.replicas.append(replica)
        return replica

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    def lease(self) -> dict[str, Any]:
        """The controller manager's Lease, read through a live replica."""
        last: Exception | None = None
        for replica in self.live():
            try:
                with replica.http(timeout=5) as http:
                    response = http.get(LEASE_PATH)
                if response.status_code == 404:
                    return {}
                response.raise_for_status()
                return response.json()
            except httpx.HTTPError as exc:
                last = exc
        raise AssertionError(f"no live replica answered: {last}")

    def holder(self) -> str:
        return str((self.lease().get("spec") or {}).get("holderIdentity") or "")

    def leader(self, timeout: float = 30) -> Replica:
        names = {r.name: r for r in self.live()}
        found = wait_until(lambda: names.get(self.holder()), timeout, "a live replica to hold the Lease")
        return found

    def stop_all(self) -> None:
        for up in self._procs:
            up.kill()


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def serve_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env["HOME"] = str(home)
    env.update(extra)
    return env
