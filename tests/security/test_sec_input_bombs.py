"""Issue 8: size, nesting and alias bombs against a real API server and the real ``stowage`` CLI.

Every bomb must end in a 4xx ``Status`` that names the limit, with nothing
stored and the server still answering (LIST of the attacked kind included).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil
import pytest

from serverutil import running_server
from storage.api import registry
from storage.api.limits import MAX_DEPTH, MAX_OBJECT_BYTES, MAX_REQUEST_BYTES
from storage.apiserver.server import RunningServer
from support import stowage_executable

MiB = 1024 * 1024
PATCH_TYPES = ("application/merge-patch+json", "application/json-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as srv:
        yield srv


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=120, verify=server.verify()) as c:
        yield c


# What the server makes itself in every cluster (SEMANTICS N1, the root CA and default service accounts).
_SERVER_MADE = {"kube-root-ca.crt", "kubernetes", "default"}


def _user_objects(server: RunningServer, plural: str) -> list[dict[str, Any]]:
    """Stored objects of ``plural`` other than those the server makes itself."""
    return [o for o in server.store.list(plural)[0] if o["metadata"]["name"] not in _SERVER_MADE]


def collection(info: registry.ResourceInfo) -> str:
    base = f"/api/{info.api_version}" if not info.group else f"/apis/{info.api_version}"
    return f"{base}/namespaces/default/{info.plural}" if info.namespaced else f"{base}/{info.plural}"


def nested_json(levels: int, leaf: str = '"x"') -> str:
    return '{"a":' * levels + leaf + "}" * levels


def deep_object(info: registry.ResourceInfo, name: str, levels: int) -> str:
    """A plausible object of ``info``'s kind carrying an unknown field nested ``levels`` deep."""
    head = json.dumps({"apiVersion": info.api_version, "kind": info.kind, "metadata": {"name": name}})
    return head[:-1] + ', "deep": ' + nested_json(levels) + "}"


def assert_status(response: httpx.Response, code: int, *words: str) -> dict[str, Any]:
    assert response.status_code == code, (response.status_code, response.text[:500])
    body = response.json()
    assert body["kind"] == "Status" and body["code"] == code, body
    for word in words:
        assert word in body["message"], body["message"]
    return body


# ---- size ----------------------------------------------------------------------------------

def test_a_20_mib_configmap_is_refused_with_413_naming_the_limit(http: httpx.Client, server: RunningServer) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                       "data": {"blob": "x" * (20 * MiB)}})
    response = http.post("/api/v1/namespaces/default/configmaps", content=body,
                         headers={"Content-Type": "application/json"})
    assert_status(response, 413, str(MAX_REQUEST_BYTES))
    assert _user_objects(server, "configmaps") == []


def test_a_streamed_body_without_length_is_cut_at_the_limit(http: httpx.Client, server: RunningServer) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"blob":"'
        for _ in range(20):
            sent += MiB
            yield b"x" * MiB
        yield b'"}}'

    try:
        response = http.post("/api/v1/namespaces/default/configmaps", content=chunks(),
                             headers={"Content-Type": "application/json"})
    except httpx.TransportError:
        response = None  # the server may close the connection once it has answered; nothing may be stored either way
    if response is not None:
        assert_status(response, 413, str(MAX_REQUEST_BYTES))
    assert _user_objects(server, "configmaps") == []


def test_stored_objects_are_limited_to_etcds_request_size_on_every_write(http: httpx.Client, server: RunningServer) -> None:
    over = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "over"}, "data": {"blob": "x" * (2 * MiB)}}
    assert_status(http.post("/api/v1/namespaces/default/configmaps", json=over), 413, str(MAX_OBJECT_BYTES))
    assert _user_objects(server, "configmaps") == []

    half = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "x" * MiB}}
    assert http.post("/api/v1/namespaces/default/configmaps", json=half).status_code == 201
    path = "/api/v1/namespaces/default/configmaps/cm"
    before = http.get(path).json()["metadata"]["resourceVersion"]
    grow = {"data": {"b": "y" * MiB}}  # each body is under 3 MiB; the result is over 1.5 MiB
    assert_status(http.patch(path, json=grow, headers={"Content-Type": "application/merge-patch+json"}),
                  413, str(MAX_OBJECT_BYTES))
    assert_status(http.put(path, json={**half, "data": {"a": "x" * MiB, "b": "y" * MiB}}), 413, str(MAX_OBJECT_BYTES))
    # A JSON patch that copies the object into itself over and over is stopped before it is built.
    doubling = [{"op": "copy", "from": "/data", "path": f"/metadata/annotations{i}"} for i in range(40)]
    response = http.patch(path, json=doubling, headers={"Content-Type": "application/json-patch+json"})
    assert 400 <= response.status_code < 500, response.text[:300]
    assert http.get(path).json()["metadata"]["resourceVersion"] == before


# ---- nesting -------------------------------------------------------------------------------

@pytest.mark.parametrize("levels", [253, 10_000])
def test_deep_nesting_is_a_4xx_on_every_write_of_every_kind(http: httpx.Client, server: RunningServer, levels: int) -> None:
    for info in registry.RESOURCES:
        base = collection(info)
        body = deep_object(info, "deep", levels)
        response = http.post(base, content=body, headers={"Content-Type": "application/json"})
        assert_status(response, 400, f"nested more than {MAX_DEPTH} levels")
        if not info.stored:  # access reviews are only ever created: there is nothing to update or patch
            continue
        response = http.put(f"{base}/deep", content=body, headers={"Content-Type": "application/json"})
        assert_status(response, 400, f"nested more than {MAX_DEPTH} levels")
        for content_type in PATCH_TYPES:
            if info.crd and content_type == "application/strategic-merge-patch+json":
                # A custom resource has no strategic merge patch (VS12): refused before the body is read.
                response = http.patch(f"{base}/deep", content=nested_json(levels), headers={"Content-Type": content_type})
                assert_status(response, 415, "accepted media types include")
                continue
            patch = ("[" + json.dumps({"op": "add", "path": "/deep", "value": {}})[:-3] + nested_json(levels) + "}]"
                     if content_type.endswith("json-patch+json") else nested_json(levels))
            if content_type.endswith("yaml"):
                patch = "{a: " * levels + "x" + "}" * levels  # flow-style YAML nests without indentation
            response = http.patch(f"{base}/deep", content=patch, headers={"Content-Type": content_type},
                                  params={"fieldManager": "bombs"})  # an apply names its manager (SSA1)
            assert 400 <= response.status_code < 500, (info.plural, content_type, response.status_code, response.text[:300])
            assert str(MAX_DEPTH) in response.json()["message"], response.json()["message"]
        # Nothing was stored (the server's own objects, such as the `kubernetes` Service, were there before).
        assert [o for o in server.store.list(info.plural)[0] if o["metadata"]["name"] == "deep"] == [], info.plural
    # The attacked kind still lists.
    assert http.get("/api/v1/pods").status_code == 200


def test_a_patch_that_builds_an_over_deep_object_from_a_shallow_body_is_refused(http: httpx.Client) -> None:
    level60 = json.loads(nested_json(60))
    # A ControllerRevision's data is free-form (unknown fields elsewhere are dropped, managedFields are checked).
    revision = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "cr"}, "revision": 1,
                "data": level60}
    collection = "/apis/apps/v1/namespaces/default/controllerrevisions"
    assert http.post(collection, json=revision).status_code == 201
    # Each body is about 60 levels deep; added under a path already 60 deep, the object would be ~120 deep.
    path = f"{collection}/cr"
    pointer = "/data" + "/a" * 59
    response = http.patch(path, json=[{"op": "add", "path": pointer + "/b", "value": level60}],
                          headers={"Content-Type": "application/json-patch+json"})
    assert_status(response, 400, f"nested more than {MAX_DEPTH} levels")
    assert http.get(collection).status_code == 200


def test_a_pod_stored_before_the_limit_does_not_break_listing_pods(http: httpx.Client, server: RunningServer) -> None:
    """The 500 from the issue: a 253-level unknown field made every pod LIST fail (the JSON encoder's 255 cap)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "old-deep", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}], "deep": json.loads(nested_json(253))},
           "status": {"phase": "Pending"}}
    server.store.create("pods", pod)  # behind the API's back, as a database from before the limit would hold it
    for path in ("/api/v1/pods", "/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/pods/old-deep"):
        assert http.get(path).status_code == 200, path
    with http.stream("GET", "/api/v1/namespaces/default/pods", params={"watch": "1", "timeoutSeconds": "1"}) as r:
        first = next(r.iter_lines())
    assert json.loads(first)["object"]["metadata"]["name"] == "old-deep"


def test_an_apply_patch_alias_bomb_is_refused(http: httpx.Client, server: RunningServer) -> None:
    response = http.patch("/api/v1/namespaces/default/configmaps/bomb", content=alias_bomb(),
                          headers={"Content-Type": "application/apply-patch+yaml"}, params={"fieldManager": "bombs"})
    assert_status(response, 400, "excessive aliasing", str(MAX_REQUEST_BYTES))
    assert _user_objects(server, "configmaps") == []


# ---- the command line ----------------------------------------------------------------------

def alias_bomb(kind: str = "ConfigMap", name: str = "bomb") -> str:
    """A "billion laughs": 9 levels of 10 aliases each, about 1 KiB of YAML that expands to ~10^9 strings."""
    lines = [f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: {name}\nbomb:",
             '  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def run_measured(argv: list[str], cwd: Path) -> tuple[int, str, int]:
    """Run a command; its exit code, stderr and peak RSS in bytes (sampled every 20 ms)."""
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env["STOWAGE_DATA_DIR"] = str(cwd / "no-default-data-dir")
    proc = psutil.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env)
    peak = 0
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                peak = max(peak, proc.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
            try:
                proc.wait(timeout=0.02)
                break
            except psutil.TimeoutExpired:
                if time.monotonic() > deadline:  # a hang, not a slow run: the bomb was being expanded
                    raise AssertionError("the command was still running after two minutes") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    return proc.returncode, err.decode(), peak


@pytest.mark.parametrize("kind", ["ConfigMap", "Pod"])
def test_stowage_apply_refuses_an_alias_bomb_fast_and_with_bounded_memory(
    tmp_path: Path, server: RunningServer, kind: str,
) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(kind))
    code, err, peak = run_measured(
        [stowage_executable(), "apply", "-f", str(bomb), "--kubeconfig", str(server.kubeconfig)], tmp_path)
    assert code != 0
    assert "excessive aliasing" in err and str(MAX_REQUEST_BYTES) in err, err
    # The expanded document would be gigabytes; the CLI's whole interpreter stays far below that.
    assert peak < 250 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
    assert _user_objects(server, registry.by_kind(kind).plural) == []  # type: ignore[union-attr]


@pytest.mark.parametrize("levels", [253, 10_000])
def test_stowage_apply_refuses_deep_documents_with_a_clear_error(tmp_path: Path, server: RunningServer, levels: int) -> None:
    for suffix, text in (
        ("json", deep_object(registry.by_kind("ConfigMap"), "deep", levels)),  # type: ignore[arg-type]
        ("yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndeep: " + "{a: " * levels + "x" + "}" * levels + "\n"),
    ):
        path = tmp_path / f"deep.{suffix}"
        path.write_text(text)
        code, err, _ = run_measured(
            [stowage_executable(), "apply", "-f", str(path), "--kubeconfig", str(server.kubeconfig)], tmp_path)
        assert code != 0 and f"nested more than {MAX_DEPTH} levels" in err, err
        assert "Traceback" not in err and "RecursionError" not in err, err
    assert _user_objects(server, "configmaps") == []
