"""List paging over real HTTP: ``limit`` and ``continue`` as the Kubernetes API server answers them.

Rules (docs/semantics.md): C1 one snapshot across pages, C2 410 Expired past the store's history with
an inconsistent-continue token, C3 ``metadata.continue`` / ``remainingItemCount`` as Kubernetes sets
them, C4 bad ``limit`` or ``continue`` is a 400 naming it. Clients: httpx, the official kubernetes
Python client and the real kubectl, which pages every ``get`` (``--chunk-size``, 500 by default).
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from serverutil import running_server
from storage.apiserver.paging import EXPIRED_CONTINUE
from storage.apiserver.server import RunningServer
from support import kubectl_binary

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("paging")) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60, verify=server.verify()) as c:
        yield c


def ok(response: httpx.Response, code: int = 200) -> Any:
    assert response.status_code == code, response.text
    return response.json()


def namespace(http: httpx.Client, name: str) -> None:
    ok(http.post("/api/v1/namespaces", json={"metadata": {"name": name}}), 201)


def configmap(http: httpx.Client, ns: str, name: str, **labels: str) -> dict[str, Any]:
    body = {"metadata": {"name": name, "labels": labels}, "data": {"v": "0"}}
    return ok(http.post(f"/api/v1/namespaces/{ns}/configmaps", json=body), 201)  # type: ignore[no-any-return]


def pod(http: httpx.Client, ns: str, name: str) -> None:
    body = {"metadata": {"name": name}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}}
    ok(http.post(f"/api/v1/namespaces/{ns}/pods", json=body), 201)


def token(value: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))  # type: ignore[no-any-return]


def forge(**fields: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()


def key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def pages(http: httpx.Client, path: str, limit: int, accept: str = "application/json", **params: str) -> list[dict[str, Any]]:
    out = [ok(http.get(path, params={"limit": str(limit), **params}, headers={"Accept": accept}))]
    while out[-1]["metadata"].get("continue"):
        cont = out[-1]["metadata"]["continue"]
        out.append(ok(http.get(path, params={"limit": str(limit), "continue": cont, **params}, headers={"Accept": accept})))
    return out


def test_pages_across_namespaces_are_one_snapshot_whatever_changes_between_them_C1_C3(http: httpx.Client) -> None:
    for ns in ("snap-a", "snap-b"):
        namespace(http, ns)
        for i in range(4):
            configmap(http, ns, f"cm{i}")
    whole = ok(http.get("/api/v1/configmaps"))
    first = ok(http.get("/api/v1/configmaps", params={"limit": "3"}))
    assert first["kind"] == "ConfigMapList" and len(first["items"]) == 3
    assert first["metadata"]["resourceVersion"] == whole["metadata"]["resourceVersion"], "nothing wrote in between"
    assert first["metadata"]["remainingItemCount"] == len(whole["items"]) - 3
    last = first["items"][-1]["metadata"]
    assert token(first["metadata"]["continue"]) == {
        "v": "meta.k8s.io/v1", "rv": int(first["metadata"]["resourceVersion"]), "start": f"{last['namespace']}/{last['name']}\x00"}

    listed, page, mutated = list(first["items"]), first, False
    while page["metadata"].get("continue"):
        # Creates, deletes and updates between pages, at and after the cursor, each time.
        if not mutated:
            ok(http.delete("/api/v1/namespaces/snap-b/configmaps/cm1"))
            configmap(http, "snap-b", "cm1a")
            configmap(http, "snap-a", "cm9")
            changed = ok(http.get("/api/v1/namespaces/snap-b/configmaps/cm2"))
            ok(http.put("/api/v1/namespaces/snap-b/configmaps/cm2", json={**changed, "data": {"v": "changed"}}))
            mutated = True
        page = ok(http.get("/api/v1/configmaps", params={"limit": "3", "continue": page["metadata"]["continue"]}))
        assert page["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        if page["metadata"].get("continue"):
            assert len(page["items"]) == 3
            assert page["metadata"]["remainingItemCount"] == len(whole["items"]) - len(listed) - 3
        else:
            assert "remainingItemCount" not in page["metadata"]
        listed += page["items"]
    # Exactly the snapshot: every object once, as it was (same resourceVersion, same data).
    assert [key(o) for o in listed] == [key(o) for o in whole["items"]]
    assert listed == whole["items"]
    now = {key(o): o for o in ok(http.get("/api/v1/configmaps"))["items"]}
    assert ("snap-b", "cm1") not in now and ("snap-a", "cm9") in now and now[("snap-b", "cm2")]["data"] == {"v": "changed"}


def test_writers_running_alongside_never_make_a_page_skip_or_repeat_an_object_C1(
        http: httpx.Client, server: RunningServer) -> None:
    namespace(http, "churn")
    stable = {f"keep-{i}" for i in range(6)}
    for name in sorted(stable):
        configmap(http, "churn", name)
    stop, wrote = threading.Event(), threading.Event()

    def churn() -> None:  # creates and deletes around the stable objects until the pager is done (at most 300)
        with httpx.Client(base_url=server.url, headers=http.headers, timeout=60, verify=server.verify()) as writer:
            for i in range(300):
                if stop.is_set():
                    return
                configmap(writer, "churn", f"keep-{i % 6}x{i}")
                if i >= 2:
                    ok(writer.delete(f"/api/v1/namespaces/churn/configmaps/keep-{(i - 2) % 6}x{i - 2}"))
                wrote.set()

    writer = threading.Thread(target=churn)
    writer.start()
    path, listed = "/api/v1/namespaces/churn/configmaps", []
    try:
        params = {"limit": "1"}
        while True:
            assert wrote.wait(timeout=60), "the writer stopped"
            wrote.clear()  # every page is read after at least one more write
            listed.append(ok(http.get(path, params=params)))
            if not listed[-1]["metadata"].get("continue"):
                break
            params["continue"] = listed[-1]["metadata"]["continue"]
    finally:
        stop.set()
        writer.join()
    revision = int(listed[0]["metadata"]["resourceVersion"])
    names = [o["metadata"]["name"] for p in listed for o in p["items"]]
    assert len(names) == len(set(names)), "an object listed twice"
    assert stable <= set(names), "an object that existed unchanged throughout was skipped"
    assert names == sorted(names)
    assert all(int(o["metadata"]["resourceVersion"]) <= revision for p in listed for o in p["items"])
    assert {p["metadata"]["resourceVersion"] for p in listed} == {str(revision)}


def test_namespaced_selected_table_and_cluster_scoped_pages_C3(http: httpx.Client) -> None:
    namespace(http, "sel")
    for i in range(7):
        configmap(http, "sel", f"cm{i}", parity=str(i % 2))
    tables = pages(http, "/api/v1/namespaces/sel/configmaps", 2, TABLE, labelSelector="parity=1")
    assert all(t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1" for t in tables)
    assert [len(t["rows"]) for t in tables] == [2, 1]
    assert tables[0]["columnDefinitions"] and "remainingItemCount" not in tables[0]["metadata"], "a selector: no count"
    assert token(tables[0]["metadata"]["continue"])["start"] == "cm3\x00", "inside a namespace the key is the name"
    assert [r["object"]["metadata"]["name"] for t in tables for r in t["rows"]] == ["cm1", "cm3", "cm5"]
    # Metadata-only lists page the same way.
    partial = pages(http, "/api/v1/namespaces/sel/configmaps", 4, "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io")
    assert [len(p["items"]) for p in partial] == [4, 3] and partial[0]["metadata"]["remainingItemCount"] == 3
    # A cluster-scoped kind: the key is the name.
    names = [f"paging-ns-{i}" for i in range(3)]
    for name in names:
        namespace(http, name)
    everything = [n["metadata"]["name"] for n in ok(http.get("/api/v1/namespaces"))["items"]]
    listed = pages(http, "/api/v1/namespaces", 1)
    assert [n["metadata"]["name"] for p in listed for n in p["items"]] == everything and len(listed) == len(everything)
    assert token(listed[0]["metadata"]["continue"])["start"] == everything[0] + "\x00"
    # limit=0 is no limit, as in Kubernetes.
    assert "continue" not in ok(http.get("/api/v1/namespaces", params={"limit": "0"}))["metadata"]


def test_an_expired_continue_token_is_410_with_an_inconsistent_continue_token_C2(
        http: httpx.Client, server: RunningServer) -> None:
    namespace(http, "old")
    for i in range(5):
        configmap(http, "old", f"cm{i}")
    first = ok(http.get("/api/v1/namespaces/old/configmaps", params={"limit": "2"}))
    configmap(http, "old", "cm3a")  # written after the first page ...
    server.store.compact(0)  # ... and the history back to the first page forgotten
    gone = http.get("/api/v1/namespaces/old/configmaps", params={"limit": "2", "continue": first["metadata"]["continue"]})
    status = ok(gone, 410)
    assert (status["kind"], status["status"], status["reason"], status["code"]) == ("Status", "Failure", "Expired", 410)
    assert status["message"] == EXPIRED_CONTINUE
    inconsistent = token(status["metadata"]["continue"])
    assert inconsistent == {"v": "meta.k8s.io/v1", "rv": -1, "start": "cm1\x00"}
    # Continuing with it knowingly: the rest at the newest revision, new objects included.
    rest = [ok(http.get("/api/v1/namespaces/old/configmaps", params={"limit": "2", "continue": status["metadata"]["continue"]}))]
    assert int(rest[0]["metadata"]["resourceVersion"]) == server.store.current_revision()
    while rest[-1]["metadata"].get("continue"):
        rest.append(ok(http.get("/api/v1/namespaces/old/configmaps",
                                params={"limit": "2", "continue": rest[-1]["metadata"]["continue"]})))
    assert [o["metadata"]["name"] for p in rest for o in p["items"]] == ["cm2", "cm3", "cm3a", "cm4"]


@pytest.mark.parametrize(("params", "needle"), [
    ({"limit": "-1"}, "limit: Invalid value: -1"),
    ({"limit": "ten"}, 'limit: Invalid value: "ten"'),
    ({"limit": "1.5"}, 'limit: Invalid value: "1.5"'),
    ({"limit": "1", "continue": "not base64!"}, "invalid continue token: continue key is not valid"),
    ({"limit": "1", "continue": forge(v="meta.k8s.io/v2", rv=5, start="a/b\x00")}, "does not recognize this encoded version"),
    ({"limit": "1", "continue": forge(v="meta.k8s.io/v1", rv=0, start="a/b\x00")}, "incorrect encoded start resourceVersion"),
    ({"limit": "1", "continue": forge(v="meta.k8s.io/v1", rv=5, start="")}, "encoded start key empty"),
    ({"limit": "1", "continue": forge(v="meta.k8s.io/v1", rv=5, start="../../secrets/x\x00")}, "continue key is not valid"),
    ({"limit": "1", "continue": forge(v="meta.k8s.io/v1", rv=5, start="just-a-name\x00")}, "continue key is not valid"),
    ({"limit": "1", "continue": forge(v="meta.k8s.io/v1", rv="5", start="a/b\x00")}, "incorrect encoded start resourceVersion"),
    ({"limit": "1", "continue": forge(v="meta.k8s.io/v1", rv=10**12, start="a/b\x00")}, "invalid continue token"),
    ({"limit": "1", "continue": base64.urlsafe_b64encode(b"[1, 2]").decode().rstrip("=")}, "invalid continue token"),
    ({"limit": "1", "resourceVersion": "3", "continue": forge(v="meta.k8s.io/v1", rv=3, start="a/b\x00")},
     "specifying resource version is not allowed when using continue"),
])
def test_bad_limit_or_continue_is_400_naming_it_C4(http: httpx.Client, params: dict[str, str], needle: str) -> None:
    status = ok(http.get("/api/v1/configmaps", params=params), 400)
    assert status["reason"] == "BadRequest" and needle in status["message"], status["message"]
    field = "limit" if "limit:" in needle else "resource version" if "resource version" in needle else "continue"
    assert field in status["message"]


def test_a_tampered_token_changed_in_transit_is_refused_C4(http: httpx.Client) -> None:
    namespace(http, "tamper")
    for i in range(3):
        configmap(http, "tamper", f"cm{i}")
    issued = ok(http.get("/api/v1/namespaces/tamper/configmaps", params={"limit": "1"}))["metadata"]["continue"]
    for bad in (issued[:-2], issued + "=", issued.replace(issued[5], "*", 1), "A" + issued):
        status = ok(http.get("/api/v1/namespaces/tamper/configmaps", params={"limit": "1", "continue": bad}), 400)
        assert status["message"].startswith("invalid continue token: continue key is not valid"), status["message"]
    # A token of a list across namespaces does not fit a list inside one.
    across = ok(http.get("/api/v1/configmaps", params={"limit": "1"}))["metadata"]["continue"]
    ok(http.get("/api/v1/namespaces/tamper/configmaps", params={"limit": "1", "continue": across}), 400)


def test_the_kubernetes_client_pages_with_limit_and_continue_C1_C3(http: httpx.Client, server: RunningServer) -> None:
    namespace(http, "kclient")
    for i in range(5):
        configmap(http, "kclient", f"cm{i}")
    api_client = k8s_config.new_client_from_config(config_file=str(server.kubeconfig))
    try:
        core = k8s.CoreV1Api(api_client)
        in_ns = core.list_namespaced_config_map("kclient", limit=3)
        assert [c.metadata.name for c in in_ns.items] == ["cm0", "cm1", "cm2"]
        rest = core.list_namespaced_config_map("kclient", limit=100, _continue=in_ns.metadata._continue)
        assert [c.metadata.name for c in rest.items] == ["cm3", "cm4"] and rest.metadata._continue is None
        whole = core.list_config_map_for_all_namespaces()
        first = core.list_config_map_for_all_namespaces(limit=2)
        assert len(first.items) == 2 and first.metadata.remaining_item_count == len(whole.items) - 2
        seen, page = list(first.items), first
        while page.metadata._continue:
            configmap(http, "kclient", f"new-{len(seen)}")  # not in the snapshot
            page = core.list_config_map_for_all_namespaces(limit=2, _continue=page.metadata._continue)
            assert page.metadata.resource_version == first.metadata.resource_version
            seen += page.items
        assert [(c.metadata.namespace, c.metadata.name) for c in seen] == [
            (c.metadata.namespace, c.metadata.name) for c in whole.items]
        with pytest.raises(k8s.ApiException) as info:
            core.list_namespaced_config_map("kclient", limit=-2)
        assert info.value.status == 400
    finally:
        api_client.close()


def test_kubectl_get_pods_all_namespaces_in_chunks_shows_every_pod_once_C1(http: httpx.Client, server: RunningServer) -> None:
    expected = set()
    for ns in ("chunk-a", "chunk-b", "chunk-c"):
        namespace(http, ns)
        for i in range(3):
            pod(http, ns, f"web-{i}")
            expected.add((ns, f"web-{i}"))
    cache = Path(str(server.kubeconfig)).parent / "kube-cache"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    proc = subprocess.run([kubectl_binary(), "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(cache),
                           "get", "pods", "-A", "--chunk-size=2", "-v=6"],
                          capture_output=True, text=True, timeout=120, env=clean)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"] and sum(line.startswith("NAMESPACE") for line in lines) == 1
    shown = [tuple(line.split()[:2]) for line in lines[1:]]
    assert sorted(shown) == sorted(expected) and len(shown) == len(expected), proc.stdout
    requests = re.findall(r'url="[^"]*/api/v1/pods\?([^"]*)"', proc.stderr)
    assert len(requests) == 5 and all("limit=2" in r for r in requests), requests
    assert sum("continue=" in r for r in requests) == 4
