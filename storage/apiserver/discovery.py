"""Discovery documents kubectl and the kubernetes client read before anything else.

Built once from the registry: they never change while the server runs.
"""
from __future__ import annotations

import platform
import sys
from typing import Any

from storage.api.registry import ResourceInfo, groups
from storage.api.scale import SCALABLE
from storage.apiserver.rendering import parse_accept

GIT_VERSION = "v1.30.0-stowage"
STATUS_VERBS = ["get", "patch", "update"]
# Kubernetes' categories: ``kubectl get all`` lists every resource in "all".
CATEGORIES: dict[str, tuple[str, ...]] = {
    "pods": ("all",),
    "services": ("all",),
    "replicationcontrollers": ("all",),
    "daemonsets": ("all",),
    "deployments": ("all",),
    "replicasets": ("all",),
    "statefulsets": ("all",),
    "jobs": ("all", "batch"),
    "cronjobs": ("all", "batch"),
    "horizontalpodautoscalers": ("all",),
}


def version_info() -> dict[str, str]:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "major": "1",
        "minor": "30",
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
        "compiler": "cpython",
        "platform": f"linux/{machine}",
    }


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def named_groups() -> dict[str, list[str]]:
    """Group name -> versions, for every non-core group."""
    out: dict[str, list[str]] = {}
    for gv in groups():
        if "/" in gv:
            name, _, version = gv.partition("/")
            out.setdefault(name, []).append(version)
    return out


def api_group_list() -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(name, versions) for name, versions in named_groups().items()],
    }


def api_group(name: str) -> dict[str, Any] | None:
    versions = named_groups().get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def api_resource_list(group_version: str) -> dict[str, Any] | None:
    infos: list[ResourceInfo] | None = groups().get(group_version)
    if infos is None:
        return None
    resources: list[dict[str, Any]] = []
    for r in infos:
        resources.append(
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
                **({"shortNames": list(r.short_names)} if r.short_names else {}),
                **({"categories": list(CATEGORIES[r.plural])} if r.plural in CATEGORIES else {}),
            }
        )
        if r.kind == "ServiceAccount":  # the TokenRequest subresource, as kubectl create token finds it
            resources.append({"name": "serviceaccounts/token", "singularName": "", "namespaced": True,
                              "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                              "verbs": ["create"]})
        if r.kind == "Pod":  # what kubectl drain looks for before it evicts rather than deletes
            resources.append({"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy",
                              "version": "v1", "kind": "Eviction", "verbs": ["create"]})
            resources.append({"name": "pods/ephemeralcontainers", "singularName": "", "namespaced": True,
                              "kind": "Pod", "verbs": ["get", "patch", "update"]})
        if r.kind == "CertificateSigningRequest":  # CSR1: kubectl certificate approve|deny writes here
            resources.append({"name": "certificatesigningrequests/approval", "singularName": "", "namespaced": False,
                              "kind": r.kind, "verbs": STATUS_VERBS})
        if r.has_status:
            resources.append(
                {"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": STATUS_VERBS}
            )
        if r.plural in SCALABLE:
            resources.append({"name": f"{r.plural}/scale", "singularName": "", "namespaced": r.namespaced,
                              "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": STATUS_VERBS})
        if r.plural == "namespaces":
            resources.append({"name": "namespaces/finalize", "singularName": "", "namespaced": False,
                              "kind": "Namespace", "verbs": ["update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


# --- aggregated discovery (apidiscovery.k8s.io): every group's resources in one document -------------------
# kubectl and client-go since 1.26 ask /api and /apis for it first (Accept names it, plain JSON as the
# fallback); with it a cold discovery cache costs two requests instead of one per group-version.
AGGREGATED_GROUP = "apidiscovery.k8s.io"
AGGREGATED_KIND = "APIGroupDiscoveryList"
AGGREGATED_VERSIONS = ("v2", "v2beta1")


def aggregated_version(accept: str | None) -> str | None:
    """The apidiscovery version to answer in ("v2", "v2beta1"), or None for the legacy documents: the first
    alternative of the Accept header that the server can produce wins, as for every other read."""
    for m in parse_accept(accept):
        if m.type not in ("application/json", "application/*", "*/*"):
            continue
        if m.params.get("as") is None:
            return None
        if (m.params.get("as") == AGGREGATED_KIND and m.params.get("g") == AGGREGATED_GROUP
                and m.params.get("v") in AGGREGATED_VERSIONS):
            return m.params["v"]
    return None


def aggregated_content_type(version: str) -> str:
    return f"application/json;g={AGGREGATED_GROUP};v={version};as={AGGREGATED_KIND}"


def _aggregated_resources(resource_list: dict[str, Any]) -> list[dict[str, Any]]:
    """A legacy APIResourceList's resources in aggregated form: each subresource under its parent, every
    response kind with its group and version spelled out."""
    group, _, version = str(resource_list["groupVersion"]).rpartition("/")
    out: dict[str, dict[str, Any]] = {}
    for r in resource_list["resources"]:
        kind = {"group": r.get("group", group), "version": r.get("version", version), "kind": r["kind"]}
        parent, _, sub = str(r["name"]).partition("/")
        if not sub:
            entry: dict[str, Any] = {"resource": parent, "responseKind": kind,
                                     "scope": "Namespaced" if r["namespaced"] else "Cluster",
                                     "singularResource": r["singularName"], "verbs": list(r["verbs"])}
            for field in ("shortNames", "categories"):
                if r.get(field):
                    entry[field] = list(r[field])
            out[parent] = entry
        else:
            out[parent].setdefault("subresources", []).append(
                {"subresource": sub, "responseKind": kind, "verbs": list(r["verbs"])})
    return list(out.values())


def aggregated_list(groups: list[tuple[str, list[str]]], resource_lists: dict[str, dict[str, Any]],
                    version: str) -> dict[str, Any]:
    """The APIGroupDiscoveryList of ``groups`` (name, its versions preferred first; "" is the core group),
    from the legacy resource list of each group-version."""
    items = []
    for name, versions in groups:
        items.append({"metadata": {"name": name, "creationTimestamp": None}, "versions": [
            {"version": v, "resources": _aggregated_resources(resource_lists[f"{name}/{v}" if name else v]),
             "freshness": "Current"} for v in versions]})
    return {"kind": AGGREGATED_KIND, "apiVersion": f"{AGGREGATED_GROUP}/{version}", "metadata": {}, "items": items}
