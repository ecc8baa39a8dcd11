"""How lists merge in a strategic merge patch, per model field, as Kubernetes' types declare it.

The OpenAPI documents publish this (``x-kubernetes-patch-strategy``,
``x-kubernetes-patch-merge-key``) and kubectl builds its patches from it; the
API server applies those patches with the same table.
"""
from __future__ import annotations

# Strategic merge patch metadata (x-kubernetes-patch-strategy / -merge-key), as Kubernetes declares it.
PATCH_META: dict[tuple[str, str], tuple[str, str]] = {
    ("PodSpec", "containers"): ("merge", "name"),
    ("PodSpec", "initContainers"): ("merge", "name"),
    ("PodSpec", "ephemeralContainers"): ("merge", "name"),
    ("PodSpec", "volumes"): ("merge,retainKeys", "name"),
    ("PodSpec", "imagePullSecrets"): ("merge", "name"),
    ("PodSpec", "hostAliases"): ("merge", "ip"),
    ("Container", "env"): ("merge", "name"),
    ("Container", "ports"): ("merge", "containerPort"),
    ("Container", "volumeMounts"): ("merge", "mountPath"),
    ("Container", "volumeDevices"): ("merge", "devicePath"),
    ("ObjectMeta", "finalizers"): ("merge", ""),
    ("ObjectMeta", "ownerReferences"): ("merge", "uid"),
    ("PodStatus", "conditions"): ("merge", "type"),
    ("PodStatus", "podIPs"): ("merge", "ip"),
    ("PodStatus", "hostIPs"): ("merge", "ip"),
    ("PersistentVolumeClaimStatus", "conditions"): ("merge", "type"),
    ("NodeStatus", "conditions"): ("merge", "type"),
    ("NodeStatus", "addresses"): ("merge", "type"),
    ("ServiceSpec", "ports"): ("merge", "port"),
    ("StatefulSetStatus", "conditions"): ("merge", "type"),
    ("DaemonSetStatus", "conditions"): ("merge", "type"),
    ("ReplicationControllerStatus", "conditions"): ("merge", "type"),
}
# list-map keys for the lists above whose entries are identified by more than the merge key.
LIST_MAP_KEYS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Container", "ports"): ("containerPort", "protocol"),
    ("ServiceSpec", "ports"): ("port", "protocol"),
}


# Structs Kubernetes declares atomic (``x-kubernetes-map-type: atomic``): server-side apply owns them whole.
ATOMIC_STRUCTS = frozenset({
    "LabelSelector", "NodeSelector", "ObjectReference", "LocalObjectReference", "TypedLocalObjectReference",
    "TypedObjectReference", "SecretReference", "ConfigMapKeySelector", "SecretKeySelector", "ObjectFieldSelector", "ResourceFieldSelector",
})


def patch_meta(model: type, field: str) -> tuple[str, str] | None:
    """(strategy, merge key) of a model's list field, inherited declarations included; None: replace."""
    for cls in model.__mro__:
        found = PATCH_META.get((cls.__name__, field))
        if found is not None:
            return found
    return None


def list_map_keys(model: type, field: str) -> tuple[str, ...]:
    for cls in model.__mro__:
        found = LIST_MAP_KEYS.get((cls.__name__, field))
        if found is not None:
            return found
    meta = patch_meta(model, field)
    return (meta[1],) if meta and meta[1] else ()
