"""Helpers of the snapshot controller tests: manifests and waits against a real API server."""
from __future__ import annotations

from typing import Any, Callable

from storage.errors import NotFound
from support import wait_for

Obj = dict[str, Any]
GROUP = "snapshot.storage.k8s.io"


def storage_class(name: str, provisioner: str, root: str) -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": provisioner, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            "parameters": {"root": root}}


def snapshot_class(name: str, driver: str, policy: str = "Delete", default: bool = False,
                   parameters: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name}
    if default:
        meta["annotations"] = {"snapshot.storage.kubernetes.io/is-default-class": "true"}
    body: Obj = {"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshotClass", "metadata": meta, "driver": driver,
                 "deletionPolicy": policy}
    if parameters:
        body["parameters"] = parameters
    return body


def claim(name: str, size: str = "1Gi", namespace: str = "default", klass: str = "hp",
          source: Obj | None = None, source_ref: Obj | None = None) -> Obj:
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "storageClassName": klass, "resources": {"requests": {"storage": size}}}
    if source is not None:
        spec["dataSource"] = source
    if source_ref is not None:
        spec["dataSourceRef"] = source_ref
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def snapshot(name: str, claim_name: str | None = None, namespace: str = "default", klass: str | None = None,
             content: str | None = None) -> Obj:
    source = {"persistentVolumeClaimName": claim_name} if claim_name else {"volumeSnapshotContentName": content}
    spec: Obj = {"source": source}
    if klass:
        spec["volumeSnapshotClassName"] = klass
    return {"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshot", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def snapshot_source(name: str) -> Obj:
    return {"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": name}


def get(client: Any, resource: str, name: str, namespace: str = "") -> Obj | None:
    try:
        return client.get(resource, name, namespace)
    except NotFound:
        return None


def wait_bound(client: Any, name: str, namespace: str = "default", timeout: float = 60) -> Obj:
    def check() -> Obj | None:
        c = get(client, "persistentvolumeclaims", name, namespace)
        return c if c and (c.get("status") or {}).get("phase") == "Bound" else None
    return wait_for(check, f"claim {namespace}/{name} Bound", timeout, interval=0.1)


def wait_ready(client: Any, name: str, namespace: str = "default", timeout: float = 60) -> Obj:
    def check() -> Obj | None:
        s = get(client, "volumesnapshots", name, namespace)
        return s if s and (s.get("status") or {}).get("readyToUse") is True else None
    return wait_for(check, f"snapshot {namespace}/{name} readyToUse", timeout, interval=0.1)


def wait_gone(client: Any, resource: str, name: str, namespace: str = "", timeout: float = 60) -> bool:
    return wait_for(lambda: get(client, resource, name, namespace) is None, f"{resource} {name} gone", timeout,
                    interval=0.1)


def events(client: Any, namespace: str, name: str, predicate: Callable[[Obj], bool] | None = None) -> list[Obj]:
    items, _ = client.list("events", namespace)
    return [e for e in items if e["involvedObject"].get("name") == name and (predicate is None or predicate(e))]


def wait_event(client: Any, namespace: str, name: str, reason: str, contains: str = "", timeout: float = 60) -> Obj:
    def check() -> Obj | None:
        found = events(client, namespace, name, lambda e: e["reason"] == reason and contains in e["message"])
        return found[0] if found else None
    return wait_for(check, f"event {reason} on {namespace}/{name}", timeout, interval=0.1)
