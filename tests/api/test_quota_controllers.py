"""QL16: what controllers create themselves (a StatefulSet's claims and pods, a ReplicaSet's pods) goes through
LimitRanger and ResourceQuota admission, as Kubernetes' controllers create through the API server: a quota
stops them with a FailedCreate event in Kubernetes' words, and LimitRange defaults reach their pods."""
from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from statefulset.controller import StatefulSetReconciler
from storage.apiserver.server import RunningServer
from storage.controllers.manager import ControllerManager
from storage.controllers.resourcequota import ResourceQuotaReconciler
from storage.controllers.workloads import ReplicaSetReconciler
from support import wait_for


@pytest.fixture(scope="module")
def controllers(module_server: RunningServer) -> Iterator[ControllerManager]:
    manager = ControllerManager(module_server.store, [ResourceQuotaReconciler, StatefulSetReconciler,
                                                      ReplicaSetReconciler])
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()


def _create(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = http.post(path, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _namespace_with_quota(http: httpx.Client, name: str, hard: dict[str, str]) -> str:
    _create(http, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    _create(http, f"/api/v1/namespaces/{name}/resourcequotas",
            {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": hard}})
    wait_for(lambda: (http.get(f"/api/v1/namespaces/{name}/resourcequotas/q").json().get("status") or {}).get("used"),
             "the quota's first count")
    return name


def _template(name: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "debian:12", "command": ["sleep", "infinity"]}]}}


def _events(http: httpx.Client, ns: str, reason: str) -> list[str]:
    items = http.get(f"/api/v1/namespaces/{ns}/events").json()["items"]
    return [e["message"] for e in items if e.get("reason") == reason]


def test_ql16_a_statefulsets_claims_are_held_to_the_quota_with_a_failed_create_event(
        http: httpx.Client, controllers: ControllerManager) -> None:
    ns = _namespace_with_quota(http, "ql16-sts", {"persistentvolumeclaims": "1", "requests.storage": "10Gi"})
    _create(http, f"/apis/apps/v1/namespaces/{ns}/statefulsets", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "serviceName": "web", "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": "web"}}, "template": _template("web"),
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "resources": {"requests": {"storage": "1Gi"}}}}]}})
    refused = wait_for(lambda: [m for m in _events(http, ns, "FailedCreate") if "exceeded quota" in m],
                       "the StatefulSet's FailedCreate event")
    assert any(m.startswith("create Claim data-web-") and 'persistentvolumeclaims "data-web-' in m
               and "exceeded quota: q, requested: persistentvolumeclaims=1, used: persistentvolumeclaims=1, "
                   "limited: persistentvolumeclaims=1" in m for m in refused), refused
    claims = http.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims").json()["items"]
    assert len(claims) == 1, [c["metadata"]["name"] for c in claims]
    used = http.get(f"/api/v1/namespaces/{ns}/resourcequotas/q").json()["status"]["used"]
    assert used == {"persistentvolumeclaims": "1", "requests.storage": "1Gi"}, used


def test_ql16_a_replicasets_pods_get_limit_range_defaults_and_stop_at_the_pod_quota(
        http: httpx.Client, controllers: ControllerManager) -> None:
    ns = _namespace_with_quota(http, "ql16-rs", {"pods": "2"})
    _create(http, f"/api/v1/namespaces/{ns}/limitranges", {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
        "spec": {"limits": [{"type": "Container", "default": {"memory": "128Mi"}}]}})
    _create(http, f"/apis/apps/v1/namespaces/{ns}/replicasets", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "app"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "app"}}, "template": _template("app")}})
    refused = wait_for(lambda: [m for m in _events(http, ns, "FailedCreate") if "exceeded quota" in m],
                       "the ReplicaSet's FailedCreate event")
    assert all(m.startswith('Error creating: pods "app-') and "limited: pods=2" in m for m in refused), refused
    pods = http.get(f"/api/v1/namespaces/{ns}/pods").json()["items"]
    assert len(pods) == 2
    for pod in pods:
        resources = pod["spec"]["containers"][0]["resources"]
        assert resources == {"limits": {"memory": "128Mi"}, "requests": {"memory": "128Mi"}}, resources
        assert "kubernetes.io/limit-ranger" in pod["metadata"]["annotations"]
