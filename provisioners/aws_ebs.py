"""AWS EBS volumes: ``kubernetes.io/aws-ebs`` (in-tree) and ``ebs.csi.aws.com`` (CSI driver name).

Create, attach, detach, grow and delete EBS volumes through boto3. The endpoint,
region and credentials come only from boto3's standard configuration
(``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, the usual credential chain).

Rules (docs/semantics.md CE1-CE9; snapshots ES1-ES9):

* Idempotency never depends on ``ClientToken`` (emulators ignore it): every volume
  is created with its tags in the same call (``TagSpecifications``), so a volume
  that exists at all carries ``kubernetes.io/created-for/pv/name``; ``provision``
  looks for that tag (and the cluster tag) before creating anything.
* Attach is refused across zones and while the volume is attached (or attaching)
  to another instance, whatever the API would allow.
* Sizes are whole GiB, rounded up, at least the type's minimum.
* Long transitions never block the provisioning controller: ``creating`` answers
  ``in_progress``; attach/detach wait with back-off up to a deadline and then
  raise ``TemporaryError`` so the controller retries.
* Snapshots are CreateSnapshot tagged with the VolumeSnapshotContent's name (found again by that tag, as
  volumes are), restored with CreateVolume(SnapshotId); EBS has no volume clone, so claims are not cloned.
"""
from __future__ import annotations

import datetime
import hashlib
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import structlog
import tenacity

from provisioners.base import (Attacher, ProvisionRequest, ProvisionResult, Provisioner, SnapshotRequest,
                               SnapshotResult, Snapshotter)
from storage.api.aws_ebs import parse_volume_id
from storage.errors import PermanentError, TemporaryError

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
GiB = 1024**3

NAME = "kubernetes.io/aws-ebs"
CSI_NAME = "ebs.csi.aws.com"
CLUSTER_ENV = "STOWAGE_CLUSTER_ID"
DEFAULT_CLUSTER = "stowage"

ZONE_LABEL = "topology.kubernetes.io/zone"
BETA_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone"

TAG_PVC_NAME = "kubernetes.io/created-for/pvc/name"
TAG_PVC_NAMESPACE = "kubernetes.io/created-for/pvc/namespace"
TAG_PV_NAME = "kubernetes.io/created-for/pv/name"
TAG_CLUSTER_LEGACY = "KubernetesCluster"
TAG_CLUSTER_PREFIX = "kubernetes.io/cluster/"
# The EBS CSI driver's snapshot tags: the VolumeSnapshotContent name is the idempotency key (ES2).
TAG_SNAPSHOT_NAME = "CSIVolumeSnapshotName"
TAG_CSI_CLUSTER = "ebs.csi.aws.com/cluster"
# VolumeSnapshotClass parameters (aws-ebs-csi-driver docs/tagging.md): tagSpecification_<N>: "key=value".
_TAG_SPEC = re.compile(r"^tagSpecification_([1-9][0-9]*)$")
# The external-snapshotter strips these before the driver sees them (its secret keys).
_CSI_PREFIX = "csi.storage.k8s.io/"
_SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{8,17}$")
# Template keys the driver expands in tag values; only the content name reaches a Snapshotter here.
_TEMPLATE = re.compile(r"\{\{\s*\.([A-Za-z]+)\s*\}\}")

FS_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs"})


@dataclass(frozen=True)
class VolumeType:
    min_gib: int
    max_gib: int
    iops: tuple[int, int] | None = None  # provisionable IOPS range; None: not provisionable
    max_iops_per_gib: int = 0
    baseline_iops: int = 0  # IOPS given without asking (gp3): not subject to the per-GiB ratio
    throughput: tuple[int, int] | None = None  # MiB/s; None: not provisionable
    iops_required: bool = False


# AWS' published limits. Where AWS has recently raised one (gp3), the larger figure is used: a request
# beyond the account's real limit is still refused by AWS itself, with its own message.
VOLUME_TYPES: dict[str, VolumeType] = {
    "gp2": VolumeType(1, 16384),
    "gp3": VolumeType(1, 65536, iops=(3000, 80000), max_iops_per_gib=500, baseline_iops=3000, throughput=(125, 2000)),
    "io1": VolumeType(4, 16384, iops=(100, 64000), max_iops_per_gib=50, iops_required=True),
    "io2": VolumeType(4, 65536, iops=(100, 256000), max_iops_per_gib=1000, iops_required=True),
    "st1": VolumeType(125, 16384),
    "sc1": VolumeType(125, 16384),
}
GP3_MAX_THROUGHPUT_PER_IOPS = 0.25

# Kubernetes' in-tree device allocator hands out /dev/xvdba .. /dev/xvdcz.
DEVICE_NAMES: tuple[str, ...] = tuple(f"/dev/xvd{a}{b}" for a in "bc" for b in "abcdefghijklmnopqrstuvwxyz")

_RETRYABLE_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled", "InternalError",
    "InternalFailure", "ServiceUnavailable", "Unavailable", "IncorrectState", "VolumeInUse",
    "IncorrectModificationState", "VolumeModificationRateExceeded",
})
_NOT_FOUND_CODES = frozenset({"InvalidVolume.NotFound"})
_SNAPSHOT_NOT_FOUND_CODES = frozenset({"InvalidSnapshot.NotFound"})
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


# ---------------------------------------------------------------- helpers shared with the node plugin

def node_instance(node: Obj) -> tuple[str, str | None]:
    """(instance id, zone) from the Node's ``spec.providerID`` ``aws:///<zone>/<instance id>``."""
    name = (node.get("metadata") or {}).get("name", "")
    provider_id = str((node.get("spec") or {}).get("providerID") or "")
    if not provider_id:
        raise PermanentError(f'node "{name}" has no spec.providerID (aws:///<zone>/<instance-id>): '
                             "cannot attach an EBS volume to it")
    if not provider_id.startswith("aws://"):
        raise PermanentError(f'node "{name}": spec.providerID "{provider_id}" is not an AWS instance '
                             "(expected aws:///<zone>/<instance-id>)")
    parts = [p for p in provider_id[len("aws://"):].split("/") if p]
    instance = parts[-1] if parts else ""
    if not _INSTANCE_ID.match(instance):
        raise PermanentError(f'node "{name}": spec.providerID "{provider_id}" names no instance id '
                             "(expected aws:///<zone>/<instance-id>)")
    return instance, (parts[0] if len(parts) > 1 else None)


def node_zone(node: Obj) -> str | None:
    labels = (node.get("metadata") or {}).get("labels") or {}
    zone = labels.get(ZONE_LABEL) or labels.get(BETA_ZONE_LABEL)
    if zone:
        return str(zone)
    try:
        return node_instance(node)[1]
    except PermanentError:
        return None


def size_gib(size_bytes: int, volume_type: str) -> int:
    """EBS sizes are whole GiB: round up, and at least the type's minimum."""
    spec = VOLUME_TYPES[volume_type]
    return max(spec.min_gib, math.ceil(max(size_bytes, 1) / GiB))


def zone_affinity(zone: str) -> Obj:
    return {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": ZONE_LABEL, "operator": "In", "values": [zone]}]}]}}


def _bool_param(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise PermanentError(f'invalid value "{value}" for parameter {name}: must be "true" or "false"')


def _int_param(name: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise PermanentError(f'invalid value "{value}" for parameter {name}: must be a whole number') from None
    if number <= 0:
        raise PermanentError(f'invalid value "{value}" for parameter {name}: must be positive')
    return number


@dataclass(frozen=True)
class VolumeSpec:
    """A StorageClass' parameters, checked and resolved against the request size."""

    volume_type: str
    size_gib: int
    iops: int | None
    throughput: int | None
    encrypted: bool
    kms_key_id: str | None
    fs_type: str
    zones: tuple[str, ...]  # allowed zones; empty: any


def parse_parameters(parameters: dict[str, str], size_bytes: int, *, default_type: str) -> VolumeSpec:
    """Kubernetes' EBS classes treat parameter names case-insensitively; so does this."""
    params = {k.lower(): (k, str(v)) for k, v in parameters.items()}

    def get(key: str) -> str | None:
        found = params.get(key.lower())
        return found[1] if found is not None else None

    volume_type = (get("type") or default_type).strip().lower()
    if volume_type not in VOLUME_TYPES:
        raise PermanentError(f'invalid value "{get("type")}" for parameter type: must be one of '
                             f'{", ".join(VOLUME_TYPES)}')
    spec = VOLUME_TYPES[volume_type]
    gib = size_gib(size_bytes, volume_type)
    if gib > spec.max_gib:
        raise PermanentError(f"requested size {gib} GiB exceeds the {spec.max_gib} GiB maximum of {volume_type} volumes")

    iops_text, per_gb_text = get("iops"), get("iopsPerGB")
    if iops_text is not None and per_gb_text is not None:
        raise PermanentError("parameters iops and iopsPerGB are mutually exclusive")
    iops: int | None = None
    if iops_text is not None or per_gb_text is not None:
        which = "iops" if iops_text is not None else "iopsPerGB"
        if spec.iops is None:
            raise PermanentError(f"parameter {which} is not supported by volume type {volume_type} "
                                 "(only gp3, io1 and io2 take provisioned IOPS)")
        low, high = spec.iops
        if iops_text is not None:
            iops = _int_param("iops", iops_text)
        else:
            iops = _int_param("iopsPerGB", str(per_gb_text)) * gib
            auto = get("allowAutoIOPSPerGBIncrease")
            if iops < low and auto is not None and _bool_param("allowAutoIOPSPerGBIncrease", auto):
                iops = low
            iops = min(iops, high, spec.max_iops_per_gib * gib if spec.max_iops_per_gib else high)
        if iops < low or iops > high:
            raise PermanentError(f"parameter {which}: {iops} IOPS is outside {volume_type}'s range {low}-{high}")
        if spec.max_iops_per_gib and iops > max(spec.baseline_iops, spec.max_iops_per_gib * gib):
            raise PermanentError(f"parameter {which}: {iops} IOPS exceeds {spec.max_iops_per_gib} IOPS per GiB "
                                 f"for a {gib} GiB {volume_type} volume")
    elif spec.iops_required:
        raise PermanentError(f"parameter iops (or iopsPerGB) is required for volume type {volume_type}")

    throughput: int | None = None
    throughput_text = get("throughput")
    if throughput_text is not None:
        if spec.throughput is None:
            raise PermanentError(f"parameter throughput is not supported by volume type {volume_type} (only gp3)")
        throughput = _int_param("throughput", throughput_text)
        low, high = spec.throughput
        if throughput < low or throughput > high:
            raise PermanentError(f"parameter throughput: {throughput} MiB/s is outside {volume_type}'s range {low}-{high}")
        effective_iops = iops or spec.baseline_iops
        if throughput > effective_iops * GP3_MAX_THROUGHPUT_PER_IOPS and throughput > low:
            raise PermanentError(f"parameter throughput: {throughput} MiB/s exceeds "
                                 f"{GP3_MAX_THROUGHPUT_PER_IOPS} MiB/s per provisioned IOPS ({effective_iops} IOPS)")

    encrypted_text = get("encrypted")
    encrypted = _bool_param("encrypted", encrypted_text) if encrypted_text is not None else False
    kms_key_id = get("kmsKeyId") or None
    if kms_key_id and not encrypted:
        raise PermanentError('parameter kmsKeyId needs encrypted: "true"')

    fs_type = (get("fsType") or get("csi.storage.k8s.io/fstype") or "ext4").strip().lower()
    if fs_type not in FS_TYPES:
        raise PermanentError(f'invalid value "{fs_type}" for parameter fsType: must be one of {", ".join(sorted(FS_TYPES))}')

    zone_text, zones_text = get("zone"), get("zones")
    if zone_text is not None and zones_text is not None:
        raise PermanentError("parameters zone and zones are mutually exclusive")
    raw = zone_text if zone_text is not None else (zones_text or "")
    zones = tuple(sorted({z.strip() for z in raw.split(",") if z.strip()}))
    if (zone_text is not None or zones_text is not None) and not zones:
        raise PermanentError(f"parameter {'zone' if zone_text is not None else 'zones'} is empty")
    return VolumeSpec(volume_type, gib, iops, throughput, encrypted, kms_key_id, fs_type, zones)


def _allowed_topology_zones(storage_class: Obj) -> tuple[str, ...]:
    zones: set[str] = set()
    for term in storage_class.get("allowedTopologies") or []:
        for expression in term.get("matchLabelExpressions") or []:
            if expression.get("key") in (ZONE_LABEL, BETA_ZONE_LABEL, "topology.ebs.csi.aws.com/zone"):
                zones.update(str(v) for v in expression.get("values") or [])
    return tuple(sorted(zones))


# ---------------------------------------------------------------- the provisioner

class AwsEbsProvisioner(Provisioner, Attacher, Snapshotter):
    name = NAME
    aliases = frozenset({CSI_NAME})
    known_parameters = frozenset({
        "type", "iopsPerGB", "iops", "throughput", "encrypted", "kmsKeyId", "fsType", "csi.storage.k8s.io/fstype",
        "zone", "zones", "allowAutoIOPSPerGBIncrease",
    })
    # The EBS CSI driver has no CreateVolume-from-volume (ES9): a claim cloning another is refused.
    supports_clone = False

    def __init__(self, *, cluster_id: str | None = None, client_factory: Callable[[], Any] | None = None,
                 retry_mode: str = "adaptive", max_attempts: int = 5, attach_timeout: float = 120.0,
                 detach_timeout: float = 120.0, modify_timeout: float = 30.0, create_timeout: float = 300.0,
                 max_wait: float = 10.0, zones_ttl: float = 600.0,
                 nodes: Callable[[str], Obj | None] | None = None) -> None:
        self.cluster_id = cluster_id or os.environ.get(CLUSTER_ENV) or DEFAULT_CLUSTER
        self._client_factory = client_factory
        self.retry_mode = retry_mode
        self.max_attempts = max_attempts
        self.attach_timeout = attach_timeout
        self.detach_timeout = detach_timeout
        self.modify_timeout = modify_timeout
        self.create_timeout = create_timeout
        self.max_wait = max_wait  # the longest single back-off sleep in a wait
        self.nodes = nodes  # optional node lookup, to find a gone node's instance on detach
        self._client: Any = None
        self._lock = threading.Lock()
        self._instance_locks: dict[str, threading.Lock] = {}
        self._node_instances: dict[str, str] = {}  # node name -> instance id, learnt on attach
        # A region's zones change a few times a year; asking once per Immediate claim doubled the calls.
        self.zones_ttl = zones_ttl
        self._zones: dict[str, tuple[float, frozenset[str]]] = {}  # region -> (monotonic expiry, zone names)

    # ---- the EC2 client ------------------------------------------------------------

    @property
    def ec2(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory() if self._client_factory else self._new_client()
            return self._client

    def _new_client(self) -> Any:
        try:
            import boto3
        except ImportError:
            raise PermanentError("the AWS SDK is not installed: pip install 'stowage[aws]' (boto3)") from None
        from botocore.config import Config
        from botocore.exceptions import NoRegionError

        config = Config(retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts})
        try:
            return boto3.session.Session().client("ec2", config=config)
        except NoRegionError:
            raise PermanentError("no AWS region configured: set AWS_DEFAULT_REGION (or a region in the AWS config file)") from None

    def _call(self, operation: str, **kwargs: Any) -> Obj:
        """One EC2 call. botocore has already retried throttling ("adaptive"/"standard" mode); what is
        still throttled or transient becomes a TemporaryError, so the controller retries later instead of
        failing the claim. Other API errors are permanent, with AWS' code and message."""
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        try:
            return getattr(self.ec2, operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error") or {}
            code = str(error.get("Code") or "")
            message = str(error.get("Message") or "")
            status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            if code in _RETRYABLE_CODES or status >= 500:
                delay = 5.0 if "Limit" in code or "Thrott" in code else 2.0
                raise TemporaryError(f"EC2 {operation}: {code}: {message}", delay=delay) from None
            raise _AwsError(operation, code, message) from None
        except NoCredentialsError:
            raise PermanentError("no AWS credentials found (environment, shared credentials file, or instance role)") from None
        except EndpointConnectionError as exc:
            raise TemporaryError(f"EC2 {operation}: endpoint unreachable: {exc}", delay=5.0) from None
        except BotoCoreError as exc:
            raise TemporaryError(f"EC2 {operation}: {type(exc).__name__}: {exc}", delay=5.0) from None

    def _describe_volume(self, volume_id: str) -> Obj | None:
        try:
            volumes = self._call("describe_volumes", VolumeIds=[volume_id]).get("Volumes") or []
        except _AwsError as exc:
            if exc.code in _NOT_FOUND_CODES:
                return None
            raise
        return volumes[0] if volumes else None

    def _tagged(self, pv_name: str) -> list[Obj]:
        """This cluster's volumes made for ``pv_name``, oldest first (the idempotency key, not ClientToken)."""
        filters = [{"Name": f"tag:{TAG_PV_NAME}", "Values": [pv_name]},
                   {"Name": f"tag:{TAG_CLUSTER_PREFIX}{self.cluster_id}", "Values": ["owned"]}]
        volumes = []
        for page in self._pages("describe_volumes", Filters=filters):
            volumes.extend(v for v in page.get("Volumes") or [] if v.get("State") not in ("deleting", "deleted", "error"))
        return sorted(volumes, key=lambda v: (str(v.get("CreateTime") or ""), v["VolumeId"]))

    def _pages(self, operation: str, **kwargs: Any) -> Iterator[Obj]:
        token: str | None = None
        while True:
            page = self._call(operation, **kwargs, **({"NextToken": token} if token else {}))
            yield page
            token = page.get("NextToken")
            if not token:
                return

    def _tags(self, req: ProvisionRequest) -> list[dict[str, str]]:
        meta = req.claim.get("metadata") or {}
        tags = {
            "Name": f"{self.cluster_id}-dynamic-{req.volume_name}",
            TAG_PVC_NAME: str(meta.get("name") or ""),
            TAG_PVC_NAMESPACE: str(meta.get("namespace") or "default"),
            TAG_PV_NAME: req.volume_name,
            TAG_CLUSTER_LEGACY: self.cluster_id,
            f"{TAG_CLUSTER_PREFIX}{self.cluster_id}": "owned",
        }
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    # ---- provision ----------------------------------------------------------------------

    def check_parameters(self, parameters: dict[str, str]) -> None:
        known = {k.lower() for k in self.known_parameters}
        unknown = sorted(k for k in parameters if k.lower() not in known)
        if unknown:
            raise PermanentError(f"invalid parameter(s) for provisioner {self.name}: {', '.join(repr(u) for u in unknown)}"
                                 f" (known: {', '.join(sorted(self.known_parameters))})")

    def _choose_zone(self, req: ProvisionRequest, spec: VolumeSpec) -> str | ProvisionResult:
        allowed = set(spec.zones)
        topology = _allowed_topology_zones(req.storage_class)
        if topology:
            allowed = (allowed & set(topology)) if allowed else set(topology)
            if not allowed:
                raise PermanentError("the class' zone/zones parameters and allowedTopologies have no zone in common")
        if req.selected_node is not None:
            zone = node_zone(req.selected_node)
            node_name = (req.selected_node.get("metadata") or {}).get("name", "")
            if not zone:
                raise PermanentError(f'selected node "{node_name}" has no {ZONE_LABEL} label and no AWS '
                                     "spec.providerID: cannot tell which zone to create the volume in")
            if allowed and zone not in allowed:
                return ProvisionResult.reschedule(f'node "{node_name}" is in zone {zone}, the class allows only '
                                                  f'{", ".join(sorted(allowed))}')
            return zone
        if not allowed:
            allowed = set(self._available_zones())
        # As Kubernetes' ChooseZoneForVolume: spread claims over the zones, the same claim always to the same zone.
        ordered = sorted(allowed)
        digest = hashlib.sha256(req.volume_name.encode()).digest()
        return ordered[int.from_bytes(digest[:4], "big") % len(ordered)]

    def _available_zones(self) -> frozenset[str]:
        """The region's available zones, asked at most once per ``zones_ttl`` seconds per region. Two
        threads missing at once may both ask: harmless, and no lock is held over the call."""
        client = self.ec2
        region = str(getattr(getattr(client, "meta", None), "region_name", "") or "")
        with self._lock:
            cached = self._zones.get(region)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        zones = self._call("describe_availability_zones",
                           Filters=[{"Name": "state", "Values": ["available"]}]).get("AvailabilityZones") or []
        names = frozenset(z["ZoneName"] for z in zones if z.get("ZoneType", "availability-zone") == "availability-zone")
        if not names:
            raise TemporaryError("the region lists no available zone", delay=10.0)  # not cached: ask again
        with self._lock:
            self._zones[region] = (time.monotonic() + self.zones_ttl, names)
        return names

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        self.check_parameters(req.parameters)
        bad_modes = sorted(set(req.access_modes) - {"ReadWriteOnce", "ReadWriteOncePod"})
        if bad_modes:
            raise PermanentError(f"accessModes: {', '.join(bad_modes)} not supported: an EBS volume attaches to one node "
                                 "(ReadWriteOnce, ReadWriteOncePod)")
        class_provisioner = str(req.storage_class.get("provisioner") or NAME)
        # The in-tree plugin defaulted to gp2, the CSI driver defaults to gp3; keep each name's default.
        spec = parse_parameters(req.parameters, req.requested_bytes,
                                default_type="gp3" if class_provisioner == CSI_NAME else "gp2")
        found = self._tagged(req.volume_name)
        if found:
            # Two racing controllers could each have made one; both answer with the oldest from now on, and
            # delete() removes them all (never here: the PV already saved may name either).
            volume = found[0]
        else:
            snapshot = self._restore_source(req)  # before anything is created: a bad source creates nothing
            if isinstance(snapshot, ProvisionResult):
                return snapshot
            zone = self._choose_zone(req, spec)
            if isinstance(zone, ProvisionResult):
                return zone
            kwargs: Obj = {"AvailabilityZone": zone, "Size": spec.size_gib, "VolumeType": spec.volume_type,
                           "Encrypted": spec.encrypted,
                           "TagSpecifications": [{"ResourceType": "volume", "Tags": self._tags(req)}]}
            if snapshot is not None:
                # ES6: a volume from a snapshot is at least the snapshot's size (AWS refuses smaller; moto
                # would not), in any zone of the region; an encrypted snapshot makes an encrypted volume.
                kwargs["SnapshotId"] = snapshot["SnapshotId"]
                kwargs["Size"] = max(spec.size_gib, int(snapshot.get("VolumeSize") or 0))
                if snapshot.get("Encrypted"):
                    kwargs["Encrypted"] = True
            if spec.iops is not None:
                kwargs["Iops"] = spec.iops
            if spec.throughput is not None:
                kwargs["Throughput"] = spec.throughput
            if spec.kms_key_id:
                kwargs["KmsKeyId"] = spec.kms_key_id
            volume = self._call("create_volume", **kwargs)
            log.info("aws_ebs.created", volume=req.volume_name, volume_id=volume["VolumeId"], zone=zone,
                     size_gib=kwargs["Size"], type=spec.volume_type, snapshot=kwargs.get("SnapshotId"))
        return self._result(volume, spec, req)

    def _result(self, volume: Obj, spec: VolumeSpec, req: ProvisionRequest) -> ProvisionResult:
        state = volume.get("State")
        volume_id = volume["VolumeId"]
        if state == "creating":
            # Ask again after a quarter of the time it has taken so far (0.5-10 s): quick for the usual
            # few seconds, and few calls for a slow one. Past the deadline keep asking, slowly: giving up
            # would leak the volume, and the claim's events say why it waits.
            age = _age_seconds(volume.get("CreateTime"))
            if age > self.create_timeout:
                log.warning("aws_ebs.slow_create", volume_id=volume_id, seconds=round(age))
                return ProvisionResult.in_progress(f"EBS volume {volume_id} is still creating after {age:.0f}s",
                                                   retry_after=self.max_wait)
            return ProvisionResult.in_progress(f"EBS volume {volume_id} is still creating",
                                               retry_after=min(self.max_wait, max(0.5, age / 4)))
        if state == "error":
            # A failed creation is deleted so the next attempt starts clean (nothing leaks).
            self._call("delete_volume", VolumeId=volume_id)
            raise TemporaryError(f"EBS volume {volume_id} failed to create (state error); deleted it, will retry", delay=5.0)
        zone = volume["AvailabilityZone"]
        source: Obj = {"awsElasticBlockStore": {"volumeID": f"aws://{zone}/{volume_id}"}}
        if req.volume_mode == "Filesystem":
            source["awsElasticBlockStore"]["fsType"] = spec.fs_type
        return ProvisionResult.finished(source, f"{int(volume['Size'])}Gi", zone_affinity(zone))

    def _restore_source(self, req: ProvisionRequest) -> Obj | ProvisionResult | None:
        """The completed snapshot a claim's dataSource names (None without one); ``in_progress`` while it is
        still pending. Clones and other drivers' snapshots are PermanentErrors naming what is refused."""
        source = req.data_source
        if source is None:
            return None
        if source.kind == "PersistentVolumeClaim":
            raise PermanentError(f"provisioner {self.name} cannot clone a claim (dataSource kind PersistentVolumeClaim): "
                                 "EBS has no volume-to-volume copy; take a VolumeSnapshot of the source claim "
                                 "and restore from it")
        if source.kind != "VolumeSnapshot":
            raise PermanentError(f"provisioner {self.name} cannot restore from a dataSource of kind {source.kind}")
        if source.driver and source.driver not in self.names():
            raise PermanentError(f"provisioner {self.name} cannot restore from a snapshot of driver {source.driver!r} "
                                 f"(only {', '.join(sorted(self.names()))} snapshots)")
        snapshot = self._describe_snapshot(source.snapshot_handle)
        if snapshot is None:
            raise PermanentError(f"EBS snapshot {source.snapshot_handle} does not exist: cannot restore from it")
        state = snapshot.get("State")
        if state == "pending":
            return ProvisionResult.in_progress(f"EBS snapshot {source.snapshot_handle} is still pending "
                                               f"({snapshot.get('Progress') or '?'})", retry_after=self.max_wait)
        if state != "completed":
            raise PermanentError(f"EBS snapshot {source.snapshot_handle} is in state {state}: cannot restore from it")
        return snapshot

    # ---- snapshots (ES*) ------------------------------------------------------------------

    def check_snapshot_parameters(self, parameters: dict[str, str]) -> dict[str, str]:
        """A VolumeSnapshotClass's parameters -> the extra snapshot tags; PermanentError naming any parameter
        the EBS CSI driver does not document, or a tag that is not ``key=value`` (ES4)."""
        tags: dict[str, str] = {}
        unknown = []
        for key, value in sorted(parameters.items()):
            if key.startswith(_CSI_PREFIX):
                continue  # the external-snapshotter's secret keys, stripped before the driver sees them
            if not _TAG_SPEC.match(key):
                unknown.append(key)
                continue
            tag_key, sep, tag_value = str(value).partition("=")
            if not sep or not tag_key.strip():
                raise PermanentError(f'VolumeSnapshotClass parameter {key}: Invalid value: "{value}": must be "key=value"')
            tag_key = tag_key.strip()
            if tag_key.lower().startswith("aws:"):
                raise PermanentError(f"VolumeSnapshotClass parameter {key}: tag keys starting with aws: are reserved by AWS")
            for match in _TEMPLATE.finditer(tag_value):
                if match.group(1) != "VolumeSnapshotContentName":
                    raise PermanentError(f"VolumeSnapshotClass parameter {key}: template {match.group(0)} is not "
                                         "supported (only {{ .VolumeSnapshotContentName }})")
            tags[tag_key] = tag_value
        if unknown:
            raise PermanentError(f"invalid VolumeSnapshotClass parameter(s) for driver {self.name}: "
                                 f"{', '.join(repr(u) for u in unknown)} (known: tagSpecification_<N> = \"key=value\")")
        return tags

    def _snapshot_tags(self, req: SnapshotRequest, extra: dict[str, str]) -> list[dict[str, str]]:
        pv_name = str((req.pv.get("metadata") or {}).get("name") or "")
        tags = {key: _TEMPLATE.sub(req.name, value) for key, value in extra.items()}
        # Ours last: a class cannot overwrite the idempotency key or the cluster's ownership.
        tags.update({
            "Name": f"{self.cluster_id}-{req.name}",
            TAG_SNAPSHOT_NAME: req.name,
            TAG_PV_NAME: pv_name,
            TAG_CSI_CLUSTER: "true",
            TAG_CLUSTER_LEGACY: self.cluster_id,
            f"{TAG_CLUSTER_PREFIX}{self.cluster_id}": "owned",
        })
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def _snapshots_named(self, name: str) -> list[Obj]:
        """This cluster's snapshots tagged with ``name``, oldest first (ES2: the tag, never ClientToken)."""
        filters = [{"Name": f"tag:{TAG_SNAPSHOT_NAME}", "Values": [name]},
                   {"Name": f"tag:{TAG_CLUSTER_PREFIX}{self.cluster_id}", "Values": ["owned"]}]
        found: list[Obj] = []
        for page in self._pages("describe_snapshots", OwnerIds=["self"], Filters=filters):
            found.extend(page.get("Snapshots") or [])
        return sorted(found, key=lambda s: (str(s.get("StartTime") or ""), s["SnapshotId"]))

    def _describe_snapshot(self, snapshot_id: str) -> Obj | None:
        if not _SNAPSHOT_ID.match(snapshot_id or ""):
            raise PermanentError(f'"{snapshot_id}" is not an EBS snapshot id (snap-<hex>)')
        try:
            found = self._call("describe_snapshots", SnapshotIds=[snapshot_id]).get("Snapshots") or []
        except _AwsError as exc:
            if exc.code in _SNAPSHOT_NOT_FOUND_CODES:
                return None
            raise
        return found[0] if found else None

    def _snapshot_result(self, snapshot: Obj) -> SnapshotResult:
        snapshot_id = str(snapshot["SnapshotId"])
        state = snapshot.get("State")
        size = int(snapshot.get("VolumeSize") or 0) * GiB
        started = snapshot.get("StartTime")
        created = started.timestamp() if isinstance(started, datetime.datetime) else time.time()
        if state == "error":
            reason = snapshot.get("StateMessage") or "no reason given"
            raise PermanentError(f"EBS snapshot {snapshot_id} failed (state error: {reason})")
        if state == "completed":
            return SnapshotResult(handle=snapshot_id, restore_size=size, ready=True, creation_time=created)
        # ES3: pending is not ready; a quarter of the time it has taken so far, 0.5 s to max_wait.
        age = _age_seconds(started)
        return SnapshotResult(handle=snapshot_id, restore_size=size, ready=False, creation_time=created,
                              message=f"EBS snapshot {snapshot_id} is {state} ({snapshot.get('Progress') or '0%'})",
                              retry_after=min(self.max_wait, max(0.5, age / 4)))

    def create_snapshot(self, req: SnapshotRequest) -> SnapshotResult:
        extra = self.check_snapshot_parameters(req.parameters)
        found = self._snapshots_named(req.name)
        live = [s for s in found if s.get("State") != "error"]
        if found:
            # The oldest is the answer (a race could have made two; the content names only one).
            return self._snapshot_result((live or found)[0])
        volume_id, _zone = self._volume_of(req.pv)
        try:
            snapshot = self._call("create_snapshot", VolumeId=volume_id,
                                  Description=f"Created by Stowage for {req.name}",
                                  TagSpecifications=[{"ResourceType": "snapshot",
                                                      "Tags": self._snapshot_tags(req, extra)}])
        except _AwsError as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise PermanentError(f"EBS volume {volume_id} of PV {(req.pv.get('metadata') or {}).get('name', '')} "
                                     "does not exist: nothing to snapshot") from None
            raise
        log.info("aws_ebs.snapshot_created", snapshot=req.name, snapshot_id=snapshot["SnapshotId"], volume_id=volume_id)
        return self._snapshot_result(snapshot)

    def delete_snapshot(self, handle: str, parameters: dict[str, str]) -> None:
        if not _SNAPSHOT_ID.match(handle or ""):
            raise PermanentError(f'"{handle}" is not an EBS snapshot id (snap-<hex>)')
        try:
            self._call("delete_snapshot", SnapshotId=handle)
        except _AwsError as exc:
            if exc.code in _SNAPSHOT_NOT_FOUND_CODES:
                return  # ES5: gone is success
            if exc.code == "InvalidSnapshot.InUse":
                raise TemporaryError(f"EBS snapshot {handle} is in use ({exc}); deleting it later", delay=30.0) from None
            raise
        log.info("aws_ebs.snapshot_deleted", snapshot_id=handle)

    def snapshot_status(self, handle: str, parameters: dict[str, str]) -> SnapshotResult | None:
        snapshot = self._describe_snapshot(handle)
        return None if snapshot is None else self._snapshot_result(snapshot)

    # ---- delete / expand ------------------------------------------------------------------

    def _volume_of(self, pv: Obj) -> tuple[str, str | None]:
        source = (pv.get("spec") or {}).get("awsElasticBlockStore") or {}
        if not source.get("volumeID"):
            name = (pv.get("metadata") or {}).get("name", "")
            raise PermanentError(f'persistent volume "{name}" has no awsElasticBlockStore.volumeID')
        return parse_volume_id(str(source["volumeID"]))

    def delete(self, pv: Obj) -> None:
        if not self.owns(pv):
            return
        pv_name = (pv.get("metadata") or {}).get("name", "")
        volume_id, _zone = self._volume_of(pv)
        volume = self._describe_volume(volume_id)
        if volume is None or volume.get("State") in ("deleting", "deleted"):
            return
        tags = {t["Key"]: t["Value"] for t in volume.get("Tags") or []}
        if tags.get(TAG_PV_NAME, pv_name) != pv_name:
            log.warning("aws_ebs.delete_foreign", volume=pv_name, volume_id=volume_id, tagged_for=tags.get(TAG_PV_NAME))
            return
        if volume.get("Attachments"):
            instances = ", ".join(a.get("InstanceId", "?") for a in volume["Attachments"])
            raise TemporaryError(f"EBS volume {volume_id} is still attached to {instances}; deleting after it is detached",
                                 delay=5.0)
        self._delete_volume(volume_id)
        log.info("aws_ebs.deleted", volume=pv_name, volume_id=volume_id)
        # Volumes a race made for the same PV (CE1) go with it, unless something uses them.
        for extra in self._tagged(pv_name):
            if extra["VolumeId"] != volume_id and not extra.get("Attachments"):
                self._delete_volume(extra["VolumeId"])
                log.warning("aws_ebs.duplicate_deleted", volume=pv_name, volume_id=extra["VolumeId"])

    def _delete_volume(self, volume_id: str) -> None:
        try:
            self._call("delete_volume", VolumeId=volume_id)
        except _AwsError as exc:
            if exc.code not in _NOT_FOUND_CODES:
                raise

    def expand(self, pv: Obj, new_size: int) -> int:
        volume_id, _zone = self._volume_of(pv)
        volume = self._describe_volume(volume_id)
        if volume is None:
            raise PermanentError(f"EBS volume {volume_id} does not exist")
        volume_type = str(volume.get("VolumeType") or "gp2")
        limits = VOLUME_TYPES.get(volume_type)
        target = size_gib(new_size, volume_type) if limits else math.ceil(new_size / GiB)
        if limits and target > limits.max_gib:
            raise PermanentError(f"requested size {target} GiB exceeds the {limits.max_gib} GiB maximum of {volume_type} volumes")
        if int(volume["Size"]) < target:
            self._call("modify_volume", VolumeId=volume_id, Size=target)
            log.info("aws_ebs.modify_requested", volume_id=volume_id, size_gib=target)
        # The new size is usable once the modification reaches "optimizing" (or "completed").
        state = self._wait(lambda: self._modification_state(volume_id), lambda s: s not in ("modifying",),
                           self.modify_timeout)
        if state == "modifying":
            raise TemporaryError(f"EBS volume {volume_id} is still being modified", delay=5.0)
        if state == "failed":
            raise PermanentError(f"EBS volume {volume_id}: the modification to {target} GiB failed")
        current = self._describe_volume(volume_id) or volume
        return max(int(current["Size"]), target) * GiB

    def _modification_state(self, volume_id: str) -> str:
        try:
            mods = self._call("describe_volumes_modifications", VolumeIds=[volume_id]).get("VolumesModifications") or []
        except _AwsError as exc:
            if exc.code in ("InvalidVolumeModification.NotFound",):
                return "completed"
            raise
        if not mods:
            return "completed"
        latest = max(mods, key=lambda m: str(m.get("StartTime") or ""))
        return str(latest.get("ModificationState") or "completed")

    # ---- attach / detach ------------------------------------------------------------------

    def _wait(self, probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
        """Poll ``probe`` with exponential back-off until ``done`` or ``timeout``; returns the last answer."""
        last: list[Any] = [None]

        def attempt() -> bool:
            last[0] = probe()
            return done(last[0])

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda ok: not ok),
            wait=tenacity.wait_exponential(multiplier=0.1, max=self.max_wait),
            stop=tenacity.stop_after_delay(timeout),
            retry_error_callback=lambda state: False,
            reraise=True,
        )
        retrying(attempt)
        return last[0]

    def _instance_lock(self, instance_id: str) -> threading.Lock:
        with self._lock:
            return self._instance_locks.setdefault(instance_id, threading.Lock())

    def _free_device(self, instance_id: str) -> str:
        reservations = self._call("describe_instances", InstanceIds=[instance_id]).get("Reservations") or []
        used = {m.get("DeviceName") for r in reservations for i in r.get("Instances") or []
                for m in i.get("BlockDeviceMappings") or []}
        used |= {name.replace("/dev/sd", "/dev/xvd") for name in used if name}
        for name in DEVICE_NAMES:
            if name not in used:
                return name
        raise TemporaryError(f"instance {instance_id} has no free EBS device name left", delay=30.0)

    @staticmethod
    def _attachment_on(volume: Obj, instance_id: str) -> Obj | None:
        return next((a for a in volume.get("Attachments") or [] if a.get("InstanceId") == instance_id), None)

    def attach(self, pv: Obj, node: Obj) -> dict[str, str]:
        node_name = (node.get("metadata") or {}).get("name", "")
        instance_id, provider_zone = node_instance(node)
        zone = node_zone(node) or provider_zone
        with self._lock:
            self._node_instances[node_name] = instance_id
        volume_id, _ = self._volume_of(pv)
        # One DescribeVolumes, under the instance lock: the checks below and the attach act on the same
        # answer, and no attach of ours to this instance can slip in between.
        with self._instance_lock(instance_id):
            volume = self._describe_volume(volume_id)
            if volume is None:
                raise PermanentError(f"EBS volume {volume_id} does not exist")
            # CE4: never across zones, whatever the API says.
            if zone and volume.get("AvailabilityZone") != zone:
                raise PermanentError(f'EBS volume {volume_id} is in zone {volume.get("AvailabilityZone")}, '
                                     f'node "{node_name}" is in zone {zone}: a volume attaches only to instances '
                                     "in its own zone")
            mine = self._attachment_on(volume, instance_id)
            # CE5: one instance at a time, even where the API would allow a second attachment.
            others = [a for a in volume.get("Attachments") or [] if a.get("InstanceId") != instance_id
                      and a.get("State") != "detached"]
            if others and not volume.get("MultiAttachEnabled"):
                holders = ", ".join(f'{a.get("InstanceId")} ({a.get("State")})' for a in others)
                raise TemporaryError(f"EBS volume {volume_id} is attached to {holders}; it attaches to "
                                     f'node "{node_name}" ({instance_id}) only after it is detached there', delay=5.0)
            if mine is None or mine.get("State") == "detached":
                device = self._free_device(instance_id)
                try:
                    self._call("attach_volume", VolumeId=volume_id, InstanceId=instance_id, Device=device)
                except _AwsError as exc:
                    if exc.code == "InvalidVolume.ZoneMismatch":
                        raise PermanentError(f"EBS volume {volume_id} and instance {instance_id} are in different zones") from None
                    raise
                log.info("aws_ebs.attach_requested", volume_id=volume_id, instance=instance_id, device=device)
            elif mine.get("State") == "detaching":
                raise TemporaryError(f"EBS volume {volume_id} is still detaching from {instance_id}", delay=2.0)
        final = self._wait(lambda: self._describe_volume(volume_id),
                           lambda v: v is None or (self._attachment_on(v, instance_id) or {}).get("State") == "attached",
                           self.attach_timeout)
        attachment = self._attachment_on(final, instance_id) if final else None
        if attachment is None:
            raise TemporaryError(f"EBS volume {volume_id} did not appear attached to {instance_id}", delay=2.0)
        if attachment.get("State") != "attached":
            raise TemporaryError(f"EBS volume {volume_id} still {attachment.get('State')} to {instance_id} "
                                 f"after {self.attach_timeout:.0f}s", delay=5.0)
        return {"devicePath": str(attachment.get("Device") or "")}

    def _instance_for(self, node_name: str) -> str | None:
        with self._lock:
            known = self._node_instances.get(node_name)
        if known:
            return known
        if self.nodes is not None:
            node = self.nodes(node_name)
            if node is not None:
                try:
                    return node_instance(node)[0]
                except PermanentError:
                    pass
        # Kubernetes' in-tree way: on AWS a node is named after its private DNS name.
        reservations = self._call("describe_instances",
                                  Filters=[{"Name": "private-dns-name", "Values": [node_name]}]).get("Reservations") or []
        ids = [i["InstanceId"] for r in reservations for i in r.get("Instances") or []]
        return ids[0] if len(ids) == 1 else None

    def detach(self, pv: Obj, node_name: str) -> None:
        volume_id, _ = self._volume_of(pv)
        volume = self._describe_volume(volume_id)
        if volume is None or not volume.get("Attachments"):
            return
        instance_id = self._instance_for(node_name)
        if instance_id is None:
            raise TemporaryError(f'cannot tell which instance node "{node_name}" is (no spec.providerID known); '
                                 f"not detaching EBS volume {volume_id}", delay=10.0)
        mine = self._attachment_on(volume, instance_id)
        if mine is None or mine.get("State") == "detached":
            return
        if mine.get("State") != "detaching":
            try:
                self._call("detach_volume", VolumeId=volume_id, InstanceId=instance_id)
            except _AwsError as exc:
                if exc.code in _NOT_FOUND_CODES or exc.code.startswith("InvalidAttachment"):
                    return
                raise
            log.info("aws_ebs.detach_requested", volume_id=volume_id, instance=instance_id)
        final = self._wait(lambda: self._describe_volume(volume_id),
                           lambda v: v is None or (self._attachment_on(v, instance_id) or {}).get("State", "detached") == "detached",
                           self.detach_timeout)
        left = self._attachment_on(final, instance_id) if final else None
        if left is not None and left.get("State") != "detached":
            raise TemporaryError(f"EBS volume {volume_id} still {left.get('State')} from {instance_id} "
                                 f"after {self.detach_timeout:.0f}s", delay=5.0)


def _age_seconds(created: Any) -> float:
    if not isinstance(created, datetime.datetime):
        return 0.0
    if created.tzinfo is None:
        created = created.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (datetime.datetime.now(datetime.timezone.utc) - created).total_seconds())


class _AwsError(PermanentError):
    """An EC2 error that retrying will not fix; ``code`` is AWS' error code."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"EC2 {operation}: {code}: {message}")
        self.code = code
