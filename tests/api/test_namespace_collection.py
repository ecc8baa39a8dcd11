"""Requests Kubernetes refuses. Namespaces have no deletecollection: one DELETE on the collection would remove
``default`` and ``kube-system`` with everything in them. Discovery does not list the verb, the API
answers 405 and every namespace stays; other collections keep the verb. Field selectors name only the
fields each kind selects on."""
from __future__ import annotations

from pathlib import Path

import httpx


def _names(http: httpx.Client) -> set[str]:
    response = http.get("/api/v1/namespaces")
    assert response.status_code == 200, response.text
    return {ns["metadata"]["name"] for ns in response.json()["items"]}


def test_namespaces_collection_delete_is_405_and_removes_nothing(http: httpx.Client, tmp_path: Path) -> None:
    assert http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": "team-x"}}).status_code == 201
    before = _names(http)
    assert {"default", "kube-system", "team-x"} <= before
    response = http.delete("/api/v1/namespaces")
    assert response.status_code == 405, response.text
    assert response.json()["reason"] == "MethodNotAllowed"
    assert _names(http) == before
    # Other collections keep it: the claims of one namespace go in one call.
    assert http.delete("/api/v1/namespaces/team-x/persistentvolumeclaims").status_code == 200


def test_discovery_does_not_list_deletecollection_for_namespaces(http: httpx.Client) -> None:
    resources = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
    assert "deletecollection" not in resources["namespaces"]["verbs"]
    assert {"create", "delete", "get", "list", "patch", "update", "watch"} <= set(resources["namespaces"]["verbs"])
    assert "deletecollection" in resources["persistentvolumeclaims"]["verbs"]


def test_field_selectors_are_limited_to_the_fields_kubernetes_selects_on(http: httpx.Client) -> None:
    """A selector on a field the kind does not index is a 400 naming it, as the Kubernetes API server
    answers (scripts that work here work there); the indexed ones filter."""
    bad = http.get("/api/v1/namespaces/default/persistentvolumeclaims", params={"fieldSelector": "status.phase=Bound"})
    assert bad.status_code == 400
    assert bad.json()["message"] == '"status.phase" is not a known field selector: only "metadata.name", "metadata.namespace"'
    # A kind with a conversion function of its own refuses in that function's words.
    watch = http.get("/api/v1/pods", params={"fieldSelector": "spec.bogus=x", "watch": "1"})
    assert watch.status_code == 400 and watch.json()["message"] == "field label not supported: spec.bogus"
    nodes = http.get("/api/v1/nodes", params={"fieldSelector": "metadata.namespace=x"})
    assert nodes.status_code == 400 and nodes.json()["message"] == "field label not supported: metadata.namespace"
    assert http.get("/api/v1/pods", params={"fieldSelector": "status.phase=Running,spec.nodeName=n1"}).status_code == 200
    assert http.get("/api/v1/namespaces/default/events",
                    params={"fieldSelector": "involvedObject.kind=Pod,involvedObject.name=x"}).status_code == 200
    named = http.get("/api/v1/namespaces", params={"fieldSelector": "metadata.name=default"})
    assert [n["metadata"]["name"] for n in named.json()["items"]] == ["default"]


def test_field_selectors_take_their_values_where_kubernetes_takes_them(http: httpx.Client) -> None:
    """An event's ``source`` is its component and a job's ``status.successful`` its succeeded count."""
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "fs-source", "namespace": "default"},
             "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "R", "type": "Normal",
             "source": {"component": "kubelet", "host": "n1"}}
    assert http.post("/api/v1/namespaces/default/events", json=event).status_code == 201
    try:
        def names(path: str, selector: str) -> list[str]:
            answer = http.get(path, params={"fieldSelector": selector})
            assert answer.status_code == 200, answer.text
            return [i["metadata"]["name"] for i in answer.json()["items"]]

        assert "fs-source" in names("/api/v1/namespaces/default/events", "source=kubelet")
        assert "fs-source" not in names("/api/v1/namespaces/default/events", "source=kubelet,source!=kubelet")
        assert "fs-source" not in names("/api/v1/namespaces/default/events", "source=scheduler")
    finally:
        http.delete("/api/v1/namespaces/default/events/fs-source")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "fs-job"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "busybox"}]}}}}
    assert http.post("/apis/batch/v1/namespaces/default/jobs", json=job).status_code == 201
    try:
        answer = http.get("/apis/batch/v1/namespaces/default/jobs", params={"fieldSelector": "status.successful=0"})
        assert answer.status_code == 200, answer.text
        # FS3: a job with no succeeded count yet has status.successful 0, as Go prints its zero value.
        assert "fs-job" in [i["metadata"]["name"] for i in answer.json()["items"]]
        bogus = http.get("/apis/batch/v1/namespaces/default/jobs", params={"fieldSelector": "status.succeeded=0"})
        assert bogus.status_code == 400 and bogus.json()["message"] == "field label not supported: status.succeeded"
    finally:
        http.delete("/apis/batch/v1/namespaces/default/jobs/fs-job", params={"propagationPolicy": "Background"})
