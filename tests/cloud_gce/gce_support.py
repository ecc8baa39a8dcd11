"""Shared names of the GCE tests (a module of its own: ``conftest`` is a different module per test dir)."""
from __future__ import annotations

from typing import Any

ZONE = "us-central1-a"


def gce_node(name: str, zone: str, *, project: str = "test-project", instance: str | None = None) -> dict[str, Any]:
    """A Node as GCE's cloud provider makes it: zone label and ``gce://<project>/<zone>/<instance>`` providerID."""
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone, "kubernetes.io/hostname": name}},
            "spec": {"providerID": f"gce://{project}/{zone}/{instance or name}"}}
