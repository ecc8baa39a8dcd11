"""Small object builders and answer readers shared by the API tests."""
from __future__ import annotations

from typing import Any

import httpx


def causes(response: httpx.Response) -> list[str]:
    """A 422's field errors as ``field: message`` lines, in the order the server gave them."""
    assert response.status_code == 422, response.text
    return [f"{c['field']}: {c['message']}" for c in response.json()["details"]["causes"]]


def pvc(name: str, namespace: str = "default", size: str = "1Gi", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec},
    }


def pv(name: str, size: str = "1Gi", path: str = "/srv/data", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": path},
            **spec,
        },
    }


def storage_class(name: str, *, default: bool | str = False, expand: bool | None = None,
                  beta: bool = False) -> dict[str, Any]:
    sc: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "stowage.io/local",
    }
    if default is not False:
        key = "storageclass.beta.kubernetes.io/is-default-class" if beta else "storageclass.kubernetes.io/is-default-class"
        sc["metadata"]["annotations"] = {key: "true" if default is True else str(default)}
    if expand is not None:
        sc["allowVolumeExpansion"] = expand
    return sc


def config_map(name: str, namespace: str = "default", labels: dict[str, str] | None = None,
               data: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {}}


def ensure_namespaces(client: Any, *names: str) -> None:
    """Objects go only into namespaces that exist (SEMANTICS N2): create these if missing."""
    from storage.errors import AlreadyExists

    for name in names:
        try:
            client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except AlreadyExists:
            pass
