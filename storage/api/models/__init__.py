"""Pydantic models for every kind Stowage serves, with wire-form helpers.

Objects travel and are stored as plain dicts in wire form; these models are
for validation and for typed code that wants them. ``from_dict`` picks the
class from ``kind``; ``to_dict`` gives back the wire form (camelCase, no
``None``, canonical quantities, unknown fields unchanged).
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from storage.api.modelbase import WireModel, dump
from storage.api.models.apps import ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet
from storage.api.models import autoscaling_v1, events_v1
from storage.api.models.autoscaling import HorizontalPodAutoscaler
from storage.api.models.batch import CronJob, Job
from storage.api.models.apiextensions import CustomResourceDefinition
from storage.api.models.networking import Ingress, IngressClass, NetworkPolicy
from storage.api.models.node_runtime import RuntimeClass
from storage.api.models.discovery import EndpointSlice
from storage.api.models.scheduling import PriorityClass
from storage.api.models.coordination import Lease
from storage.api.models.auth_kinds import CertificateSigningRequest, ServiceAccount
from storage.api.models.core import (
    ConfigMap,
    Endpoints,
    Event,
    LimitRange,
    Namespace,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    PodTemplate,
    ReplicationController,
    ResourceQuota,
    Secret,
    Service,
)
from storage.api.models.meta import ObjectMeta, ObjectReference, OwnerReference
from storage.api.models.rbac import (
    ClusterRole,
    ClusterRoleBinding,
    LocalSubjectAccessReview,
    Role,
    RoleBinding,
    SelfSubjectAccessReview,
    SelfSubjectReview,
    SelfSubjectRulesReview,
    SubjectAccessReview,
)
from storage.api.models.pod import Container, PodSpec, PodTemplateSpec
from storage.api.models.policy import PodDisruptionBudget
from storage.api.models.backup import BackupSchedule
from storage.api.models.snapshot import ReferenceGrant, VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent
from storage.api.models.storage_kinds import CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment, VolumeAttributesClass
from storage.api.models.volumes import POD_VOLUME_SOURCES, PV_VOLUME_SOURCES, Volume
from storage.api.registry import RESOURCES
from storage.api.selectors import LabelSelector, LabelSelectorRequirement
from storage.errors import BadRequest

MODELS: dict[str, type[BaseModel]] = {
    "PersistentVolume": PersistentVolume,
    "PersistentVolumeClaim": PersistentVolumeClaim,
    "StorageClass": StorageClass,
    "VolumeAttributesClass": VolumeAttributesClass,
    "CSIStorageCapacity": CSIStorageCapacity,
    "Pod": Pod,
    "Service": Service,
    "Endpoints": Endpoints,
    "Node": Node,
    "Namespace": Namespace,
    "Secret": Secret,
    "ConfigMap": ConfigMap,
    "PodTemplate": PodTemplate,
    "Event": Event,
    "VolumeAttachment": VolumeAttachment,
    "CSIDriver": CSIDriver,
    "CSINode": CSINode,
    "StatefulSet": StatefulSet,
    "DaemonSet": DaemonSet,
    "ReplicaSet": ReplicaSet,
    "ReplicationController": ReplicationController,
    "ControllerRevision": ControllerRevision,
    "Deployment": Deployment,
    "Job": Job,
    "CronJob": CronJob,
    "EndpointSlice": EndpointSlice,
    "NetworkPolicy": NetworkPolicy,
    "PriorityClass": PriorityClass,
    "Ingress": Ingress,
    "IngressClass": IngressClass,
    "CustomResourceDefinition": CustomResourceDefinition,
    "RuntimeClass": RuntimeClass,
    "Lease": Lease,
    "LimitRange": LimitRange,
    "ResourceQuota": ResourceQuota,
    "Role": Role,
    "ClusterRole": ClusterRole,
    "RoleBinding": RoleBinding,
    "ClusterRoleBinding": ClusterRoleBinding,
    "SubjectAccessReview": SubjectAccessReview,
    "SelfSubjectAccessReview": SelfSubjectAccessReview,
    "LocalSubjectAccessReview": LocalSubjectAccessReview,
    "SelfSubjectRulesReview": SelfSubjectRulesReview,
    "SelfSubjectReview": SelfSubjectReview,
    "ServiceAccount": ServiceAccount,
    "CertificateSigningRequest": CertificateSigningRequest,
    "PodDisruptionBudget": PodDisruptionBudget,
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    "BackupSchedule": BackupSchedule,
    "VolumeSnapshot": VolumeSnapshot,
    "VolumeSnapshotContent": VolumeSnapshotContent,
    "VolumeSnapshotClass": VolumeSnapshotClass,
    "ReferenceGrant": ReferenceGrant,
}

_missing = {r.kind for r in RESOURCES} - set(MODELS)
assert not _missing, f"registry kinds without a model: {_missing}"

# The form of a kind at another version it is also served at (HPA8, EVT1), for the OpenAPI documents and the
# unknown-field check only: objects are always validated in the stored version's model above.
OLDER_VERSION_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("autoscaling/v1", "HorizontalPodAutoscaler"): autoscaling_v1.HorizontalPodAutoscaler,
    ("events.k8s.io/v1", "Event"): events_v1.Event,
}
_missing_older = {(gv, r.kind) for r in RESOURCES for gv in r.also_served} - set(OLDER_VERSION_MODELS)
assert not _missing_older, f"older served versions without a model: {_missing_older}"


def model_at(api_version: str, kind: str) -> type[BaseModel] | None:
    """The model of ``kind`` as ``api_version`` shows it: an older served version's, else the stored one."""
    return OLDER_VERSION_MODELS.get((api_version, kind)) or MODELS.get(kind)


def to_dict(model: BaseModel) -> dict[str, Any]:
    """The wire form of a model."""
    return dump(model)


def from_dict(obj: dict[str, Any]) -> BaseModel:
    """Build the model for ``obj['kind']``; raises ``BadRequest`` for an unknown kind.

    Raises pydantic's ``ValidationError`` on shape errors; ``storage.api.validation.validate``
    turns those into Kubernetes field errors.
    """
    kind = obj.get("kind")
    cls = MODELS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadRequest(f'no kind "{kind}" is registered' if kind else "Object 'Kind' is missing")
    return cls.model_validate(obj)


__all__ = [
    "MODELS", "OLDER_VERSION_MODELS", "POD_VOLUME_SOURCES", "model_at", "PV_VOLUME_SOURCES",
    "CSIDriver", "CSINode", "ConfigMap", "Container", "ControllerRevision", "DaemonSet", "CronJob", "Deployment", "EndpointSlice", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy", "PriorityClass", "IngressClass", "Job", "Lease", "LimitRange", "Endpoints", "Event", "LabelSelector",
    "LabelSelectorRequirement", "Namespace", "Node", "ObjectMeta", "ObjectReference", "OwnerReference",
    "PersistentVolume", "PersistentVolumeClaim", "Pod", "PodDisruptionBudget", "PodSpec", "PodTemplateSpec", "ReplicaSet",
    "ReplicationController", "ResourceQuota", "Secret", "Service", "StatefulSet", "StorageClass", "Volume", "VolumeAttachment", "VolumeAttributesClass", "CSIStorageCapacity",
    "WireModel", "from_dict", "to_dict",
]
