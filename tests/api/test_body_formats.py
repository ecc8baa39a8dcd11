"""Request body formats as kube-apiserver reads them: YAML bodies (typed as sigs.k8s.io/yaml types them),
415 for formats it does not read, JSON patch failures that name a path and never show the object, and
metadata timestamps that must be RFC 3339 (or null)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx

from storage.apiserver.server import RunningServer
from support import kubectl_binary

_CM = "/api/v1/namespaces/default/configmaps"
_YAML = {"Content-Type": "application/yaml"}
_UNKNOWN_FORMAT = ("the body of the request was in an unknown format - accepted media types include: "
                   "application/json, application/yaml, application/vnd.kubernetes.protobuf")


def _comparable(obj: dict) -> dict:
    meta = {k: v for k, v in obj["metadata"].items()
            if k not in ("name", "uid", "resourceVersion", "creationTimestamp", "managedFields")}
    return {**obj, "metadata": meta}


def test_a_yaml_create_reads_back_as_the_same_json_create(http: httpx.Client) -> None:
    as_json = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bf-json", "labels": {"a": "b"}},
               "data": {"mode": "0777", "switch": "on", "answer": "yes", "num": "1e3"}}
    assert http.post(_CM, json=as_json).status_code == 201
    as_yaml = """apiVersion: v1
kind: ConfigMap
metadata:
  name: bf-yaml
  labels: {a: b}
  creationTimestamp: null
data:
  mode: "0777"
  switch: 'on'
  answer: "yes"
  num: "1e3"
"""
    r = http.post(_CM, content=as_yaml, headers=_YAML)
    assert r.status_code == 201, r.text
    got = http.get(f"{_CM}/bf-yaml").json()
    assert _comparable(got) == _comparable(http.get(f"{_CM}/bf-json").json())
    assert got["data"] == {"mode": "0777", "switch": "on", "answer": "yes", "num": "1e3"}

    # PUT takes YAML too.
    replaced = as_yaml.replace('  mode: "0777"', '  mode: "0644"\n  x: plain text')
    r = http.put(f"{_CM}/bf-yaml", content=replaced, headers={"Content-Type": "application/yaml; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["mode"] == "0644" and r.json()["data"]["x"] == "plain text"


def test_unquoted_yaml_booleans_and_numbers_are_typed_as_kubernetes_types_them(http: httpx.Client) -> None:
    # sigs.k8s.io/yaml (go-yaml v2): an unquoted `yes`/`on` is a boolean, `0777` an octal number; a ConfigMap's
    # data holds strings only, so Kubernetes' decoder refuses both, naming the field.
    for value, kind in (("yes", "bool"), ("on", "bool"), ("0777", "number")):
        body = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bf-typed\ndata:\n  k: {value}\n"
        r = http.post(_CM, content=body, headers=_YAML)
        assert r.status_code == 400, (value, r.text)
        assert r.json()["message"] == ('ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot '
                                       f'unmarshal {kind} into Go struct field ConfigMap.data of type string'), r.text
    # Where a number belongs, the YAML number is one; a timestamp-like value stays a string.
    body = """apiVersion: v1
kind: ConfigMap
metadata:
  name: bf-typed
  annotations: {when: 2024-01-01T00:00:00Z}
"""
    r = http.post(_CM, content=body, headers=_YAML)
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["annotations"] == {"when": "2024-01-01T00:00:00Z"}


def test_a_yaml_body_with_several_documents_is_read_as_its_first(http: httpx.Client) -> None:
    """kube-apiserver converts a YAML body with go-yaml's Unmarshal, which reads the first document and
    never parses the rest (even a broken one)."""
    two = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bf-two-a}\n---\napiVersion: v1\nkind: ConfigMap\n" \
          "metadata: {name: bf-two-b}\n---\n{ not: [yaml\n"
    r = http.post(_CM, content=two, headers=_YAML)
    assert r.status_code == 201 and r.json()["metadata"]["name"] == "bf-two-a", r.text
    assert http.get(f"{_CM}/bf-two-b").status_code == 404


def test_an_apply_patch_is_typed_as_a_yaml_body(http: httpx.Client) -> None:
    """An apply patch's YAML goes through the same conversion as a YAML create: ``yes`` is a boolean, so a
    ConfigMap value written that way is refused as in Kubernetes; no base-60 numbers, no dates."""
    url = f"{_CM}/bf-applied?fieldManager=bf"
    apply = {"Content-Type": "application/apply-patch+yaml"}
    r = http.patch(url, content="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bf-applied}\ndata: {a: yes}\n",
                   headers=apply)
    assert r.status_code in (400, 422), r.text
    assert http.get(f"{_CM}/bf-applied").status_code == 404
    # YAML 1.1 reads 1:20 as base 60 (80) and 2024-01-01 as a date; go-yaml keeps both as text.
    r = http.patch(url, content="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bf-applied}\n"
                                "data: {a: 'yes', t: 1:20, d: 2024-01-01}\n", headers=apply)
    assert r.status_code == 201, r.text
    assert r.json()["data"] == {"a": "yes", "t": "1:20", "d": "2024-01-01"}


def test_yaml_bodies_that_are_not_one_object_are_400(http: httpx.Client) -> None:
    for body in ("- a\n- b\n", "just text\n", "~\n"):
        r = http.post(_CM, content=body, headers=_YAML)
        assert r.status_code == 400 and "must be a JSON object" in r.json()["message"], (body, r.text)
    r = http.post(_CM, content="metadata: {name: [\n", headers=_YAML)
    assert r.status_code == 400 and "not valid YAML" in r.json()["message"], r.text
    r = http.post(_CM, content="", headers=_YAML)
    assert r.status_code == 400, r.text


def test_yaml_bodies_keep_the_depth_and_alias_limits(http: httpx.Client) -> None:
    deep = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bf-deep}\nx: " + "{a: " * 150 + "1" + "}" * 150 + "\n"
    r = http.post(_CM, content=deep, headers=_YAML)
    assert r.status_code == 400 and "nested more than 100 levels" in r.json()["message"], r.text
    bomb = "a: &a [" + ",".join(["x" * 1000] * 10) + "]\n"
    for level in "bcdefgh":
        bomb += f"{level}: &{level} [" + ",".join([f"*{chr(ord(level) - 1)}"] * 10) + "]\n"
    r = http.post(_CM, content=bomb, headers=_YAML)
    assert r.status_code == 400 and "excessive aliasing" in r.json()["message"], r.text


def test_unknown_body_formats_are_415_with_a_status(http: httpx.Client) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bf-415"}})
    for content_type in ("text/plain", "application/xml", "application/x-www-form-urlencoded"):
        for method, path in (("POST", _CM), ("PUT", f"{_CM}/bf-415")):
            r = http.request(method, path, content=body, headers={"Content-Type": content_type})
            assert r.status_code == 415, (content_type, method, r.text)
            status = r.json()
            assert (status["kind"], status["status"], status["reason"], status["code"], status["message"]) == (
                "Status", "Failure", "UnsupportedMediaType", 415, _UNKNOWN_FORMAT), r.text
    r = http.patch(f"{_CM}/bf-415", content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType", r.text
    # JSON with a charset, and a body without any Content-Type, are still JSON.
    r = http.post(_CM, content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text
    r = http.post(_CM, content=body.replace("bf-415", "bf-no-type"))
    assert r.status_code == 201, r.text


def test_a_failed_json_patch_names_the_path_and_never_shows_the_object(http: httpx.Client) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bf-pm", "labels": {"keep": "me"}},
              "stringData": {"password": "hunter2-secret-value"}}
    assert http.post("/api/v1/namespaces/default/secrets", json=secret).status_code == 201
    path = "/api/v1/namespaces/default/secrets/bf-pm"
    for patch, message in (
        ([{"op": "add", "path": "/metadata/finalizers/5", "value": "x"}],
         'add operation does not apply: doc is missing path: "/metadata/finalizers/5": missing value'),
        ([{"op": "replace", "path": "/data/nope", "value": "eA=="}],
         "replace operation does not apply: doc is missing key: /data/nope: missing value"),
        ([{"op": "test", "path": "/data/password", "value": "eA=="}], "testing value /data/password failed: test failed"),
        ([{"op": "remove", "path": "/metadata/labels/absent"}],
         "error in remove for path: '/metadata/labels/absent': Unable to remove nonexistent key: absent: missing value"),
    ):
        r = http.patch(path, json=patch, headers={"Content-Type": "application/json-patch+json"})
        assert r.status_code == 422, r.text
        assert (r.json()["reason"], r.json()["message"]) == ("Invalid", message), r.text
        for secret_part in ("hunter2", "aHVudGVyMi", "keep", "bf-pm", "{'"):
            assert secret_part not in r.text, (secret_part, r.text)
    r = http.patch(path, json=["not an operation"], headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 400, r.text


def test_metadata_timestamps_must_be_rfc3339_or_null(http: httpx.Client) -> None:
    made = http.post(_CM, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bf-time"}})
    assert made.status_code == 201, made.text
    created_at = made.json()["metadata"]["creationTimestamp"]
    garbage = ('ConfigMap in version "v1" cannot be handled as a ConfigMap: metadata.creationTimestamp: parsing time '
               '"garbage" as "2006-01-02T15:04:05Z07:00": cannot parse "garbage" as "2006"')

    r = http.post(_CM, json={"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "bf-time2", "creationTimestamp": "garbage"}})
    assert r.status_code == 400 and r.json()["message"] == garbage, r.text
    r = http.post(_CM, content="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bf-time2\n"
                               "  deletionTimestamp: yesterday\n", headers=_YAML)
    assert r.status_code == 400 and "metadata.deletionTimestamp: parsing time \"yesterday\"" in r.json()["message"]

    current = http.get(f"{_CM}/bf-time").json()
    r = http.put(f"{_CM}/bf-time", json={**current, "metadata": {**current["metadata"], "creationTimestamp": "2024-13-01T00:00:00Z"}})
    assert r.status_code == 400 and "metadata.creationTimestamp" in r.json()["message"], r.text

    r = http.patch(f"{_CM}/bf-time", json={"metadata": {"creationTimestamp": "garbage"}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422 and r.json()["reason"] == "Invalid", r.text
    assert "metadata.creationTimestamp: parsing time" in r.json()["message"], r.text
    assert http.get(f"{_CM}/bf-time").json()["metadata"]["creationTimestamp"] == created_at

    # null (kubectl sends it with every object it built) and valid times are fine; the server keeps its own.
    r = http.post(_CM, json={"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "bf-time3", "creationTimestamp": None}})
    assert r.status_code == 201, r.text
    r = http.post(_CM, json={"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "bf-time4", "creationTimestamp": "2020-01-01T00:00:00.5+01:00"}})
    assert r.status_code == 201 and r.json()["metadata"]["creationTimestamp"] != "2020-01-01T00:00:00.5+01:00", r.text
    r = http.patch(f"{_CM}/bf-time", json={"metadata": {"creationTimestamp": None, "labels": {"x": "y"}}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text


def test_kubectl_shows_the_json_patch_failure(module_server: RunningServer, tmp_path: Path, http: httpx.Client) -> None:
    assert http.post(_CM, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bf-kubectl"},
                                "data": {"token": "do-not-print-me"}}).status_code == 201
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    r = subprocess.run([kubectl_binary(), "--kubeconfig", str(module_server.kubeconfig), "--cache-dir",
                        str(tmp_path / "cache"), "patch", "cm", "bf-kubectl", "--type=json", "-p",
                        '[{"op":"add","path":"/metadata/finalizers/5","value":"x"}]'],
                       capture_output=True, text=True, timeout=120, env=clean)
    assert r.returncode != 0
    assert 'doc is missing path: "/metadata/finalizers/5": missing value' in r.stderr, r.stderr
    assert "do-not-print-me" not in r.stderr and "{'" not in r.stderr, r.stderr
