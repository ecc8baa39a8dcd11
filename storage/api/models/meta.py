"""Object metadata and references shared by every kind."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from storage.api.modelbase import WireModel


class OwnerReference(WireModel):
    api_version: str | None = None
    kind: str | None = None
    name: str | None = None
    uid: str | None = None
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(WireModel):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    self_link: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None
    managed_fields: list[dict[str, Any]] | None = None


class ObjectReference(WireModel):
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    api_version: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class LocalObjectReference(WireModel):
    name: str | None = None


class SecretReference(WireModel):
    """A secret by name, optionally in another namespace (PV sources may name one)."""

    name: str | None = None
    namespace: str | None = None


class TypedLocalObjectReference(WireModel):
    api_group: str | None = None
    kind: str | None = None
    name: str | None = None


class TypedObjectReference(TypedLocalObjectReference):
    """A claim's ``dataSourceRef``: like a local reference, but it may name another namespace."""

    namespace: str | None = None


class Condition(WireModel):
    type: str | None = None
    status: str | None = None
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    last_probe_time: str | None = None
    last_heartbeat_time: str | None = None
    last_update_time: str | None = None
    observed_generation: int | None = None


class Resource(WireModel):
    """The envelope of every top-level object."""

    api_version: str | None = None
    kind: str | None = None
    metadata: ObjectMeta | None = None


def alias(name: str) -> Any:
    """An optional field whose wire name differs from the camelCase of its Python name."""
    return Field(None, alias=name)
