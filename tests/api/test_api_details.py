"""Details kubectl relies on: 404 Status details, dry-run delete from DeleteOptions, causes, defaults, categories."""
from __future__ import annotations

import json

import httpx

from storage.api.registry import RESOURCES


def call(api_server, method: str, path: str, body: object | None = None, **params: str) -> httpx.Response:
    return httpx.request(method, api_server.url + path, params=params, timeout=30,
                         content=json.dumps(body).encode() if body is not None else None,
                         headers={"Authorization": f"Bearer {api_server.token}", "Content-Type": "application/json"}, verify=api_server.verify())


def test_every_404_is_a_status_with_details(api_server) -> None:
    missing = call(api_server, "GET", "/api/v1/persistentvolumes/nothere").json()
    assert missing["reason"] == "NotFound" and missing["code"] == 404
    assert missing["details"] == {"name": "nothere", "kind": "persistentvolumes"}
    grouped = call(api_server, "GET", "/apis/apps/v1/namespaces/default/statefulsets/nothere").json()
    assert grouped["details"] == {"name": "nothere", "kind": "statefulsets", "group": "apps"}
    # No such resource or subresource: details present, name empty.
    for path in ("/api/v1/namespaces/default/pods/p/nothing", "/apis/nothing/v1/things", "/nowhere"):
        status = call(api_server, "GET", path).json()
        assert status["kind"] == "Status" and status["code"] == 404 and status["details"] == {}, path


def test_dry_run_delete_from_delete_options_keeps_the_object(api_server) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"a": "1"}}
    assert call(api_server, "POST", "/api/v1/namespaces/default/configmaps", cm).status_code == 201
    # kubectl delete --dry-run=server sends dryRun in the DeleteOptions body, not in the query.
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"], "propagationPolicy": "Background"}
    resp = call(api_server, "DELETE", "/api/v1/namespaces/default/configmaps/keep", options)
    assert resp.status_code == 200 and resp.json()["metadata"]["name"] == "keep"
    resp = call(api_server, "DELETE", "/api/v1/namespaces/default/configmaps", options)
    assert resp.status_code == 200 and [i["metadata"]["name"] for i in resp.json()["items"]] == ["keep"]
    assert call(api_server, "GET", "/api/v1/namespaces/default/configmaps/keep").status_code == 200
    # Without dryRun the same call deletes.
    assert call(api_server, "DELETE", "/api/v1/namespaces/default/configmaps/keep", {"kind": "DeleteOptions"}).status_code == 200
    assert call(api_server, "GET", "/api/v1/namespaces/default/configmaps/keep").status_code == 404


def test_invalid_causes_do_not_repeat_the_field(api_server) -> None:
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "bad"},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/x"},
                   "persistentVolumeReclaimPolicy": "Keep"}}
    status = call(api_server, "POST", "/api/v1/persistentvolumes", pv).json()
    assert status["code"] == 422
    # kubectl prints "<field>: <message>" for each cause, so the message must not start with the field.
    assert status["details"]["causes"] == [{
        "reason": "FieldValueNotSupported", "field": "spec.persistentVolumeReclaimPolicy",
        "message": 'Unsupported value: "Keep": supported values: "Delete", "Recycle", "Retain"',
    }]
    assert status["message"] == ('PersistentVolume "bad" is invalid: spec.persistentVolumeReclaimPolicy: '
                                 'Unsupported value: "Keep": supported values: "Delete", "Recycle", "Retain"')


def test_volume_with_only_a_name_is_an_empty_dir(api_server) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "scratch"},
           "spec": {"containers": [{"name": "c", "image": "busybox", "volumeMounts": [{"name": "tmp", "mountPath": "/t"}]}],
                    "volumes": [{"name": "tmp"}]}}
    resp = call(api_server, "POST", "/api/v1/namespaces/default/pods", pod)
    assert resp.status_code == 201, resp.text
    # Besides the service-account token volume that admission adds (kube-api-access-*).
    volumes = [v for v in resp.json()["spec"]["volumes"] if not v["name"].startswith("kube-api-access-")]
    assert volumes == [{"name": "tmp", "emptyDir": {}}]


def test_discovery_categories_and_short_names(api_server) -> None:
    entries = {}
    for path in ("/api/v1", "/apis/apps/v1", "/apis/storage.k8s.io/v1"):
        for r in call(api_server, "GET", path).json()["resources"]:
            entries[r["name"]] = r
    in_all = {name for name, r in entries.items() if "all" in r.get("categories", [])}
    served = {r.plural for r in RESOURCES}
    expected = {"pods", "services", "replicationcontrollers", "daemonsets", "deployments", "replicasets",
                "statefulsets"} & served
    assert in_all == expected
    short = {name: r.get("shortNames") for name, r in entries.items() if "/" not in name}
    assert short["persistentvolumes"] == ["pv"] and short["persistentvolumeclaims"] == ["pvc"]
    assert short["statefulsets"] == ["sts"] and short["storageclasses"] == ["sc"] and short["pods"] == ["po"]
