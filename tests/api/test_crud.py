"""Every verb over real HTTP against a real SQLite store."""
from __future__ import annotations

import httpx
import pytest

from apiobjects import config_map, ensure_namespaces, pv, pvc, storage_class
from storage.client import Client
from storage.errors import AlreadyExists, BadRequest, Conflict, Invalid, NotFound


def raw(api_server, method: str, path: str, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_server.token}", **kw.pop("headers", {})}
    return httpx.request(method, api_server.url + path, headers=headers, timeout=30, verify=api_server.verify(), **kw)


def test_namespaced_create_get_list_update_delete(client: Client) -> None:
    ensure_namespaces(client, "team-a", "team-b")
    created = client.create(config_map("one", "team-a", labels={"app": "db"}, data={"k": "v"}))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert created["kind"] == "ConfigMap" and created["apiVersion"] == "v1"
    client.create(config_map("two", "team-b"))

    got = client.get("configmaps", "one", "team-a")
    assert got["data"] == {"k": "v"}

    items, rv = client.list("configmaps", "team-a")
    assert [o["metadata"]["name"] for o in items] == ["one"]
    assert int(rv) >= int(created["metadata"]["resourceVersion"])
    everywhere, _ = client.list("configmaps")
    # kube-system holds the cluster CA (kube-root-ca.crt), published by the API server, as in Kubernetes.
    assert {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in everywhere} == {
        ("team-a", "one"), ("team-b", "two"), ("kube-system", "kube-root-ca.crt")}
    assert all(o["kind"] == "ConfigMap" and o["apiVersion"] == "v1" for o in everywhere)

    got["data"] = {"k": "w"}
    updated = client.update(got)
    assert updated["data"] == {"k": "w"}
    assert int(updated["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])

    client.delete("configmaps", "one", "team-a")
    with pytest.raises(NotFound):
        client.get("configmaps", "one", "team-a")
    with pytest.raises(NotFound):
        client.delete("configmaps", "one", "team-a")


def test_cluster_scoped_verbs(client: Client) -> None:
    client.create(storage_class("fast"))
    with pytest.raises(AlreadyExists):
        client.create(storage_class("fast"))
    got = client.get("storageclasses", "fast")
    assert "namespace" not in got["metadata"]
    items, _ = client.list("sc")
    assert [o["metadata"]["name"] for o in items] == ["fast"]
    patched = client.patch("storageclasses", "fast", {"allowVolumeExpansion": True})
    assert patched["allowVolumeExpansion"] is True
    client.delete("storageclasses", "fast")
    assert client.list("storageclasses")[0] == []


def test_namespaces_are_objects(client: Client, api_server) -> None:
    client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    assert client.get("namespaces", "team-a")["metadata"]["name"] == "team-a"
    status = raw(api_server, "PUT", "/api/v1/namespaces/team-a/status",
                 json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}, "status": {"phase": "Active"}})
    assert status.status_code == 200, status.text
    assert client.get("namespaces", "team-a")["status"] == {"phase": "Active"}


def test_legacy_api_version_is_accepted_and_served_as_current(client: Client) -> None:
    sc = storage_class("old")
    sc["apiVersion"] = "storage.k8s.io/v1beta1"
    assert client.create(sc)["apiVersion"] == "storage.k8s.io/v1"


def test_path_namespace_wins_and_mismatch_is_400(api_server) -> None:
    with api_server.client() as client:
        ensure_namespaces(client, "team-a", "team-b")
    body = config_map("x", namespace="")
    del body["metadata"]["namespace"]
    made = raw(api_server, "POST", "/api/v1/namespaces/team-a/configmaps", json=body)
    assert made.status_code == 201
    assert made.json()["metadata"]["namespace"] == "team-a"
    bad = raw(api_server, "POST", "/api/v1/namespaces/team-a/configmaps", json=config_map("y", "team-b"))
    assert bad.status_code == 400
    assert bad.json()["kind"] == "Status" and "namespace" in bad.json()["message"]


def test_wrong_kind_in_body_is_400(api_server) -> None:
    resp = raw(api_server, "POST", "/api/v1/namespaces/default/configmaps", json=pvc("c"))
    assert resp.status_code == 400 and "kind" in resp.json()["message"]


def test_invalid_json_is_400(api_server) -> None:
    resp = raw(api_server, "POST", "/api/v1/namespaces/default/configmaps", content=b"{not json",
               headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["reason"] == "BadRequest"


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_k1_a_template_of_the_wrong_shape_is_the_decoders_400_not_a_crash(api_server, method: str) -> None:
    """Found by the API fuzz test: the ReplicationController defaulter read ``template.metadata`` before the
    decoder had checked its type, and a string there was a 500."""
    path = "/api/v1/namespaces/default/replicationcontrollers"
    rc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc-shape"},
          "spec": {"template": {"metadata": {"labels": {"a": "b"}},
                                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    if method == "PUT":
        made = raw(api_server, "POST", path, json=rc)
        assert made.status_code == 201, made.text
        rc = made.json()
        path += "/rc-shape"
    rc["spec"]["template"]["metadata"] = "x"
    resp = raw(api_server, method, path, json=rc)
    assert resp.status_code == 400, resp.text
    assert resp.json()["message"] == (
        'ReplicationController in version "v1" cannot be handled as a ReplicationController: json: cannot '
        "unmarshal string into Go struct field PodTemplateSpec.spec.template.metadata of type v1.ObjectMeta")


def test_validation_failure_is_422_naming_the_field_and_nothing_is_stored(api_server, client: Client) -> None:
    """Q3: a claim's requests.storage is required."""
    claim = pvc("no-size")
    del claim["spec"]["resources"]["requests"]["storage"]
    resp = raw(api_server, "POST", "/api/v1/namespaces/default/persistentvolumeclaims", json=claim)
    assert resp.status_code == 422
    status = resp.json()
    assert status["kind"] == "Status" and status["reason"] == "Invalid"
    assert "spec.resources.requests.storage" in status["message"]
    assert any(c["field"] == "spec.resources.requests.storage" for c in status["details"]["causes"])
    with pytest.raises(NotFound):
        client.get("persistentvolumeclaims", "no-size", "default")
    with pytest.raises(Invalid) as info:
        client.create(claim)
    assert "spec.resources.requests.storage" in str(info.value)


def test_stale_resource_version_is_409(client: Client) -> None:
    first = client.create(config_map("c"))
    fresh = dict(first, data={"a": "1"})
    client.update(fresh)
    stale = dict(first, data={"a": "2"})
    with pytest.raises(Conflict):
        client.update(stale)
    assert client.get("configmaps", "c", "default")["data"] == {"a": "1"}
    with pytest.raises(Conflict):
        client.patch("configmaps", "c", {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "data": {"a": "3"}}, "default")
    with pytest.raises(Conflict):
        client.delete("configmaps", "c", "default", resource_version=first["metadata"]["resourceVersion"])
    assert client.get("configmaps", "c", "default")["data"] == {"a": "1"}


def test_update_with_name_not_matching_url_is_400(api_server, client: Client) -> None:
    client.create(config_map("c"))
    resp = raw(api_server, "PUT", "/api/v1/namespaces/default/configmaps/c", json=config_map("other"))
    assert resp.status_code == 400


def test_status_subresource_writes_only_status(client: Client) -> None:
    created = client.create(pv("vol-1"))
    # Status given on create is reset, as Kubernetes does (K3 adds the phase's time).
    assert created["status"] == {"phase": "Pending", "lastPhaseTransitionTime": created["status"]["lastPhaseTransitionTime"]}

    with_status = dict(created, status={"phase": "Available"})
    with_status["spec"] = dict(created["spec"], persistentVolumeReclaimPolicy="Delete")
    after = client.update_status(with_status)
    assert after["status"]["phase"] == "Available"
    assert after["spec"].get("persistentVolumeReclaimPolicy") != "Delete", "status PUT must not write spec"

    main = dict(after, status={"phase": "Bound"})
    main["spec"] = dict(after["spec"], persistentVolumeReclaimPolicy="Delete")
    updated = client.update(main)
    assert updated["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert updated["status"]["phase"] == "Available", "a main-resource PUT keeps the stored status"

    patched = client.patch("persistentvolumes", "vol-1", {"status": {"phase": "Released"}, "spec": {"storageClassName": "x"}},
                           subresource="status")
    assert patched["status"]["phase"] == "Released"
    assert patched["spec"].get("storageClassName") != "x"
    main_patch = client.patch("persistentvolumes", "vol-1", {"status": {"phase": "Failed"}})
    assert main_patch["status"]["phase"] == "Released"


def test_status_of_kind_without_status_is_404(api_server, client: Client) -> None:
    client.create(config_map("c"))
    assert raw(api_server, "GET", "/api/v1/namespaces/default/configmaps/c/status").status_code == 404


def test_merge_json_and_strategic_patches(client: Client) -> None:
    client.create(config_map("c", data={"a": "1", "b": "2"}))
    merged = client.patch("configmaps", "c", {"data": {"a": None, "c": "3"}}, "default", "merge")
    assert merged["data"] == {"b": "2", "c": "3"}
    jsoned = client.patch("configmaps", "c", [{"op": "replace", "path": "/data/b", "value": "20"},
                                              {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}], "default", "json")
    assert jsoned["data"]["b"] == "20" and jsoned["metadata"]["labels"] == {"x": "y"}

    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "serviceName": "web", "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "a", "image": "i1"}, {"name": "b", "image": "i2"}]}},
        },
    }
    client.create(sts)

    def containers(obj: dict) -> list[tuple[str, str]]:
        return [(c["name"], c["image"]) for c in obj["spec"]["template"]["spec"]["containers"]]

    patch = lambda image: {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": image}]}}}}  # noqa: E731
    strategic = client.patch("statefulsets", "web", patch("i3"), "default", "strategic")
    assert containers(strategic) == [("a", "i1"), ("b", "i3")]
    plain_merge = client.patch("statefulsets", "web", patch("i4"), "default", "merge")
    assert containers(plain_merge) == [("b", "i4")], "a merge patch replaces lists"


def test_bad_json_patch_is_422_and_unknown_patch_type_is_415(api_server, client: Client) -> None:
    client.create(config_map("c"))
    # Kubernetes answers an operation that does not apply with 422 (reason Invalid).
    with pytest.raises(Invalid):
        client.patch("configmaps", "c", [{"op": "remove", "path": "/data/missing"}], "default", "json")
    resp = raw(api_server, "PATCH", "/api/v1/namespaces/default/configmaps/c", content=b"{}",
               headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415


def test_apply_patch_creates_then_replaces_what_the_manager_owns(api_server, client: Client) -> None:
    """SSA2/SSA6: an apply creates the object; the same manager's next apply drops the key it left out."""
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: default\ndata:\n  a: '1'\n"
    first = raw(api_server, "PATCH", "/api/v1/namespaces/default/configmaps/applied?fieldManager=t", content=body.encode(),
                headers={"Content-Type": "application/apply-patch+yaml"})
    assert first.status_code in (200, 201), first.text
    second = raw(api_server, "PATCH", "/api/v1/namespaces/default/configmaps/applied?fieldManager=t",
                 content=body.replace("a: '1'", "b: '2'").encode(), headers={"Content-Type": "application/apply-patch+yaml"})
    assert second.status_code == 200
    assert client.get("configmaps", "applied", "default")["data"] == {"b": "2"}


def test_label_and_field_selectors(client: Client) -> None:
    ensure_namespaces(client, "n1", "n2")
    client.create(config_map("a", "n1", labels={"app": "db", "tier": "1"}))
    client.create(config_map("b", "n1", labels={"app": "web"}))
    client.create(config_map("c", "n2", labels={"app": "db"}))
    names = lambda items: sorted(o["metadata"]["name"] for o in items)  # noqa: E731
    assert names(client.list("configmaps", label_selector="app=db")[0]) == ["a", "c"]
    assert names(client.list("configmaps", label_selector="app in (db,web),!tier")[0]) == ["b", "c"]
    assert names(client.list("configmaps", field_selector="metadata.namespace=n1")[0]) == ["a", "b"]
    assert names(client.list("configmaps", "n1", field_selector="metadata.name!=a")[0]) == ["b"]
    with pytest.raises(BadRequest):
        client.list("configmaps", label_selector="app in (")


def test_delete_preconditions_and_finalizers(client: Client) -> None:
    """B11: a volume carries pv-protection, so delete only marks it."""
    made = client.create(pv("vol-1"))
    assert "kubernetes.io/pv-protection" in made["metadata"]["finalizers"]
    marked = client.delete("persistentvolumes", "vol-1", resource_version=made["metadata"]["resourceVersion"])
    assert marked["metadata"].get("deletionTimestamp")
    assert client.get("persistentvolumes", "vol-1")["metadata"]["deletionTimestamp"]
    cm = client.create(config_map("c"))
    gone = client.delete("configmaps", "c", "default", resource_version=cm["metadata"]["resourceVersion"])
    assert gone["metadata"]["name"] == "c"


def test_delete_uid_precondition_and_propagation_policy(api_server, client: Client) -> None:
    client.create(config_map("c"))
    resp = raw(api_server, "DELETE", "/api/v1/namespaces/default/configmaps/c",
               json={"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "not-the-uid"}})
    assert resp.status_code == 409
    fg = raw(api_server, "DELETE", "/api/v1/namespaces/default/configmaps/c", json={"propagationPolicy": "Foreground"})
    assert fg.status_code == 200
    obj = client.get("configmaps", "c", "default")
    assert obj["metadata"]["finalizers"] == ["foregroundDeletion"] and obj["metadata"]["deletionTimestamp"]
    bad = raw(api_server, "DELETE", "/api/v1/namespaces/default/configmaps/c", json={"propagationPolicy": "Sideways"})
    assert bad.status_code == 400


def test_delete_collection(api_server, client: Client) -> None:
    client.create(config_map("a", labels={"x": "1"}))
    client.create(config_map("b", labels={"x": "2"}))
    resp = raw(api_server, "DELETE", "/api/v1/namespaces/default/configmaps?labelSelector=x%3D1")
    assert resp.status_code == 200
    assert [o["metadata"]["name"] for o in client.list("configmaps", "default")[0]] == ["b"]


def test_dry_run_stores_nothing(api_server, client: Client) -> None:
    resp = raw(api_server, "POST", "/api/v1/namespaces/default/configmaps?dryRun=All", json=config_map("d"))
    assert resp.status_code == 201
    # K9: the answer carries what the store would add, as kube-apiserver's dry run does, but no
    # resourceVersion (kubectl create --dry-run=server -o yaml shows uid and creationTimestamp).
    meta = resp.json()["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and "generation" not in meta  # none for ConfigMaps
    assert "resourceVersion" not in meta
    with pytest.raises(NotFound):
        client.get("configmaps", "d", "default")


@pytest.mark.parametrize("path", [
    "/api/v1/nothings", "/apis/apps/v1/persistentvolumes", "/api/v1/namespaces/x/persistentvolumes",
    "/api/v1/persistentvolumeclaims/name", "/nope", "/api/v1/namespaces/x/configmaps/a/b/c",
])
def test_unknown_paths_are_404_status(api_server, path: str) -> None:
    resp = raw(api_server, "GET", path)
    assert resp.status_code == 404
    assert resp.json()["kind"] == "Status" and resp.json()["code"] == 404


def test_apps_group_paths(client: Client) -> None:
    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "serviceName": "web", "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
    }
    client.create(sts)
    assert client.get("statefulsets", "web", "default")["apiVersion"] == "apps/v1"
