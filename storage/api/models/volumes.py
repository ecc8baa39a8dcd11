"""Every volume source of the Kubernetes v1 API, for pods and persistent volumes.

One class per source serves both the pod form and the PersistentVolume form:
where Kubernetes has two variants (e.g. a secret reference with a namespace,
``endpointsNamespace``), the union of their fields is modelled.
"""
from __future__ import annotations

from typing import Any

from storage.api.models.meta import LocalObjectReference, ObjectMeta, SecretReference, alias
from storage.api.modelbase import WireModel
from storage.api.quantity import Quantity


class KeyToPath(WireModel):
    key: str | None = None
    path: str | None = None
    mode: int | None = None


class ObjectFieldSelector(WireModel):
    api_version: str | None = None
    field_path: str | None = None


class ResourceFieldSelector(WireModel):
    container_name: str | None = None
    resource: str | None = None
    divisor: Quantity | None = None


class EmptyDirVolumeSource(WireModel):
    medium: str | None = None
    size_limit: Quantity | None = None


class HostPathVolumeSource(WireModel):
    path: str | None = None
    type: str | None = None


class LocalVolumeSource(WireModel):
    path: str | None = None
    fs_type: str | None = None


class NFSVolumeSource(WireModel):
    server: str | None = None
    path: str | None = None
    read_only: bool | None = None


class ISCSIVolumeSource(WireModel):
    target_portal: str | None = None
    iqn: str | None = None
    lun: int | None = None
    iscsi_interface: str | None = None
    fs_type: str | None = None
    read_only: bool | None = None
    portals: list[str] | None = None
    chap_auth_discovery: bool | None = None
    chap_auth_session: bool | None = None
    secret_ref: SecretReference | None = None
    initiator_name: str | None = None


class RBDVolumeSource(WireModel):
    monitors: list[str] | None = None
    image: str | None = None
    fs_type: str | None = None
    pool: str | None = None
    user: str | None = None
    keyring: str | None = None
    secret_ref: SecretReference | None = None
    read_only: bool | None = None


class CephFSVolumeSource(WireModel):
    monitors: list[str] | None = None
    path: str | None = None
    user: str | None = None
    secret_file: str | None = None
    secret_ref: SecretReference | None = None
    read_only: bool | None = None


class GlusterfsVolumeSource(WireModel):
    endpoints: str | None = None
    endpoints_namespace: str | None = None
    path: str | None = None
    read_only: bool | None = None


class AWSElasticBlockStoreVolumeSource(WireModel):
    volume_id: str | None = alias("volumeID")
    fs_type: str | None = None
    partition: int | None = None
    read_only: bool | None = None


class GCEPersistentDiskVolumeSource(WireModel):
    pd_name: str | None = None
    fs_type: str | None = None
    partition: int | None = None
    read_only: bool | None = None


class AzureDiskVolumeSource(WireModel):
    disk_name: str | None = None
    disk_uri: str | None = alias("diskURI")
    caching_mode: str | None = None
    fs_type: str | None = None
    read_only: bool | None = None
    kind: str | None = None


class AzureFileVolumeSource(WireModel):
    secret_name: str | None = None
    secret_namespace: str | None = None
    share_name: str | None = None
    read_only: bool | None = None


class FlockerVolumeSource(WireModel):
    dataset_name: str | None = None
    dataset_uuid: str | None = alias("datasetUUID")


class VsphereVirtualDiskVolumeSource(WireModel):
    volume_path: str | None = None
    fs_type: str | None = None
    storage_policy_name: str | None = None
    storage_policy_id: str | None = alias("storagePolicyID")


class QuobyteVolumeSource(WireModel):
    registry: str | None = None
    volume: str | None = None
    read_only: bool | None = None
    user: str | None = None
    group: str | None = None
    tenant: str | None = None


class GitRepoVolumeSource(WireModel):
    repository: str | None = None
    revision: str | None = None
    directory: str | None = None


class SecretVolumeSource(WireModel):
    secret_name: str | None = None
    items: list[KeyToPath] | None = None
    default_mode: int | None = None
    optional: bool | None = None


class ConfigMapVolumeSource(WireModel):
    name: str | None = None
    items: list[KeyToPath] | None = None
    default_mode: int | None = None
    optional: bool | None = None


class DownwardAPIVolumeFile(WireModel):
    path: str | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    mode: int | None = None


class DownwardAPIVolumeSource(WireModel):
    items: list[DownwardAPIVolumeFile] | None = None
    default_mode: int | None = None


class SecretProjection(WireModel):
    name: str | None = None
    items: list[KeyToPath] | None = None
    optional: bool | None = None


class ConfigMapProjection(WireModel):
    name: str | None = None
    items: list[KeyToPath] | None = None
    optional: bool | None = None


class DownwardAPIProjection(WireModel):
    items: list[DownwardAPIVolumeFile] | None = None


class ServiceAccountTokenProjection(WireModel):
    audience: str | None = None
    expiration_seconds: int | None = None
    path: str | None = None


class VolumeProjection(WireModel):
    secret: SecretProjection | None = None
    config_map: ConfigMapProjection | None = None
    downward_api: DownwardAPIProjection | None = alias("downwardAPI")
    service_account_token: ServiceAccountTokenProjection | None = None
    cluster_trust_bundle: dict[str, Any] | None = None


class ProjectedVolumeSource(WireModel):
    sources: list[VolumeProjection] | None = None
    default_mode: int | None = None


class PersistentVolumeClaimVolumeSource(WireModel):
    claim_name: str | None = None
    read_only: bool | None = None


class FlexVolumeSource(WireModel):
    driver: str | None = None
    fs_type: str | None = None
    secret_ref: SecretReference | None = None
    read_only: bool | None = None
    options: dict[str, str] | None = None


class CSIVolumeSource(WireModel):
    """Inline (pod) CSI volume and the PersistentVolume form (``volumeHandle`` and secrets)."""

    driver: str | None = None
    volume_handle: str | None = None
    read_only: bool | None = None
    fs_type: str | None = None
    volume_attributes: dict[str, str] | None = None
    node_publish_secret_ref: SecretReference | None = None
    controller_publish_secret_ref: SecretReference | None = None
    node_stage_secret_ref: SecretReference | None = None
    controller_expand_secret_ref: SecretReference | None = None
    node_expand_secret_ref: SecretReference | None = None


class CinderVolumeSource(WireModel):
    volume_id: str | None = alias("volumeID")
    fs_type: str | None = None
    read_only: bool | None = None
    secret_ref: SecretReference | None = None


class FCVolumeSource(WireModel):
    target_wwns: list[str] | None = alias("targetWWNs")
    lun: int | None = None
    fs_type: str | None = None
    read_only: bool | None = None
    wwids: list[str] | None = None


class PortworxVolumeSource(WireModel):
    volume_id: str | None = alias("volumeID")
    fs_type: str | None = None
    read_only: bool | None = None


class PhotonPersistentDiskVolumeSource(WireModel):
    pd_id: str | None = alias("pdID")
    fs_type: str | None = None


class ScaleIOVolumeSource(WireModel):
    gateway: str | None = None
    system: str | None = None
    secret_ref: SecretReference | None = None
    ssl_enabled: bool | None = None
    protection_domain: str | None = None
    storage_pool: str | None = None
    storage_mode: str | None = None
    volume_name: str | None = None
    fs_type: str | None = None
    read_only: bool | None = None


class StorageOSVolumeSource(WireModel):
    volume_name: str | None = None
    volume_namespace: str | None = None
    fs_type: str | None = None
    read_only: bool | None = None
    secret_ref: LocalObjectReference | None = None


class ImageVolumeSource(WireModel):
    reference: str | None = None
    pull_policy: str | None = None


class PersistentVolumeClaimTemplate(WireModel):
    metadata: ObjectMeta | None = None
    # The claim spec model lives in core; a dict here avoids a cycle and is validated there.
    spec: dict[str, Any] | None = None


class EphemeralVolumeSource(WireModel):
    volume_claim_template: PersistentVolumeClaimTemplate | None = None


class PersistentVolumeSourceFields(WireModel):
    """The volume sources a PersistentVolume may carry (exactly one)."""

    gce_persistent_disk: GCEPersistentDiskVolumeSource | None = None
    aws_elastic_block_store: AWSElasticBlockStoreVolumeSource | None = None
    host_path: HostPathVolumeSource | None = None
    glusterfs: GlusterfsVolumeSource | None = None
    nfs: NFSVolumeSource | None = None
    rbd: RBDVolumeSource | None = None
    iscsi: ISCSIVolumeSource | None = None
    cinder: CinderVolumeSource | None = None
    cephfs: CephFSVolumeSource | None = None
    fc: FCVolumeSource | None = None
    flocker: FlockerVolumeSource | None = None
    flex_volume: FlexVolumeSource | None = None
    azure_file: AzureFileVolumeSource | None = None
    vsphere_volume: VsphereVirtualDiskVolumeSource | None = None
    quobyte: QuobyteVolumeSource | None = None
    azure_disk: AzureDiskVolumeSource | None = None
    photon_persistent_disk: PhotonPersistentDiskVolumeSource | None = None
    portworx_volume: PortworxVolumeSource | None = None
    scale_io: ScaleIOVolumeSource | None = alias("scaleIO")
    local: LocalVolumeSource | None = None
    storageos: StorageOSVolumeSource | None = None
    csi: CSIVolumeSource | None = None


class Volume(WireModel):
    """A pod volume: a name and exactly one source."""

    name: str | None = None
    host_path: HostPathVolumeSource | None = None
    empty_dir: EmptyDirVolumeSource | None = None
    gce_persistent_disk: GCEPersistentDiskVolumeSource | None = None
    aws_elastic_block_store: AWSElasticBlockStoreVolumeSource | None = None
    git_repo: GitRepoVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    nfs: NFSVolumeSource | None = None
    iscsi: ISCSIVolumeSource | None = None
    glusterfs: GlusterfsVolumeSource | None = None
    persistent_volume_claim: PersistentVolumeClaimVolumeSource | None = None
    rbd: RBDVolumeSource | None = None
    flex_volume: FlexVolumeSource | None = None
    cinder: CinderVolumeSource | None = None
    cephfs: CephFSVolumeSource | None = None
    flocker: FlockerVolumeSource | None = None
    downward_api: DownwardAPIVolumeSource | None = alias("downwardAPI")
    fc: FCVolumeSource | None = None
    azure_file: AzureFileVolumeSource | None = None
    config_map: ConfigMapVolumeSource | None = None
    vsphere_volume: VsphereVirtualDiskVolumeSource | None = None
    quobyte: QuobyteVolumeSource | None = None
    azure_disk: AzureDiskVolumeSource | None = None
    photon_persistent_disk: PhotonPersistentDiskVolumeSource | None = None
    projected: ProjectedVolumeSource | None = None
    portworx_volume: PortworxVolumeSource | None = None
    scale_io: ScaleIOVolumeSource | None = alias("scaleIO")
    storageos: StorageOSVolumeSource | None = None
    csi: CSIVolumeSource | None = None
    ephemeral: EphemeralVolumeSource | None = None
    image: ImageVolumeSource | None = None


# Wire names of the sources, in Kubernetes' declaration order (used by validation).
POD_VOLUME_SOURCES: tuple[str, ...] = tuple(
    f.alias or "" for n, f in Volume.model_fields.items() if n != "name"
)
PV_VOLUME_SOURCES: tuple[str, ...] = tuple(f.alias or "" for f in PersistentVolumeSourceFields.model_fields.values())
