"""SEMANTICS K6: an update or patch sent without a precondition is re-read and re-applied until it wins its
race, as Kubernetes' GuaranteedUpdate does; one that names a resourceVersion gets 409 at its first loss.
Before, the API server gave up after 8 lost races and answered 409 to a `kubectl patch` that Kubernetes
would have applied (seen when a controller rewrote a claim's status many times a second).

The races are real: right after the API server reads the object, another writer's change is stored through
the same store, so the API server's write of what it read fails the store's resourceVersion check."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from storage.apiserver.server import RunningServer
from support import KUBECTL_VERSIONS, run_kubectl

LOSSES = 20  # well past the 8 tries the API server used to give up after


class Rival:
    """After each of the first ``losses`` reads of one object by the API server, another writer stores a
    change of its own: the label ``rival`` counting its writes (or, with ``status``, a status field)."""

    def __init__(self, server: RunningServer, resource: str, name: str, losses: int, status: bool = False) -> None:
        self.store = server.store
        self.original: Callable[..., dict[str, Any]] = server.store.get
        self.resource, self.name, self.losses, self.status = resource, name, losses, status
        self.writes = 0
        self.lock = threading.Lock()

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.original(resource, namespace, name)
        if resource != self.resource or name != self.name:
            return obj
        with self.lock:
            if self.writes >= self.losses:
                return obj
            self.writes += 1
            rival = json.loads(json.dumps(obj))
            if self.status:
                rival.setdefault("status", {})["capacity"] = {"storage": f"{self.writes}Gi"}
            else:
                rival["metadata"].setdefault("labels", {})["rival"] = str(self.writes)
            self.store.update(resource, rival)
        return obj


@pytest.fixture
def rival(module_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Rival]]:
    """Arms a rival on the module's API server (each test uses names of its own); disarmed after the test."""
    def arm(resource: str, name: str, losses: int = LOSSES, status: bool = False) -> Rival:
        r = Rival(module_server, resource, name, losses, status)
        monkeypatch.setattr(module_server.store, "get", r.get)
        return r

    yield arm


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_k6_kubectl_patch_outlasts_many_lost_races(module_server: RunningServer, http: httpx.Client,
                                                    rival: Callable[..., Rival], version: str, tmp_path: Path) -> None:
    name = f"contended-{version.replace('.', '-')}"
    path = f"/api/v1/namespaces/default/configmaps/{name}"
    kubeconfig = module_server.kubeconfig
    assert kubeconfig is not None
    created = http.post("/api/v1/namespaces/default/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
    assert created.status_code == 201, created.text
    r = rival("configmaps", name)
    patched = run_kubectl(version, kubeconfig, tmp_path / "cache", "patch", "configmap", name,
                          "--type", "merge", "-p", '{"data":{"b":"2"}}')
    assert patched.returncode == 0, patched.stderr
    assert r.writes == LOSSES, "the patch lost every race the rival made"
    live = http.get(path).json()
    # Both writers' changes are in: the patch was applied to the rival's last version, not over it.
    assert live["data"] == {"a": "1", "b": "2"}
    assert live["metadata"]["labels"] == {"rival": str(LOSSES)}

    r = rival("configmaps", name)
    labelled = run_kubectl(version, kubeconfig, tmp_path / "cache", "label", "configmap", name, "team=storage")
    assert labelled.returncode == 0, labelled.stderr
    assert r.writes == LOSSES
    assert http.get(path).json()["metadata"]["labels"] == {"rival": str(LOSSES), "team": "storage"}

    r = rival("configmaps", name)
    manifest = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  c: '3'\n"
    applied = run_kubectl(version, kubeconfig, tmp_path / "cache", "apply", "--server-side",
                          "--field-manager", "k6", "-f", "-", stdin=manifest)
    assert applied.returncode == 0, applied.stderr
    assert r.writes == LOSSES
    assert http.get(path).json()["data"]["c"] == "3"


def test_k6_put_without_resource_version_and_status_patch_retry(http: httpx.Client,
                                                               rival: Callable[..., Rival]) -> None:
    claims = "/api/v1/namespaces/default/persistentvolumeclaims"
    body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    assert http.post(claims, json=body).status_code == 201
    r = rival("persistentvolumeclaims", "data", status=True)
    patched = http.patch(f"{claims}/data/status", json={"status": {"phase": "Lost"}},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert patched.status_code == 200, patched.text
    assert r.writes == LOSSES
    status = http.get(f"{claims}/data").json()["status"]
    assert status["phase"] == "Lost" and status["capacity"] == {"storage": f"{LOSSES}Gi"}

    r = rival("persistentvolumeclaims", "data")
    replaced = http.put(f"{claims}/data", json={**body, "metadata": {"name": "data", "annotations": {"x": "y"}}})
    assert replaced.status_code == 200, replaced.text
    assert r.writes == LOSSES
    meta = http.get(f"{claims}/data").json()["metadata"]
    # A PUT without resourceVersion is the whole object the client sent: the rival's label goes, as in
    # Kubernetes, where an unconditional update replaces what it finds.
    assert meta["annotations"] == {"x": "y"} and "rival" not in (meta.get("labels") or {})


def test_k6_a_precondition_is_409_at_the_first_loss(http: httpx.Client, rival: Callable[..., Rival]) -> None:
    maps = "/api/v1/namespaces/default/configmaps"
    created = http.post(maps, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "guarded"}})
    assert created.status_code == 201
    version = created.json()["metadata"]["resourceVersion"]
    r = rival("configmaps", "guarded")
    answer = http.patch(f"{maps}/guarded", json={"metadata": {"resourceVersion": version}, "data": {"b": "2"}},
                        headers={"Content-Type": "application/merge-patch+json"})
    assert answer.status_code == 409, answer.text
    assert "the object has been modified" in answer.json()["message"]
    assert r.writes == 1, "not tried again: the client asked for that version only"
    live = http.get(f"{maps}/guarded").json()
    assert "data" not in live and live["metadata"]["labels"] == {"rival": "1"}


def test_k6_gives_up_with_409_after_its_budget(http: httpx.Client, rival: Callable[..., Rival],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.apiserver import handlers

    # Long enough that the free retries always fit in it, also on a loaded machine (0.3 s did not in CI: each
    # try there took some 40 ms), short for a test: the waits after them are at most 50 ms each.
    monkeypatch.setattr(handlers, "_RETRY_BUDGET_SECONDS", 2.0)
    maps = "/api/v1/namespaces/default/configmaps"
    assert http.post(maps, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "busy"}}).status_code == 201
    r = rival("configmaps", "busy", losses=10**6)
    answer = http.patch(f"{maps}/busy", json={"data": {"b": "2"}},
                        headers={"Content-Type": "application/merge-patch+json"})
    assert answer.status_code == 409, answer.text
    assert r.writes > handlers._FREE_RETRIES, "it kept trying past the free retries"
    r.losses = r.writes  # the rival stops: the client's next try wins
    again = http.patch(f"{maps}/busy", json={"data": {"b": "2"}},
                       headers={"Content-Type": "application/merge-patch+json"})
    assert again.status_code == 200, again.text
    assert again.json()["data"] == {"b": "2"}
