"""Namespaces as Kubernetes has them (SEMANTICS N1-N4): system namespaces and the ``kubernetes`` Service
from the start, no content in a missing or Terminating namespace, deletion through the namespace controller."""
from __future__ import annotations

from typing import Any

import httpx

from apiobjects import config_map, ensure_namespaces
from storage.apiserver.namespaces import ensure_system_objects
from storage.client import Client
from storage.controllers.endpoints import EndpointsReconciler
from storage.controllers.namespace import NamespaceReconciler
from support import running_controllers, wait_for


def request(api_server, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_server.token}"}
    return httpx.request(method, api_server.url + path, headers=headers, timeout=30, **kw, verify=api_server.verify())


def test_system_namespaces_and_the_kubernetes_service_exist_from_the_start(api_server, client: Client) -> None:
    names = {ns["metadata"]["name"]: ns for ns in client.list("namespaces")[0]}
    assert set(names) >= {"default", "kube-system", "kube-public", "kube-node-lease"}
    for ns in names.values():
        assert ns["status"]["phase"] == "Active" and ns["spec"]["finalizers"] == ["kubernetes"]
        assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns["metadata"]["name"]
    service = client.get("services", "kubernetes", "default")
    assert "selector" not in service["spec"]
    assert service["spec"]["ports"][0]["name"] == "https"
    endpoints = client.get("endpoints", "kubernetes", "default")
    assert endpoints["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}],
                                     "ports": [{"name": "https", "port": api_server.port, "protocol": "TCP"}]}]
    # A restart does it again without harm, and follows a new port.
    ensure_system_objects(api_server.store, "0.0.0.0", 7443)
    ensure_system_objects(api_server.store, "0.0.0.0", 7443)
    assert len(client.list("namespaces")[0]) == len(names)
    assert client.get("endpoints", "kubernetes", "default")["subsets"][0]["ports"][0]["port"] == 7443


def test_creating_in_a_missing_namespace_is_404_naming_it(api_server) -> None:
    resp = request(api_server, "POST", "/api/v1/namespaces/nope/configmaps", json=config_map("c", "nope"))
    assert resp.status_code == 404
    body = resp.json()
    assert body["message"] == 'namespaces "nope" not found'
    assert body["reason"] == "NotFound" and body["details"] == {"name": "nope", "kind": "namespaces"}


def test_system_namespaces_may_not_be_deleted(api_server) -> None:
    for name in ("default", "kube-system", "kube-public"):
        resp = request(api_server, "DELETE", f"/api/v1/namespaces/{name}")
        assert resp.status_code == 403
        assert resp.json()["message"] == f'namespaces "{name}" is forbidden: this namespace may not be deleted'


def test_namespace_deletion_terminates_then_empties_and_removes_it(api_server, client: Client) -> None:
    ensure_namespaces(client, "doomed")
    client.create(config_map("keep", "doomed"))
    client.create(config_map("other", "default"))
    deleted = request(api_server, "DELETE", "/api/v1/namespaces/doomed")
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["status"]["phase"] == "Terminating" and body["metadata"]["deletionTimestamp"]
    assert body["spec"]["finalizers"] == ["kubernetes"]
    # Nothing new goes into a Terminating namespace (Kubernetes' exact words); updates still work.
    late = request(api_server, "POST", "/api/v1/namespaces/doomed/configmaps", json=config_map("late", "doomed"))
    assert late.status_code == 403
    assert late.json()["message"] == ('configmaps "late" is forbidden: unable to create new content in namespace '
                                      "doomed because it is being terminated")
    assert late.json()["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    kept = client.get("configmaps", "keep", "doomed")
    kept["data"] = {"k": "v"}
    client.update(kept)
    # The namespace controller empties it and lets it go; other namespaces are untouched.
    with running_controllers(api_server.store, [NamespaceReconciler]):
        wait_for(lambda: not any(n["metadata"]["name"] == "doomed" for n in client.list("namespaces")[0]),
                 "the namespace to be removed")
    assert client.list("configmaps", "doomed")[0] == []
    assert client.get("configmaps", "other", "default")
    # The name is free again.
    ensure_namespaces(client, "doomed")
    assert client.get("namespaces", "doomed")["status"]["phase"] == "Active"


def test_finalize_subresource_releases_a_terminating_namespace(api_server, client: Client) -> None:
    ensure_namespaces(client, "stuck")
    request(api_server, "DELETE", "/api/v1/namespaces/stuck")
    ns = client.get("namespaces", "stuck")
    assert ns["status"]["phase"] == "Terminating"
    ns["spec"]["finalizers"] = []
    resp = request(api_server, "PUT", "/api/v1/namespaces/stuck/finalize", json=ns)
    assert resp.status_code == 200, resp.text
    wait_for(lambda: not any(n["metadata"]["name"] == "stuck" for n in client.list("namespaces")[0]),
             "the finalized namespace to go")


def test_endpoints_of_selectorless_services_are_left_alone(api_server, client: Client) -> None:
    # Endpoints first, then their Service (kubectl apply of a directory can do that), as the docs' example.
    client.create({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext", "namespace": "default"},
                   "subsets": [{"addresses": [{"ip": "192.0.2.42"}], "ports": [{"port": 9376}]}]})
    with running_controllers(api_server.store, [EndpointsReconciler]) as manager:
        wait_for(manager.idle, "the endpoints controller to look at everything")
        client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
                       "spec": {"ports": [{"port": 80, "targetPort": 9376}]}})
        wait_for(lambda: manager.idle() and client.get("services", "ext", "default"), "the controller to settle")
    assert client.get("endpoints", "ext", "default")["subsets"][0]["addresses"] == [{"ip": "192.0.2.42"}]
    assert client.get("endpoints", "kubernetes", "default")["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]


def test_an_update_never_changes_spec_finalizers(client: Client) -> None:
    ensure_namespaces(client, "kept")
    ns = client.get("namespaces", "kept")
    ns["spec"] = {"finalizers": []}
    ns["metadata"]["labels"] = {"team": "a"}
    updated = client.update(ns)
    assert updated["metadata"]["labels"]["team"] == "a"
    assert updated["spec"]["finalizers"] == ["kubernetes"]  # only /finalize changes them
