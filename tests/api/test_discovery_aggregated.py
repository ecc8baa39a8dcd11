"""Aggregated discovery (apidiscovery.k8s.io/v2, Kubernetes 1.30+'s default): /api and /apis answer every
group's resources in one document to a client that asks for it, the same resources the per-group-version
documents list; kubectl 1.37 with a cold cache then discovers in two requests, and kubectl 1.20 (which does
not ask for it) keeps the legacy documents."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx

from storage.apiserver.server import RunningServer
from support import kubectl_binary

# What client-go sends (discovery/aggregated_discovery.go): v2, then v2beta1, then the legacy documents.
KUBECTL_ACCEPT = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                  "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")


def _legacy_form(version_entry: dict[str, Any], group: str, version: str) -> list[dict[str, Any]]:
    """An aggregated version's resources as the legacy APIResourceList lists them (what client-go's
    SplitGroupsAndResources makes of them)."""
    out = []
    for r in version_entry["resources"]:
        kind = r["responseKind"]
        entry = {"name": r["resource"], "singularName": r["singularResource"],
                 "namespaced": r["scope"] == "Namespaced", "kind": kind["kind"], "verbs": r["verbs"],
                 **({"shortNames": r["shortNames"]} if r.get("shortNames") else {}),
                 **({"categories": r["categories"]} if r.get("categories") else {})}
        assert (kind["group"], kind["version"]) == (group, version), r
        out.append(entry)
        for sub in r.get("subresources") or []:
            sub_kind = sub["responseKind"]
            out.append({"name": f"{r['resource']}/{sub['subresource']}", "namespaced": entry["namespaced"],
                        "kind": sub_kind["kind"], "verbs": sub["verbs"],
                        "gv": (sub_kind["group"], sub_kind["version"])})
    return out


def _legacy_doc_form(doc: dict[str, Any], group: str, version: str) -> list[dict[str, Any]]:
    out = []
    for r in doc["resources"]:
        if "/" in r["name"]:
            out.append({"name": r["name"], "namespaced": r["namespaced"], "kind": r["kind"], "verbs": r["verbs"],
                        "gv": (r.get("group", group), r.get("version", version))})
        else:
            out.append({k: v for k, v in r.items() if k not in ("group", "version")})
    return out


def test_aggregated_documents_list_what_the_legacy_ones_do(http: httpx.Client) -> None:
    apis = http.get("/apis", headers={"Accept": KUBECTL_ACCEPT})
    assert apis.status_code == 200
    assert apis.headers["content-type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    body = apis.json()
    assert body["kind"] == "APIGroupDiscoveryList" and body["apiVersion"] == "apidiscovery.k8s.io/v2"
    legacy_groups = http.get("/apis").json()
    assert legacy_groups["kind"] == "APIGroupList"
    assert [i["metadata"]["name"] for i in body["items"]] == [g["name"] for g in legacy_groups["groups"]]
    checked = 0
    for item, group in zip(body["items"], legacy_groups["groups"]):
        assert [v["version"] for v in item["versions"]] == [v["version"] for v in group["versions"]]
        assert group["preferredVersion"]["version"] == item["versions"][0]["version"]  # preferred first
        for entry in item["versions"]:
            assert entry["freshness"] == "Current"
            name, version = item["metadata"]["name"], entry["version"]
            legacy = http.get(f"/apis/{name}/{version}").json()
            assert _legacy_form(entry, name, version) == _legacy_doc_form(legacy, name, version)
            checked += 1
    assert checked >= 20  # every group-version, metrics.k8s.io included

    by_name = {i["metadata"]["name"]: i for i in body["items"]}
    deployments = next(r for r in by_name["apps"]["versions"][0]["resources"] if r["resource"] == "deployments")
    assert deployments["scope"] == "Namespaced" and deployments["shortNames"] == ["deploy"]
    assert deployments["categories"] == ["all"]
    assert {"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": ["get", "patch", "update"]} in deployments["subresources"]
    assert [v["version"] for v in by_name["autoscaling"]["versions"]] == ["v2", "v1"]
    assert "metrics.k8s.io" in by_name

    core = http.get("/api", headers={"Accept": KUBECTL_ACCEPT})
    assert core.headers["content-type"].endswith(";as=APIGroupDiscoveryList")
    [core_item] = core.json()["items"]
    assert core_item["metadata"]["name"] == "" and [v["version"] for v in core_item["versions"]] == ["v1"]
    pods = next(r for r in core_item["versions"][0]["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    eviction = next(s for s in pods["subresources"] if s["subresource"] == "eviction")
    assert eviction["responseKind"] == {"group": "policy", "version": "v1", "kind": "Eviction"}
    assert _legacy_form(core_item["versions"][0], "", "v1") == _legacy_doc_form(http.get("/api/v1").json(), "", "v1")

    beta = http.get("/apis", headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"})
    assert beta.json()["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    plain = http.get("/apis", headers={"Accept": "application/json, application/json;g=apidiscovery.k8s.io;v=v2;"
                                                 "as=APIGroupDiscoveryList"})
    assert plain.json()["kind"] == "APIGroupList"  # the client's first choice wins


def _kubectl(server: RunningServer, version: str, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = str(cache.parent)
    return subprocess.run([kubectl_binary(version), "--kubeconfig", str(server.kubeconfig), "--cache-dir",
                           str(cache), *args], capture_output=True, text=True, timeout=120, env=env)


# A GET of one group-version's legacy document (/api/v1, /apis/apps/v1), as kubectl logs it at -v=6.
_GROUP_VERSION_GET = re.compile(r'(?:url="|GET )https://[^/\s]+/(?:api/v1|apis/[^/\s?"]+/[^/\s?"]+)(?:\?[^"\s]*)?["\s]')


def test_kubectl_discovers_in_two_requests_and_both_kubectls_see_the_same_resources(
        module_server: RunningServer, tmp_path: Path) -> None:
    fresh = _kubectl(module_server, "1.37", tmp_path / "cache137", "get", "deployments", "-v=6")
    assert fresh.returncode == 0, fresh.stderr
    assert re.search(r'url="https://[^/]+/apis\?timeout=\d+s" status="200 OK"', fresh.stderr), fresh.stderr
    assert not _GROUP_VERSION_GET.search(fresh.stderr), fresh.stderr

    old = _kubectl(module_server, "1.20", tmp_path / "cache120", "get", "deployments", "-v=6")
    assert old.returncode == 0, old.stderr
    assert _GROUP_VERSION_GET.search(old.stderr), old.stderr  # 1.20 reads the legacy documents

    names = {}
    for version in ("1.37", "1.20"):
        listed = _kubectl(module_server, version, tmp_path / f"names{version}", "api-resources", "-o", "name")
        assert listed.returncode == 0, listed.stderr
        names[version] = sorted(listed.stdout.split())
    assert names["1.37"] == names["1.20"] and "deployments.apps" in names["1.37"]
