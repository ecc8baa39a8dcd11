"""``storage.k8s.io/v1`` kinds."""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.core import PersistentVolumeSpec
from storage.api.models.meta import Resource, alias
from storage.api.quantity import Quantity
from storage.api.selectors import LabelSelector


class TopologySelectorLabelRequirement(WireModel):
    key: str | None = None
    values: list[str] | None = None


class TopologySelectorTerm(WireModel):
    match_label_expressions: list[TopologySelectorLabelRequirement] | None = None


class StorageClass(Resource):
    # A StorageClass has no spec: its fields sit at the top level.
    provisioner: str | None = None
    parameters: dict[str, str] | None = None
    reclaim_policy: str | None = None
    mount_options: list[str] | None = None
    allow_volume_expansion: bool | None = None
    volume_binding_mode: str | None = None
    allowed_topologies: list[TopologySelectorTerm] | None = None


class VolumeAttachmentSource(WireModel):
    persistent_volume_name: str | None = None
    inline_volume_spec: PersistentVolumeSpec | None = None


class VolumeAttachmentSpec(WireModel):
    attacher: str | None = None
    source: VolumeAttachmentSource | None = None
    node_name: str | None = None


class VolumeError(WireModel):
    time: str | None = None
    message: str | None = None
    error_code: int | None = None


class VolumeAttachmentStatus(WireModel):
    attached: bool | None = None
    attachment_metadata: dict[str, str] | None = None
    attach_error: VolumeError | None = None
    detach_error: VolumeError | None = None


class VolumeAttachment(Resource):
    spec: VolumeAttachmentSpec | None = None
    status: VolumeAttachmentStatus | None = None


class TokenRequest(WireModel):
    audience: str | None = None
    expiration_seconds: int | None = None


class CSIDriverSpec(WireModel):
    attach_required: bool | None = None
    pod_info_on_mount: bool | None = None
    fs_group_policy: str | None = None
    volume_lifecycle_modes: list[str] | None = None
    storage_capacity: bool | None = None
    token_requests: list[TokenRequest] | None = None
    requires_republish: bool | None = None
    se_linux_mount: bool | None = None
    # CS21: the tokenRequests' tokens go to NodePublishVolume's secrets instead of its volume context.
    service_account_token_in_secrets: bool | None = None


class CSIDriver(Resource):
    """What a CSI driver needs from the orchestrator (CS12); named after the driver, cluster-scoped, no status."""

    spec: CSIDriverSpec | None = None


class VolumeNodeResources(WireModel):
    count: int | None = None


class CSINodeDriver(WireModel):
    name: str | None = None
    node_id: str | None = alias("nodeID")
    topology_keys: list[str] | None = None
    allocatable: VolumeNodeResources | None = None


class CSINodeSpec(WireModel):
    drivers: list[CSINodeDriver] | None = None


class CSINode(Resource):
    """The CSI drivers registered on a node (CS11); named after the node and written by its agent."""

    spec: CSINodeSpec | None = None


class CSIStorageCapacity(Resource):
    """What a CSI driver's GetCapacity reported for one storage class in one topology segment (SEMANTICS SCAP1):
    written by the capacity controller, read by the scheduler for drivers whose CSIDriver asks for it."""

    node_topology: LabelSelector | None = None
    storage_class_name: str | None = None
    capacity: Quantity | None = None
    maximum_volume_size: Quantity | None = None


class VolumeAttributesClass(Resource):
    """Mutable attributes of a CSI volume by name (SEMANTICS VAC1): claims name one, the CSI driver gets its
    parameters at CreateVolume and ControllerModifyVolume."""

    driver_name: str | None = None
    parameters: dict[str, str] | None = None


__all__ = ["CSIDriver", "CSINode", "CSIStorageCapacity", "StorageClass", "VolumeAttachment", "VolumeAttributesClass", "VolumeAttachmentSpec", "VolumeAttachmentStatus"]
