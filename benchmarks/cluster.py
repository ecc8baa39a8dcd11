"""The cluster the benchmarks measure: an in-process API server on SQLite with the controllers, and one
``stowage agent`` process (bootstrapped with its own node certificate, as `stowage token create` does).

Shared by the benchmark scripts so each one measures the same set-up and cleans it up the same way.
"""
from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from provisioners import registry as provisioner_registry
from provisioners.local import LocalProvisioner
from raw_volume import wait
from serverutil import running_server
from storage.controllers.manager import run_controllers
from storage.errors import NotFound

# A container command that idles until SIGTERM, so a pod stays Running without using CPU.
LOOP = "trap 'exit 0' TERM; while true; do sleep 60 & wait $!; done"


def quiet_logs() -> None:
    """Only warnings on the console: the figures are the output, and the server's request log would bury them."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def secret(name: str, data: dict[str, str], kind: str = "Opaque", namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


class BenchCluster:
    def __init__(self, base: Path, *, local_provisioner: bool = False) -> None:
        self.base = base
        # The API server's threads on one CPU, as `stowage up` keeps them by default (PF92).
        self._server = running_server(base, cpu=-1)
        self.server = self._server.__enter__()
        self.client = self.server.client()
        self.stop = threading.Event()
        self.local_provisioner = local_provisioner
        if local_provisioner:
            assert self.server.tls is not None
            provisioner_registry.register(
                LocalProvisioner(nodes=self._node, tls=self.server.tls.pki.agent_client_context()))
        ready = threading.Event()
        self.controllers = threading.Thread(target=run_controllers, args=(self.server.store, self.stop),
                                            kwargs={"ready": ready}, daemon=True)
        self.controllers.start()
        ready.wait(60)
        self.agent: subprocess.Popen[bytes] | None = None

    def _node(self, name: str) -> Any:
        try:
            return self.server.store.get("nodes", "", name)
        except NotFound:
            return None

    def _bootstrap(self) -> Path:
        from storage.api.bootstrap_tokens import new_bootstrap_token
        from storage.client.kubeconfig import write_kubeconfig

        token, bootstrap_secret = new_bootstrap_token(3600, "benchmark agent")
        self.client.create(bootstrap_secret)
        return write_kubeconfig(self.base / "bootstrap.kubeconfig", self.server.url, token, ca_data=self.server.ca_pem)

    def start_agent(self, *, node: str = "bench", pool_bytes: int | None = None) -> None:
        argv = [sys.executable, "-m", "storage.cli", "agent", "--node", node, "--bootstrap-kubeconfig",
                str(self._bootstrap()), "--data-dir", str(self.base / "agent"), "--heartbeat", "5"]
        if pool_bytes is not None:
            pool = self.base / "pool"
            pool.mkdir(exist_ok=True)
            argv += ["--pool", f"default={pool}:{pool_bytes}"]
        log = open(self.base / "agent.log", "ab")
        self.agent = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)

        def ready() -> bool:
            conditions = (self.client.get("nodes", node).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        wait(ready, "the agent's node", 120)

    def claim_and_pod(self, name: str, class_name: str, *, size: str = "1Gi", modes: list[str] | None = None,
                      command: str = LOOP, namespace: str = "default") -> None:
        self.client.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "metadata": {"name": name, "namespace": namespace},
                            "spec": {"accessModes": modes or ["ReadWriteOnce"], "storageClassName": class_name,
                                     "resources": {"requests": {"storage": size}}}})
        self.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                            "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                                "name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", command],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": name}}]}})

    def seconds_to_running(self, name: str, class_name: str, **kw: Any) -> float:
        """From creating the claim and pod until the pod reports Running."""
        namespace = kw.get("namespace", "default")
        start = time.perf_counter()
        self.claim_and_pod(name, class_name, **kw)
        wait(lambda: running(self.client.get("pods", name, namespace)), f"pod {name} Running", 300, 0.01)
        return time.perf_counter() - start

    def pod_volume(self, name: str, namespace: str = "default") -> Path:
        uid = self.client.get("pods", name, namespace)["metadata"]["uid"]
        return next((self.base / "agent" / "pods" / uid / "volumes").glob("*/data"))

    def count(self, resource: str, predicate: Callable[[dict[str, Any]], bool], namespace: str = "default") -> int:
        items, _ = self.client.list(resource, namespace)
        return sum(1 for o in items if predicate(o))

    def delete_all(self, namespace: str = "default", timeout: float = 900) -> None:
        for resource in ("pods", "persistentvolumeclaims"):
            items, _ = self.client.list(resource, namespace)
            for o in items:
                try:
                    self.client.delete(resource, o["metadata"]["name"], namespace)
                except NotFound:
                    pass
        wait(lambda: not self.client.list("pods", namespace)[0] and not self.client.list("persistentvolumes")[0],
             "everything deleted", timeout, 0.2)

    def close(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.agent.pid, signal.SIGKILL)
        self.stop.set()
        self.controllers.join(30)
        if self.local_provisioner:
            provisioner_registry.unregister(LocalProvisioner.name)
        self._server.__exit__(None, None, None)
