"""Node objects as the EBS attacher sees them (zone label, AWS providerID)."""
from __future__ import annotations

from typing import Any


def make_node(name: str, zone: str | None, instance_id: str | None) -> dict[str, Any]:
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {}}, "spec": {}}
    if zone:
        node["metadata"]["labels"]["topology.kubernetes.io/zone"] = zone
    if instance_id:
        node["spec"]["providerID"] = f"aws:///{zone or ''}/{instance_id}"
    return node
