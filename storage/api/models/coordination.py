"""``coordination.k8s.io/v1`` kinds: the Lease, which nodes renew as their heartbeat."""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.meta import Resource


class LeaseSpec(WireModel):
    holder_identity: str | None = None
    lease_duration_seconds: int | None = None
    acquire_time: str | None = None
    renew_time: str | None = None
    lease_transitions: int | None = None
    strategy: str | None = None
    preferred_holder: str | None = None


class Lease(Resource):
    spec: LeaseSpec | None = None


__all__ = ["Lease", "LeaseSpec"]
