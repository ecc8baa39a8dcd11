"""The node's heartbeat as Kubernetes sends it: a ``coordination.k8s.io/v1`` Lease in ``kube-node-lease``.

Renewing a small Lease is cheaper than rewriting the whole Node status, and
the node lifecycle controller reads ``spec.renewTime`` to decide NotReady.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

from storage.api.namespaces import NODE_LEASE_NAMESPACE
from storage.errors import AlreadyExists, Conflict, NotFound

LEASE_DURATION_SECONDS = 40  # Kubernetes' node-monitor-grace-period


def micro_time(moment: datetime | None = None) -> str:
    """A MicroTime as Kubernetes writes it (``2026-11-30T07:10:00.123456Z``)."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def renew_lease(client: Any, node: dict[str, Any] | None, node_name: str,
                duration: int = LEASE_DURATION_SECONDS) -> dict[str, Any] | None:
    """Create or renew the node's Lease, owned by its Node so it goes when the Node goes; None if it lost races."""
    stamp = micro_time()
    for _attempt in range(5):
        try:
            lease = client.get("leases", node_name, NODE_LEASE_NAMESPACE)
        except NotFound:
            lease = None
        if lease is None:
            meta: dict[str, Any] = {"name": node_name, "namespace": NODE_LEASE_NAMESPACE}
            if node is not None and (node.get("metadata") or {}).get("uid"):
                meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node_name,
                                            "uid": node["metadata"]["uid"]}]
            try:
                return client.create({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                    "spec": {"holderIdentity": node_name, "leaseDurationSeconds": duration, "renewTime": stamp},
                })
            except AlreadyExists:
                continue
            except NotFound:
                return None  # no kube-node-lease namespace (a server older than Leases): the Node status still beats
        renewed = copy.deepcopy(lease)
        spec = renewed.setdefault("spec", {})
        spec.update(holderIdentity=node_name, leaseDurationSeconds=duration, renewTime=stamp)
        try:
            return client.update(renewed)
        except Conflict:
            continue
    return None
