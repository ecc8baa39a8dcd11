"""?fieldValidation=Strict|Warn|Ignore on create, update and patch: unknown and duplicate fields."""
from __future__ import annotations

import json

import httpx
import pytest

PVS = "/api/v1/persistentvolumes"


def pv_body(name: str, **extra_spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": "/tmp/fv"}, **extra_spec}}


def send(api_server, method: str, path: str, body: object | bytes, mode: str | None = None,
         content_type: str = "application/json") -> httpx.Response:
    params = {"fieldValidation": mode} if mode else {}
    if content_type == "application/apply-patch+yaml":
        params["fieldManager"] = "test"  # required for apply (SSA1)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.request(method, api_server.url + path, params=params, content=data, timeout=30,
                         headers={"Authorization": f"Bearer {api_server.token}", "Content-Type": content_type}, verify=api_server.verify())


def test_strict_rejects_each_unknown_field_and_stores_nothing(api_server) -> None:
    body = pv_body("strict", foo="bar")
    body["spec"]["hostPath"]["bar"] = 1
    body["metadata"]["nickname"] = "x"
    resp = send(api_server, "POST", PVS, body, "Strict")
    assert resp.status_code == 400
    status = resp.json()
    assert status["kind"] == "Status" and status["reason"] == "BadRequest"
    assert status["message"].startswith(
        'PersistentVolume in version "v1" cannot be handled as a PersistentVolume: strict decoding error: ')
    for field in ("spec.foo", "spec.hostPath.bar", "metadata.nickname"):
        assert f'unknown field "{field}"' in status["message"]
    assert send(api_server, "GET", f"{PVS}/strict", b"").status_code == 404


def test_strict_names_duplicate_fields(api_server) -> None:
    raw = (b'{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"dup","name":"dup"},'
           b'"spec":{"capacity":{"storage":"1Gi"},"accessModes":["ReadWriteOnce"],"hostPath":{"path":"/a"},'
           b'"volumeMode":"Filesystem","volumeMode":"Block"}}')
    resp = send(api_server, "POST", PVS, raw, "Strict")
    assert resp.status_code == 400
    assert 'duplicate field "metadata.name"' in resp.json()["message"]
    assert 'duplicate field "spec.volumeMode"' in resp.json()["message"]
    # Ignore: the last value wins, as Go's decoder (and orjson) keep it.
    ok = send(api_server, "POST", PVS, raw, "Ignore")
    assert ok.status_code == 201 and ok.json()["spec"]["volumeMode"] == "Block"


def test_warn_drops_unknown_fields_with_a_warning_header(api_server) -> None:
    resp = send(api_server, "POST", PVS, pv_body("warned", foo="bar"), "Warn")
    assert resp.status_code == 201
    assert resp.headers.get_list("warning") == ['299 - "unknown field \\"spec.foo\\""']
    stored = send(api_server, "GET", f"{PVS}/warned", b"").json()
    assert "foo" not in stored["spec"]  # Kubernetes never stores a field its schema lacks


def test_default_is_warn(api_server) -> None:
    resp = send(api_server, "POST", PVS, pv_body("default", foo="bar"))
    assert resp.status_code == 201 and "foo" not in resp.json()["spec"]
    assert resp.headers.get_list("warning") == ['299 - "unknown field \\"spec.foo\\""']


def test_ignore_drops_silently(api_server) -> None:
    resp = send(api_server, "POST", PVS, pv_body("ignored", foo="bar"), "Ignore")
    assert resp.status_code == 201 and "foo" not in resp.json()["spec"]
    assert "warning" not in resp.headers


def test_known_fields_give_no_warning(api_server) -> None:
    resp = send(api_server, "POST", PVS, pv_body("clean", volumeMode="Filesystem"), "Strict")
    assert resp.status_code == 201 and "warning" not in resp.headers


def test_update_and_patches_are_checked_too(api_server) -> None:
    created = send(api_server, "POST", PVS, pv_body("upd"), "Strict").json()
    created["spec"]["foo"] = 1
    resp = send(api_server, "PUT", f"{PVS}/upd", created, "Strict")
    assert resp.status_code == 400 and 'unknown field "spec.foo"' in resp.json()["message"]
    for content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        patch = {"spec": {"hostPath": {"bogus": True}}}
        resp = send(api_server, "PATCH", f"{PVS}/upd", patch, "Strict", content_type)
        assert resp.status_code == 400, content_type
        assert 'unknown field "spec.hostPath.bogus"' in resp.json()["message"]
    resp = send(api_server, "PATCH", f"{PVS}/upd", [{"op": "add", "path": "/spec/zzz", "value": 1}], "Warn",
                "application/json-patch+json")
    assert resp.status_code == 200 and "zzz" not in resp.json()["spec"]
    assert resp.headers.get_list("warning") == ['299 - "unknown field \\"spec.zzz\\""']
    dup = b'{"metadata":{"labels":{"a":"1","a":"2"}}}'
    resp = send(api_server, "PATCH", f"{PVS}/upd", dup, "Strict", "application/merge-patch+json")
    assert resp.status_code == 400 and 'duplicate field "metadata.labels.a"' in resp.json()["message"]


@pytest.mark.parametrize("mode", ["strict", "Loose"])
def test_unknown_mode_is_400(api_server, mode: str) -> None:
    resp = send(api_server, "POST", PVS, pv_body("mode"), mode)
    assert resp.status_code == 400 and "fieldValidation" in resp.json()["message"]


def test_server_side_apply_yaml_is_checked(api_server) -> None:
    doc = (b"apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: ssa\nspec:\n  capacity: {storage: 1Gi}\n"
           b"  accessModes: [ReadWriteOnce]\n  hostPath: {path: /x}\n  volumeMode: Filesystem\n"
           b"  volumeMode: Block\n  shade: blue\n")
    resp = send(api_server, "PATCH", f"{PVS}/ssa", doc, "Strict", "application/apply-patch+yaml")
    assert resp.status_code == 400
    assert 'duplicate field "spec.volumeMode"' in resp.json()["message"]
    assert 'unknown field "spec.shade"' in resp.json()["message"]
    resp = send(api_server, "PATCH", f"{PVS}/ssa", doc, "Ignore", "application/apply-patch+yaml")
    assert resp.status_code in (200, 201) and resp.json()["spec"]["volumeMode"] == "Block"
