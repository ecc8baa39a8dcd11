"""A real little cluster for node-agent tests (fixtures re-exported by conftest.py): API server, controllers, agents, runc, loop devices.

``cluster`` gives each test its own temporary directory holding the API
server's SQLite store, every agent's data directory and every storage pool.
On the way out (pass or fail) it stops the agents, kills every container
they created (by runc root, so only ours), unmounts everything under the
directory and detaches every loop device backed by a file under it.
"""
from __future__ import annotations

import dataclasses
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from provisioners import registry as provisioner_registry
from provisioners.local import LocalProvisioner
from storage.agent.agent import AgentConfig, NodeAgent, PoolSpec
from storage.agent.credentials import node_credentials
from storage.api.bootstrap_tokens import new_bootstrap_token
from storage.apiserver.auth import TOKEN_FILE, User, append_token
from storage.client import Client
from storage.client.kubeconfig import ClusterAccess, write_kubeconfig
from storage.controllers.base import ControllerOptions
from storage.controllers.manager import ControllerManager, run_controllers
from storage.errors import NotFound

from serverutil import running_server
from support import host_tmp_dir, need_programs, need_root, wait_for

pytestmark = pytest.mark.root

Obj = dict[str, Any]
GiB = 1 << 30
MiB = 1 << 20


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.1,
               diagnose: Callable[[], str] | None = None) -> Any:
    """``wait_for`` where an object not created yet counts as "not yet"."""
    return wait_for(predicate, what, timeout, interval=interval, retry_on=(NotFound,), diagnose=diagnose)


def random_ip_range() -> str:
    # A random /24 keeps parallel runs (and several agents) from sharing pod addresses.
    return f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"


# Agents started in-process run under their own node credential (user system:node:<name> in group
# system:nodes), so every test here also checks that the agent needs no more than node authorization allows.
NODE_NAMES = ("n1", "n2", "n3", "n4")


def _node_tokens(base: Path) -> dict[str, str]:
    data_dir = base / "apiserver"
    data_dir.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for name in NODE_NAMES:
        token = secrets.token_urlsafe(24)
        append_token(data_dir / TOKEN_FILE, token, User(f"system:node:{name}", f"node-{name}", ("system:nodes",)))
        tokens[name] = token
    return tokens


class Cluster:
    def __init__(self, base: Path, *, server_host: str = "127.0.0.1") -> None:
        """``server_host``: the API server's address (another than loopback when agents run on other hosts)."""
        self.base = base
        self.node_tokens = _node_tokens(base)
        self._server_cm = running_server(base, host=server_host)
        self.server = self._server_cm.__enter__()
        self.client: Client = self.server.client()
        self.store = self.server.store
        self.agents: dict[str, NodeAgent] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stop_controllers = threading.Event()
        self.manager: ControllerManager | None = None
        self._controllers: threading.Thread | None = None
        assert self.server.tls is not None
        # The control plane calls agents over TLS with its own client certificate, as `stowage up` does.
        self.agent_client_tls = self.server.tls.pki.agent_client_context()
        provisioner_registry.register(LocalProvisioner(nodes=self._node, tls=self.agent_client_tls))

    def _node(self, name: str) -> Obj | None:
        try:
            return self.store.get("nodes", "", name)
        except NotFound:
            return None

    # ---- components ------------------------------------------------------------------

    def start_controllers(self, options: ControllerOptions | None = None) -> ControllerManager:
        """All controllers in a thread; ``options`` shortens the node lifecycle's grace periods for a test."""
        ready = threading.Event()
        out: list[ControllerManager] = []
        self._controllers = threading.Thread(
            target=run_controllers, args=(self.store, self.stop_controllers),
            kwargs={"ready": ready, "manager_out": out, "options": options}, name="test-controllers", daemon=True)
        self._controllers.start()
        assert ready.wait(30), "controllers did not sync"
        self.manager = out[0]
        return self.manager

    def agent_dir(self, name: str) -> Path:
        return self.base / "agents" / name

    def pool_dir(self, name: str) -> Path:
        return self.base / "pools" / name

    def agent_config(self, name: str, *, pool_bytes: int = 4 * GiB, zone: str | None = None,
                     heartbeat: float = 1.0, **kwargs: Any) -> AgentConfig:
        self.pool_dir(name).mkdir(parents=True, exist_ok=True)
        return AgentConfig(node_name=name, data_dir=self.agent_dir(name),
                           pools=[PoolSpec("default", self.pool_dir(name), capacity=pool_bytes)],
                           zone=zone, heartbeat_seconds=heartbeat, backoff_base=0.5,
                           pod_ip_range=random_ip_range(), **kwargs)

    def bootstrap_access(self, ttl_seconds: int = 3600) -> ClusterAccess:
        """A new bootstrap token (as `stowage token create` makes one), as kubeconfig credentials."""
        token, secret = new_bootstrap_token(ttl_seconds, "test agent")
        self.client.create(secret)
        return ClusterAccess(self.server.url, token, ca_data=self.server.ca_pem)

    def bootstrap_kubeconfig(self, name: str) -> Path:
        access = self.bootstrap_access()
        return write_kubeconfig(self.base / f"bootstrap-{name}.kubeconfig", access.server, access.token,
                                ca_data=access.ca_data)

    def add_agent(self, name: str, *, via_port: int | None = None, **kwargs: Any) -> NodeAgent:
        """An in-process agent with its own node identity, obtained through a bootstrap token and CSRs;
        ``via_port``: it reaches the API server through that port of 127.0.0.1 (a relay)."""
        creds = node_credentials(name, self.agent_dir(name) / "pki", "127.0.0.1", self.bootstrap_access)
        config = self.agent_config(name, tls=creds.tls, **kwargs)
        access = creds.access
        if via_port is not None:
            scheme = access.server.split("://")[0]
            access = dataclasses.replace(access, server=f"{scheme}://127.0.0.1:{via_port}", servers=())
        agent = NodeAgent(Client.from_access(access), config)
        agent.start()
        self.agents[name] = agent
        return agent

    def stop_agent(self, name: str) -> None:
        agent = self.agents.pop(name, None)
        if agent is not None:
            agent.stop()

    def spawn_agent(self, name: str, *extra: str, pool_bytes: int = 4 * GiB,
                    wrap: Callable[[list[str]], list[str]] | None = None) -> subprocess.Popen[bytes]:
        """``stowage agent`` as its own process (so it can be SIGKILLed); ``wrap`` runs it elsewhere
        (in another host's network namespace)."""
        self.pool_dir(name).mkdir(parents=True, exist_ok=True)
        self.agent_dir(name).mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "storage.cli", "agent", "--node", name,
                "--bootstrap-kubeconfig", str(self.bootstrap_kubeconfig(name)), "--data-dir", str(self.agent_dir(name)),
                "--pool", f"default={self.pool_dir(name)}:{pool_bytes}", "--heartbeat", "1", *extra]
        if wrap is not None:
            argv = wrap(argv)
        log = open(self.base / f"agent-{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.processes.append(proc)
        return proc

    # ---- helpers ---------------------------------------------------------------------

    def apply(self, *objs: Obj) -> list[Obj]:
        return [self.client.create(o) for o in objs]

    def pod(self, name: str, namespace: str = "default") -> Obj:
        return self.client.get("pods", name, namespace)

    def wait_pod(self, name: str, predicate: Callable[[Obj], bool], what: str, timeout: float = 90.0,
                 namespace: str = "default") -> Obj:
        return wait_until(lambda: (lambda p: p if predicate(p) else None)(self.pod(name, namespace)),
                          f"pod {name}: {what}", timeout)

    def wait_running(self, name: str, timeout: float = 90.0, ready: bool = False) -> Obj:
        def ok(p: Obj) -> bool:
            status = p.get("status") or {}
            if status.get("phase") != "Running":
                return False
            return not ready or condition(p, "Ready") == "True"
        return self.wait_pod(name, ok, "Running" + (" and Ready" if ready else ""), timeout)

    def wait_gone(self, resource: str, name: str, namespace: str = "", timeout: float = 90.0,
                  diagnose: Callable[[], str] | None = None) -> None:
        def gone() -> bool:
            try:
                self.client.get(resource, name, namespace)
            except NotFound:
                return True
            return False
        wait_until(gone, f"{resource} {name} to be gone", timeout, diagnose=diagnose)

    def agent_log(self, node: str, limit: int = 8000) -> str:
        """The end of a spawned agent's log: what a failed wait on it shows."""
        try:
            return (self.base / f"agent-{node}.log").read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return f"(no log for agent {node})"

    def events_for(self, name: str, namespace: str = "default") -> list[Obj]:
        items, _ = self.client.list("events", namespace)
        return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]

    def close(self) -> None:
        for name in list(self.agents):
            try:
                self.stop_agent(name)
            except Exception:
                pass
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        self.stop_controllers.set()
        if self._controllers is not None:
            self._controllers.join(timeout=30)
        provisioner_registry.unregister(LocalProvisioner.name)
        self.client.close()
        self._server_cm.__exit__(None, None, None)


def condition(obj: Obj, kind: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status")
    return None


@pytest.fixture
def tmp_base() -> Iterator[Path]:
    need_root("loop devices, mounts, namespaces")
    need_programs("runc")
    with host_tmp_dir("stowage-agent-") as base:
        yield base


@pytest.fixture
def cluster(tmp_base: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_base)
    try:
        yield c
    finally:
        c.close()


# ---- manifests ---------------------------------------------------------------------------

def local_class(name: str = "local", *, fs_type: str = "ext4", expand: bool = True) -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "stowage.io/local", "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete", "allowVolumeExpansion": expand, "parameters": {"fsType": fs_type}}


def claim(name: str, size: str = "64Mi", storage_class: str = "local", modes: list[str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": modes or ["ReadWriteOnce"], "storageClassName": storage_class,
                     "resources": {"requests": {"storage": size}}}}


def pod(name: str, script: str = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done", *,
        claims: dict[str, str] | None = None, volumes: list[Obj] | None = None,
        mounts_: list[Obj] | None = None, grace: int = 5, **spec: Any) -> Obj:
    """A one-container pod running ``script`` under /bin/sh; ``claims`` maps claim name -> mountPath."""
    vols = list(volumes or [])
    vmounts = list(mounts_ or [])
    for cname, path in (claims or {}).items():
        vols.append({"name": cname, "persistentVolumeClaim": {"claimName": cname}})
        vmounts.append({"name": cname, "mountPath": path})
    container: Obj = {"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", script],
                      "volumeMounts": vmounts}
    container.update(spec.pop("container", {}))
    body: Obj = {"terminationGracePeriodSeconds": grace, "containers": [container], "volumes": vols}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                            "labels": {"app": name}}, "spec": body}
