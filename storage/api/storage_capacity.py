"""CSIStorageCapacity (SEMANTICS SCAP1–SCAP4): which objects the capacity controller keeps for a storage class, and
whether one of them lets the scheduler send a new volume to a node, as Kubernetes' VolumeBinding plugin decides."""
from __future__ import annotations

from typing import Any, Iterable

from storage.api.quantity import parse_quantity
from storage.api.selectors import selector_matches

# external-provisioner's labels on the objects it writes (its namespace is its pod's; Stowage's is kube-system).
LABEL_DRIVER = "csi.storage.k8s.io/drivername"
LABEL_MANAGED_BY = "csi.storage.k8s.io/managed-by"
MANAGED_BY = "external-provisioner"
CAPACITY_NAMESPACE = "kube-system"


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def driver_segments(driver: str, csinodes: Iterable[dict[str, Any]],
                    nodes: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """SCAP2: the distinct topology segments ``driver`` serves: for each node that registered it, the node's
    labels for the driver's topology keys (a node missing one of them gives none), sorted."""
    seen: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for csinode in csinodes:
        node = nodes.get(str(_meta(csinode).get("name") or ""))
        if node is None:
            continue
        labels = _meta(node).get("labels") or {}
        for entry in (csinode.get("spec") or {}).get("drivers") or []:
            keys = entry.get("topologyKeys") or []
            if entry.get("name") != driver or not keys or not all(k in labels for k in keys):
                continue
            segment = {k: str(labels[k]) for k in keys}
            seen.setdefault(tuple(sorted(segment.items())), segment)
    return [seen[k] for k in sorted(seen)]


def segment_of(capacity: dict[str, Any]) -> dict[str, str] | None:
    """The segment an object of ours stands for (its nodeTopology's matchLabels); None for any other shape."""
    topology = capacity.get("nodeTopology")
    if not isinstance(topology, dict) or topology.get("matchExpressions"):
        return None
    labels = topology.get("matchLabels")
    return dict(labels) if isinstance(labels, dict) else None


def _limit(capacity: dict[str, Any]) -> int | None:
    """Kubernetes' volumeLimit: maximumVolumeSize when given (it is more precise), else capacity."""
    value = capacity.get("maximumVolumeSize")
    if value is None:
        value = capacity.get("capacity")
    if value is None:
        return None
    try:
        return int(parse_quantity(str(value)))
    except ValueError:
        return None


def node_has_capacity(class_name: str, request_bytes: int, node: dict[str, Any],
                      capacities: Iterable[dict[str, Any]]) -> bool:
    """SCAP3, Kubernetes' hasEnoughCapacity: some object of the class whose nodeTopology selects the node
    (none: unavailable) allows a volume of ``request_bytes``."""
    labels = _meta(node).get("labels") or {}
    for capacity in capacities:
        if capacity.get("storageClassName") != class_name or capacity.get("nodeTopology") is None:
            continue
        limit = _limit(capacity)
        if limit is not None and limit >= request_bytes and selector_matches(capacity["nodeTopology"], labels):
            return True
    return False
