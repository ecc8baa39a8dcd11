"""Which resources have a ``/scale`` subresource (autoscaling/v1 Scale)."""
from __future__ import annotations

SCALABLE = frozenset({"statefulsets", "replicasets", "replicationcontrollers", "deployments"})
