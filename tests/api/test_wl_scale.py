"""The ``/scale`` subresource (autoscaling/v1 Scale) of every scalable kind, as ``kubectl scale`` uses it."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from storage.client import Client

TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def workloads() -> list[tuple[str, dict[str, Any]]]:
    selector = {"matchLabels": {"app": "web"}}
    return [
        ("/apis/apps/v1/namespaces/default/statefulsets/web",
         {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
          "spec": {"replicas": 2, "serviceName": "web", "selector": selector, "template": TEMPLATE}}),
        ("/apis/apps/v1/namespaces/default/replicasets/web",
         {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
          "spec": {"replicas": 2, "selector": selector, "template": TEMPLATE}}),
        ("/apis/apps/v1/namespaces/default/deployments/web",
         {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
          "spec": {"replicas": 2, "selector": selector, "template": TEMPLATE}}),
        ("/api/v1/namespaces/default/replicationcontrollers/web",
         {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
          "spec": {"replicas": 2, "selector": {"app": "web"}, "template": TEMPLATE}}),
    ]


def request(api_server, method: str, path: str, content_type: str = "application/json", **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_server.token}", "Content-Type": content_type}
    return httpx.request(method, api_server.url + path, headers=headers, timeout=30, **kw, verify=api_server.verify())


@pytest.mark.parametrize("path,obj", workloads(), ids=lambda v: v.rsplit("/", 2)[-2] if isinstance(v, str) else "")
def test_scale_get_put_and_every_patch_type(api_server, client: Client, path: str, obj: dict[str, Any]) -> None:
    created = request(api_server, "POST", path.rsplit("/", 1)[0], json=obj)
    assert created.status_code == 201, created.text
    scale = request(api_server, "GET", path + "/scale").json()
    assert (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert scale["metadata"]["name"] == "web" and scale["metadata"]["namespace"] == "default"
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {"replicas": 0, "selector": "app=web"}

    # PUT with the resourceVersion just read; a stale one is a 409.
    scale["spec"]["replicas"] = 3
    put = request(api_server, "PUT", path + "/scale", json=scale)
    assert put.status_code == 200, put.text
    assert put.json()["spec"]["replicas"] == 3
    stale = request(api_server, "PUT", path + "/scale", json=scale)
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"

    # kubectl scale sends a merge patch; other clients send JSON or strategic patches.
    for content_type, body, want in (
        ("application/merge-patch+json", {"spec": {"replicas": 4}}, 4),
        ("application/json-patch+json", [{"op": "replace", "path": "/spec/replicas", "value": 5}], 5),
        ("application/strategic-merge-patch+json", {"spec": {"replicas": 0}}, 0),
    ):
        patched = request(api_server, "PATCH", path + "/scale", content_type, json=body)
        assert patched.status_code == 200, patched.text
        assert patched.json()["spec"]["replicas"] == want
        assert request(api_server, "GET", path).json()["spec"]["replicas"] == want

    # A precondition in the patch (kubectl scale --resource-version) is honoured.
    wrong = request(api_server, "PATCH", path + "/scale", "application/merge-patch+json",
                    json={"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}})
    assert wrong.status_code == 409
    negative = request(api_server, "PATCH", path + "/scale", "application/merge-patch+json",
                       json={"spec": {"replicas": -1}})
    assert negative.status_code == 422 and "spec.replicas" in negative.json()["message"]
    # Only spec.replicas is written through /scale: the template is untouched.
    after = request(api_server, "GET", path).json()
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"


def test_scale_of_kinds_without_it_and_of_missing_objects_is_404(api_server) -> None:
    assert request(api_server, "GET", "/api/v1/namespaces/default/pods/x/scale").status_code == 404
    missing = request(api_server, "GET", "/apis/apps/v1/namespaces/default/deployments/nope/scale")
    assert missing.status_code == 404 and missing.json()["kind"] == "Status"


def test_scale_status_reports_replicas_and_a_selector_with_expressions(api_server, client: Client) -> None:
    obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
           "spec": {"replicas": 1, "template": TEMPLATE, "selector": {
               "matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}}}
    client.create({**obj, "metadata": {"name": "rs", "namespace": "default"}})
    rs = client.get("replicasets", "rs", "default")
    rs["status"] = {"replicas": 1}
    client.update_status(rs)
    scale = request(api_server, "GET", "/apis/apps/v1/namespaces/default/replicasets/rs/scale").json()
    assert scale["status"] == {"replicas": 1, "selector": "app=web,tier notin (x)"}
