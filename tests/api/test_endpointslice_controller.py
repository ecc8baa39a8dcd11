"""The EndpointSlice controllers against a real API server and store (SEMANTICS EPS2–EPS5): slices follow
a Service's pods (readiness, deletion), a selector-less Service's Endpoints are mirrored, a user's own
slices are left alone, and the slices go with their Service. kubectl 1.37's ``describe service`` and
``describe ingress`` read them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from serverutil import running_server
from storage.controllers.endpointslices import CONTROLLER, MIRROR_CONTROLLER, EndpointSliceReconciler
from storage.controllers.gc import GarbageCollector
from support import KUBECTL_VERSIONS, run_kubectl, running_controllers, wait_for

SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Any, httpx.Client]]:
    with running_server(tmp_path) as server, running_controllers(
            server.store, reconcilers=[EndpointSliceReconciler, GarbageCollector]):
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60,
                          verify=server.verify()) as http:
            yield server, http


def running_pod(server: Any, name: str, ip: str, ready: bool) -> None:
    """A pod as an agent reports it (no agent runs here): placed, with an IP and a Ready condition."""
    server.store.create("pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
                                                   "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})


def set_ready(server: Any, name: str, ready: bool) -> None:
    pod = server.store.get("pods", "default", name)
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    server.store.update("pods", pod)


def slices_of(http: httpx.Client, service: str) -> list[dict[str, Any]]:
    return http.get(SLICES, params={"labelSelector": f"kubernetes.io/service-name={service}"}).json()["items"]


def conditions(http: httpx.Client, service: str) -> dict[str, dict[str, bool]]:
    return {e["addresses"][0]: e["conditions"] for s in slices_of(http, service) for e in s.get("endpoints") or []}


def web_service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def test_eps2_eps5_slices_follow_the_pods_of_a_service_and_go_with_it(cluster: tuple[Any, httpx.Client]) -> None:
    server, http = cluster
    running_pod(server, "web-a", "10.20.0.2", ready=True)
    running_pod(server, "web-b", "10.20.0.3", ready=False)
    made = http.post("/api/v1/namespaces/default/services", json=web_service())
    assert made.status_code == 201, made.text
    uid = made.json()["metadata"]["uid"]
    wanted = {"10.20.0.2": {"ready": True, "serving": True, "terminating": False},
              "10.20.0.3": {"ready": False, "serving": False, "terminating": False}}
    wait_for(lambda: conditions(http, "web") == wanted or None, "the service's slice")
    [first] = slices_of(http, "web")
    assert first["metadata"]["name"].startswith("web-") and first["addressType"] == "IPv4"
    assert first["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert first["metadata"]["labels"] == {"tier": "front", "kubernetes.io/service-name": "web",
                                           "endpointslice.kubernetes.io/managed-by": CONTROLLER}
    assert first["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": uid,
                                                     "controller": True, "blockOwnerDeletion": True}]
    # Readiness and removal are followed in place: the same slice, updated.
    set_ready(server, "web-b", True)
    server.store.delete("pods", "default", "web-a")
    wait_for(lambda: conditions(http, "web") == {"10.20.0.3": {"ready": True, "serving": True, "terminating": False}}
             or None, "the slice after the changes")
    assert [s["metadata"]["name"] for s in slices_of(http, "web")] == [first["metadata"]["name"]]
    # A managed slice deleted by hand comes back.
    assert http.delete(f"{SLICES}/{first['metadata']['name']}").status_code == 200
    wait_for(lambda: conditions(http, "web") == {"10.20.0.3": {"ready": True, "serving": True, "terminating": False}}
             or None, "the slice made again")
    assert http.delete("/api/v1/namespaces/default/services/web").status_code == 200
    wait_for(lambda: slices_of(http, "web") == [] or None, "the slices gone with their service")


def test_eps4_endpoints_of_a_selector_less_service_are_mirrored(cluster: tuple[Any, httpx.Client]) -> None:
    server, http = cluster
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
               "spec": {"ports": [{"name": "sql", "port": 5432}]}}
    assert http.post("/api/v1/namespaces/default/services", json=service).status_code == 201
    endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext"},
                 "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"name": "sql", "port": 5432}]}]}
    assert http.post("/api/v1/namespaces/default/endpoints", json=endpoints).status_code == 201
    mirrored = wait_for(lambda: slices_of(http, "ext") or None, "the mirrored slice")
    assert mirrored[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == MIRROR_CONTROLLER
    assert mirrored[0]["endpoints"] == [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}}]
    assert mirrored[0]["ports"] == [{"name": "sql", "protocol": "TCP", "port": 5432}]
    # A user's own slice for the same service is never touched; skip-mirror takes the mirror away.
    own = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "ext-mine", "labels": {"kubernetes.io/service-name": "ext",
                                                       "endpointslice.kubernetes.io/managed-by": "me"}},
           "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.99"]}], "ports": []}
    assert http.post(SLICES, json=own).status_code == 201
    current = http.get("/api/v1/namespaces/default/endpoints/ext").json()
    current["metadata"]["labels"] = {"endpointslice.kubernetes.io/skip-mirror": "true"}
    assert http.put("/api/v1/namespaces/default/endpoints/ext", json=current).status_code == 200
    wait_for(lambda: [s["metadata"]["name"] for s in slices_of(http, "ext")] == ["ext-mine"] or None,
             "only the user's slice left")
    assert http.get(f"{SLICES}/ext-mine").json()["endpoints"] == [{"addresses": ["192.0.2.99"]}]


@pytest.mark.parametrize("version", [v for v in KUBECTL_VERSIONS if v != "1.20"])
def test_eps2_kubectl_describe_reads_the_slices(cluster: tuple[Any, httpx.Client], tmp_path: Path,
                                                version: str) -> None:
    server, http = cluster
    running_pod(server, "web-a", "10.20.0.2", ready=True)
    assert http.post("/api/v1/namespaces/default/services", json=web_service()).status_code == 201
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "shop"},
               "spec": {"defaultBackend": {"service": {"name": "web", "port": {"name": "http"}}}}}
    assert http.post("/apis/networking.k8s.io/v1/namespaces/default/ingresses", json=ingress).status_code == 201
    wait_for(lambda: conditions(http, "web") or None, "the service's slice")
    def describe(*args: str) -> str:
        done = run_kubectl(version, server.kubeconfig, tmp_path / "cache", "describe", *args)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    service = describe("service", "web")
    assert any(line.split() == ["Endpoints:", "10.20.0.2:8080"] for line in service.splitlines()), service
    shown = describe("ingress", "shop")
    assert "web:http (10.20.0.2:8080)" in shown and "error" not in shown, shown
