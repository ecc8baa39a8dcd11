"""Core (``v1``) kinds."""
from __future__ import annotations

from typing import Any

from storage.api.modelbase import WireModel
from storage.api.models.meta import (
    Condition, ObjectReference, Resource, TypedLocalObjectReference, TypedObjectReference, alias,
)
from storage.api.models.pod import NodeSelector, PodSpec, PodStatus, PodTemplateSpec
from storage.api.models.volumes import PersistentVolumeSourceFields
from storage.api.quantity import Quantity
from storage.api.selectors import LabelSelector


class VolumeNodeAffinity(WireModel):
    required: NodeSelector | None = None


class PersistentVolumeSpec(PersistentVolumeSourceFields):
    capacity: dict[str, Quantity] | None = None
    access_modes: list[str] | None = None
    claim_ref: ObjectReference | None = None
    persistent_volume_reclaim_policy: str | None = None
    storage_class_name: str | None = None
    mount_options: list[str] | None = None
    volume_mode: str | None = None
    node_affinity: VolumeNodeAffinity | None = None
    volume_attributes_class_name: str | None = None


class PersistentVolumeStatus(WireModel):
    phase: str | None = None
    message: str | None = None
    reason: str | None = None
    last_phase_transition_time: str | None = None


class PersistentVolume(Resource):
    spec: PersistentVolumeSpec | None = None
    status: PersistentVolumeStatus | None = None


class VolumeResourceRequirements(WireModel):
    limits: dict[str, Quantity] | None = None
    requests: dict[str, Quantity] | None = None


class PersistentVolumeClaimSpec(WireModel):
    access_modes: list[str] | None = None
    selector: LabelSelector | None = None
    resources: VolumeResourceRequirements | None = None
    volume_name: str | None = None
    storage_class_name: str | None = None
    volume_mode: str | None = None
    data_source: TypedLocalObjectReference | None = None
    data_source_ref: TypedObjectReference | None = None
    volume_attributes_class_name: str | None = None


class PersistentVolumeClaimStatus(WireModel):
    phase: str | None = None
    access_modes: list[str] | None = None
    capacity: dict[str, Quantity] | None = None
    conditions: list[Condition] | None = None
    allocated_resources: dict[str, Quantity] | None = None
    allocated_resource_statuses: dict[str, str] | None = None
    current_volume_attributes_class_name: str | None = None
    modify_volume_status: dict[str, Any] | None = None


class PersistentVolumeClaim(Resource):
    spec: PersistentVolumeClaimSpec | None = None
    status: PersistentVolumeClaimStatus | None = None


class Pod(Resource):
    spec: PodSpec | None = None
    status: PodStatus | None = None


class ServicePort(WireModel):
    name: str | None = None
    protocol: str | None = None
    app_protocol: str | None = None
    port: int | None = None
    target_port: int | str | None = None
    node_port: int | None = None


class ServiceSpec(WireModel):
    ports: list[ServicePort] | None = None
    selector: dict[str, str] | None = None
    cluster_ip: str | None = alias("clusterIP")
    cluster_ips: list[str] | None = alias("clusterIPs")
    type: str | None = None
    external_ips: list[str] | None = alias("externalIPs")
    session_affinity: str | None = None
    session_affinity_config: dict[str, Any] | None = None
    load_balancer_ip: str | None = alias("loadBalancerIP")
    load_balancer_source_ranges: list[str] | None = None
    load_balancer_class: str | None = None
    external_name: str | None = None
    external_traffic_policy: str | None = None
    internal_traffic_policy: str | None = None
    health_check_node_port: int | None = None
    publish_not_ready_addresses: bool | None = None
    ip_families: list[str] | None = alias("ipFamilies")
    ip_family_policy: str | None = alias("ipFamilyPolicy")
    allocate_load_balancer_node_ports: bool | None = None
    traffic_distribution: str | None = None


class Service(Resource):
    spec: ServiceSpec | None = None
    status: dict[str, Any] | None = None


class EndpointAddress(WireModel):
    ip: str | None = None
    hostname: str | None = None
    node_name: str | None = None
    target_ref: ObjectReference | None = None


class EndpointPort(WireModel):
    name: str | None = None
    port: int | None = None
    protocol: str | None = None
    app_protocol: str | None = None


class EndpointSubset(WireModel):
    addresses: list[EndpointAddress] | None = None
    not_ready_addresses: list[EndpointAddress] | None = None
    ports: list[EndpointPort] | None = None


class Endpoints(Resource):
    subsets: list[EndpointSubset] | None = None


class Taint(WireModel):
    key: str | None = None
    value: str | None = None
    effect: str | None = None
    time_added: str | None = None


class NodeSpec(WireModel):
    pod_cidr: str | None = alias("podCIDR")
    pod_cidrs: list[str] | None = alias("podCIDRs")
    provider_id: str | None = alias("providerID")
    unschedulable: bool | None = None
    taints: list[Taint] | None = None


class NodeAddress(WireModel):
    type: str | None = None
    address: str | None = None


class AttachedVolume(WireModel):
    name: str | None = None
    device_path: str | None = None


class NodeStatus(WireModel):
    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    phase: str | None = None
    conditions: list[Condition] | None = None
    addresses: list[NodeAddress] | None = None
    daemon_endpoints: dict[str, Any] | None = None
    node_info: dict[str, Any] | None = None
    images: list[dict[str, Any]] | None = None
    volumes_in_use: list[str] | None = None
    volumes_attached: list[AttachedVolume] | None = None
    # Stowage's extension: each storage pool of the node's agent (name, path, totalBytes, freeBytes, fsTypes).
    storage_pools: list[dict[str, Any]] | None = None


class Node(Resource):
    spec: NodeSpec | None = None
    status: NodeStatus | None = None


class NamespaceSpec(WireModel):
    finalizers: list[str] | None = None


class NamespaceStatus(WireModel):
    phase: str | None = None
    conditions: list[Condition] | None = None


class Namespace(Resource):
    spec: NamespaceSpec | None = None
    status: NamespaceStatus | None = None


class Secret(Resource):
    data: dict[str, str] | None = None
    string_data: dict[str, str] | None = None
    type: str | None = None
    immutable: bool | None = None


class PodTemplate(Resource):
    """PT1: a pod template stored on its own (``template`` at the top level, no spec or status)."""

    template: PodTemplateSpec | None = None


class ConfigMap(Resource):
    data: dict[str, str] | None = None
    binary_data: dict[str, str] | None = None
    immutable: bool | None = None


class EventSource(WireModel):
    component: str | None = None
    host: str | None = None


class Event(Resource):
    involved_object: ObjectReference | None = None
    reason: str | None = None
    message: str | None = None
    source: EventSource | None = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    count: int | None = None
    type: str | None = None
    event_time: str | None = None
    series: dict[str, Any] | None = None
    action: str | None = None
    related: ObjectReference | None = None
    reporting_component: str | None = None
    reporting_instance: str | None = None


class ReplicatedPodsSpec(WireModel):
    """The fields ReplicationController and ReplicaSet share; they differ only in the selector's type."""

    replicas: int | None = None
    min_ready_seconds: int | None = None
    template: PodTemplateSpec | None = None


class ReplicationControllerSpec(ReplicatedPodsSpec):
    selector: dict[str, str] | None = None


class ReplicationControllerStatus(WireModel):
    replicas: int | None = None
    fully_labeled_replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    observed_generation: int | None = None
    conditions: list[Condition] | None = None


class ReplicationController(Resource):
    spec: ReplicationControllerSpec | None = None
    status: ReplicationControllerStatus | None = None


class LimitRangeItem(WireModel):
    type: str | None = None
    max: dict[str, Quantity] | None = None
    min: dict[str, Quantity] | None = None
    default: dict[str, Quantity] | None = None
    default_request: dict[str, Quantity] | None = None
    max_limit_request_ratio: dict[str, Quantity] | None = None


class LimitRangeSpec(WireModel):
    limits: list[LimitRangeItem] | None = None


class LimitRange(Resource):
    spec: LimitRangeSpec | None = None


class ScopedResourceSelectorRequirement(WireModel):
    scope_name: str | None = None
    operator: str | None = None
    values: list[str] | None = None


class ScopeSelector(WireModel):
    match_expressions: list[ScopedResourceSelectorRequirement] | None = None


class ResourceQuotaSpec(WireModel):
    hard: dict[str, Quantity] | None = None
    scopes: list[str] | None = None
    scope_selector: ScopeSelector | None = None


class ResourceQuotaStatus(WireModel):
    hard: dict[str, Quantity] | None = None
    used: dict[str, Quantity] | None = None


class ResourceQuota(Resource):
    spec: ResourceQuotaSpec | None = None
    status: ResourceQuotaStatus | None = None


__all__ = [
    "ConfigMap", "LimitRange", "ResourceQuota", "Endpoints", "Event", "Namespace", "Node", "PersistentVolume", "PersistentVolumeClaim",
    "PersistentVolumeClaimSpec", "PersistentVolumeSpec", "Pod", "ReplicationController", "Secret", "Service",
]
