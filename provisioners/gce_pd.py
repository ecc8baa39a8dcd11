"""``kubernetes.io/gce-pd`` (and ``pd.csi.storage.gke.io``): Compute Engine persistent disks.

Rules (docs/semantics.md CG1-CG9):

* Parameters as Kubernetes' in-tree plugin and the PD CSI driver read them, keys case-insensitive:
  ``type`` (pd-standard, pd-ssd, pd-balanced; default pd-standard), ``replication-type`` (none,
  regional-pd), ``zone`` / ``zones``, ``fsType`` / ``csi.storage.k8s.io/fstype``,
  ``disk-encryption-kms-key``, ``labels`` (``k=v,k2=v2``). Anything else is refused by name.
* Zones: under WaitForFirstConsumer the selected node's zone (``topology.kubernetes.io/zone``, else its
  providerID), never together with ``zone``/``zones``; otherwise ``zone``, or one of ``zones`` /
  ``allowedTopologies`` chosen by a hash of the volume name (so a retry picks the same zone), or the
  configured default zone. ``regional-pd`` takes two zones of one region and uses regionDisks.
* The disk is named after the volume (``pvc-<uid>``) and labelled with the PV, the claim and the cluster
  id. Insert is the idempotency check: 409 alreadyExists -> read the disk; ours (labels match) ->
  carry on; someone else's -> PermanentError. Sizes are whole GiB, at least the type's minimum.
* Every mutation returns an operation, waited on with back-off up to ``operation_timeout``; still
  RUNNING after that -> ``ProvisionResult.in_progress`` / TemporaryError, and the next call picks the
  state up from the disk itself. 429, 5xx and 403 rate-limit answers are retried with back-off for
  ``api_retry_timeout``, then reported as TemporaryError.

Configuration is Google's standard one: ``google.auth.default()`` credentials and project;
``CLOUDSDK_CORE_PROJECT`` / ``GOOGLE_CLOUD_PROJECT`` for the project; ``CLOUDSDK_COMPUTE_ZONE`` for a
default zone; ``CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`` (gcloud's endpoint override; google-api-core
has no endpoint variable, only ``GOOGLE_CLOUD_UNIVERSE_DOMAIN``, which cannot name a host) for another
endpoint. A plain ``http://`` endpoint is an emulator: it gets anonymous credentials, so no real token
is ever sent unencrypted.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from provisioners.base import (Attacher, DataSource, Provisioner, ProvisionRequest, ProvisionResult, SnapshotRequest,
                               SnapshotResult, Snapshotter)
from storage.errors import PermanentError, StowageError, TemporaryError

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
NAME = "kubernetes.io/gce-pd"
CSI_NAME = "pd.csi.storage.gke.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
ZONE_LABELS = (ZONE_LABEL, "failure-domain.beta.kubernetes.io/zone", "topology.gke.io/zone")
GIB = 1 << 30
DISK_TYPES = ("pd-standard", "pd-ssd", "pd-balanced")
MAX_GB = 65536
LABEL_CLUSTER = "stowage-cluster"
LABEL_PV = "kubernetes-io-created-for-pv-name"
LABEL_CLAIM_NS = "kubernetes-io-created-for-pvc-namespace"
LABEL_CLAIM = "kubernetes-io-created-for-pvc-name"
ENV_ENDPOINT = "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"
ENV_PROJECTS = ("CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT")
ENV_ZONE = "CLOUDSDK_COMPUTE_ZONE"
ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_PROVIDER_RE = re.compile(r"^gce://([^/]+)/([^/]+)/([^/]+)$")
# Parameter keys (lower case: both Kubernetes and the CSI driver lower-case them before matching).
KNOWN = ("type", "replication-type", "zone", "zones", "fstype", "csi.storage.k8s.io/fstype",
         "disk-encryption-kms-key", "labels")
# VolumeSnapshotClass parameters of the PD CSI driver that Stowage takes (GS3).
SNAPSHOT_KNOWN = ("storage-locations", "labels", "snapshot-type")
LABEL_SNAPSHOT = "kubernetes-io-created-for-snapshotcontent-name"
_SNAPSHOT_HANDLE_RE = re.compile(r"^projects/([^/]+)/global/snapshots/([^/]+)$")


def min_size_gb(disk_type: str, regional: bool) -> int:
    """Compute Engine's smallest disk: 10 GB, except 200 GB for a regional pd-standard disk."""
    return 200 if regional and disk_type == "pd-standard" else 10


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def disk_name(volume_name: str) -> str:
    """The GCE name of a volume: itself when valid (``pvc-<uid>``), else a lower-cased, hashed form."""
    if NAME_RE.match(volume_name):
        return volume_name
    clean = re.sub(r"[^-a-z0-9]", "-", volume_name.lower()).strip("-") or "vol"
    if not clean[0].isalpha():
        clean = "v-" + clean
    digest = hashlib.sha256(volume_name.encode()).hexdigest()[:10]
    return f"{clean[:51].rstrip('-')}-{digest}"


def label_value(text: str) -> str:
    """A GCE label value: lower case, digits, ``_`` and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def zone_affinity(zones: list[str]) -> Obj:
    return {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": list(zones)}]}]}}


def affinity_zones(pv: Obj) -> list[str]:
    terms = ((((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {})
             .get("nodeSelectorTerms")) or []
    found: list[str] = []
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") in ZONE_LABELS and expr.get("operator", "In") == "In":
                found += [v for v in expr.get("values") or [] if v not in found]
    return found


def pd_name(pv: Obj) -> str:
    spec = pv.get("spec") or {}
    name = (spec.get("gcePersistentDisk") or {}).get("pdName")
    if not name:
        handle = str((spec.get("csi") or {}).get("volumeHandle") or "")
        name = handle.rsplit("/", 1)[-1] if "/disks/" in handle else ""
    if not name:
        raise PermanentError(f"persistentvolume {(pv.get('metadata') or {}).get('name')}: "
                             "spec.gcePersistentDisk.pdName: Required value")
    return str(name)


@dataclass(frozen=True)
class Instance:
    project: str
    zone: str
    name: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/zones/{self.zone}/instances/{self.name}"


@dataclass(frozen=True)
class DiskRef:
    project: str
    scope: str  # "zones/<zone>" or "regions/<region>"
    name: str

    @property
    def regional(self) -> bool:
        return self.scope.startswith("regions/")

    @property
    def where(self) -> str:
        return self.scope.split("/", 1)[1]

    @property
    def path(self) -> str:
        return f"projects/{self.project}/{self.scope}/disks/{self.name}"


def _path_of(url: str) -> str:
    i = url.find("projects/")
    return url[i:] if i >= 0 else url


@dataclass(frozen=True)
class _Clients:
    disks: Any
    region_disks: Any
    instances: Any
    zone_ops: Any
    region_ops: Any
    snapshots: Any
    global_ops: Any


class GcePdProvisioner(Provisioner, Attacher, Snapshotter):
    name = NAME
    aliases = frozenset({CSI_NAME})
    known_parameters = frozenset(KNOWN)
    # The PD CSI driver clones within a zone; Stowage does not yet (GS6): a claim clone is refused clearly.
    supports_clone = False

    def __init__(self, *, project: str | None = None, endpoint: str | None = None, credentials: Any = None,
                 zone: str | None = None, cluster_id: str = "stowage", nodes: Callable[[str], Obj | None] | None = None,
                 operation_timeout: float = 15.0, api_retry_timeout: float = 15.0, request_timeout: float = 30.0) -> None:
        # Nothing is read or contacted here: the registry builds every provisioner at start-up, also
        # where no Google credentials exist.
        self._project = project
        self._endpoint = endpoint
        self._credentials = credentials
        self._zone = zone
        self.cluster_id = label_value(cluster_id)
        self.nodes = nodes  # optional node name -> Node lookup (detach knows only the node name)
        self.operation_timeout = operation_timeout
        self.api_retry_timeout = api_retry_timeout
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._clients: _Clients | None = None
        self._instances: dict[str, Instance] = {}  # node name -> instance it was last attached through
        # volume name -> (disk path, insert operation) still RUNNING when provision() returned: the next call
        # polls that operation (one call) instead of inserting again. Lost on restart, where 409 takes over.
        self._pending: dict[str, tuple[str, str]] = {}

    # ---- configuration -------------------------------------------------------------------------------
    def _endpoint_url(self) -> str | None:
        value = self._endpoint or os.environ.get(ENV_ENDPOINT) or None
        if value:
            # gcloud's form carries the API path ("https://compute.googleapis.com/compute/v1/"); the client adds it.
            value = re.sub(r"/compute/v1/?$", "", value.rstrip("/") + "/").rstrip("/")
        return value

    def _setup(self) -> _Clients:
        with self._lock:
            if self._clients is not None:
                return self._clients
            from google.api_core.client_options import ClientOptions
            from google.cloud import compute_v1

            endpoint = self._endpoint_url()
            credentials = self._credentials
            project = self._project or next((os.environ[k] for k in ENV_PROJECTS if os.environ.get(k)), None)
            if credentials is None:
                if endpoint and endpoint.startswith("http://"):
                    from google.auth.credentials import AnonymousCredentials

                    credentials = AnonymousCredentials()
                else:
                    import google.auth
                    from google.auth.exceptions import DefaultCredentialsError

                    try:
                        credentials, found_project = google.auth.default(
                            scopes=["https://www.googleapis.com/auth/compute"])
                    except DefaultCredentialsError as exc:
                        raise PermanentError(f"{NAME}: no Google credentials found (google.auth.default): {exc}") from None
                    project = project or found_project
            if not project:
                raise PermanentError(f"{NAME}: no Google Cloud project configured "
                                     f"(set {' or '.join(ENV_PROJECTS)}, or use credentials that name one)")
            self._project = project
            options = ClientOptions(api_endpoint=endpoint) if endpoint else None
            kw = {"credentials": credentials, "client_options": options}
            self._clients = _Clients(compute_v1.DisksClient(**kw), compute_v1.RegionDisksClient(**kw),
                                     compute_v1.InstancesClient(**kw), compute_v1.ZoneOperationsClient(**kw),
                                     compute_v1.RegionOperationsClient(**kw), compute_v1.SnapshotsClient(**kw),
                                     compute_v1.GlobalOperationsClient(**kw))
            log.info("gce_pd.configured", project=project, endpoint=endpoint or "default")
            return self._clients

    @property
    def project(self) -> str:
        self._setup()
        assert self._project
        return self._project

    def default_zone(self) -> str | None:
        return self._zone or os.environ.get(ENV_ZONE) or None

    # ---- API calls -----------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], **kw: Any) -> Any:
        """One API call; throttling and server errors are retried with back-off within ``api_retry_timeout``."""
        import requests
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import TransportError

        deadline = time.monotonic() + self.api_retry_timeout
        delay = 0.1
        while True:
            try:
                return fn(retry=None, timeout=self.request_timeout, **kw)
            except (gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway, gexc.ServiceUnavailable,
                    gexc.GatewayTimeout, gexc.Forbidden, requests.ConnectionError, TransportError) as exc:
                retryable = not isinstance(exc, gexc.Forbidden) or _reason(exc) in (
                    "rateLimitExceeded", "userRateLimitExceeded")
                if not retryable:
                    raise
                code = getattr(exc, "code", None) or "connection"
                if time.monotonic() + delay > deadline:
                    raise TemporaryError(f"GCE API {what}: {_reason(exc) or type(exc).__name__} ({code}); "
                                         f"retried for {self.api_retry_timeout:g}s", delay=5.0) from None
                log.info("gce_pd.api_retry", call=what, code=code, reason=_reason(exc), delay=round(delay, 2))
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _wait(self, op: Any, scope: str, what: str) -> bool:
        """Wait for ``op`` with back-off until ``operation_timeout``; True when DONE (errors raised)."""
        from google.cloud import compute_v1

        deadline = time.monotonic() + self.operation_timeout
        delay = 0.05
        while True:
            if op.status == compute_v1.Operation.Status.DONE:
                errors = list(op.error.errors)
                if errors:
                    codes = [e.code for e in errors]
                    text = "; ".join(f"{e.code}: {e.message}" for e in errors)
                    if any(c in ("QUOTA_EXCEEDED", "ZONE_RESOURCE_POOL_EXHAUSTED", "RESOURCE_NOT_READY",
                                 "RATE_LIMIT_EXCEEDED", "RESOURCE_OPERATION_RATE_EXCEEDED") for c in codes):
                        raise TemporaryError(f"GCE {what} failed: {text}", delay=10.0)
                    raise PermanentError(f"GCE {what} failed: {text}")
                return True
            if time.monotonic() + delay > deadline:
                log.info("gce_pd.operation_running", call=what, operation=op.name)
                return False
            time.sleep(delay)
            delay = min(delay * 1.6, 1.0)
            current = self._operation(scope, op.name)
            if current is None:
                raise TemporaryError(f"GCE {what}: operation {op.name} vanished", delay=2.0)
            op = current

    def _get_disk(self, ref: DiskRef) -> Any | None:
        from google.api_core import exceptions as gexc

        clients = self._setup()
        try:
            if ref.regional:
                return self._call("regionDisks.get", clients.region_disks.get, project=ref.project, region=ref.where,
                                  disk=ref.name)
            return self._call("disks.get", clients.disks.get, project=ref.project, zone=ref.where, disk=ref.name)
        except gexc.NotFound:
            return None

    def _ours(self, disk: Any, volume_name: str) -> bool:
        labels = dict(disk.labels or {})
        return labels.get(LABEL_CLUSTER) == self.cluster_id and labels.get(LABEL_PV) == label_value(volume_name)

    # ---- parameters ----------------------------------------------------------------------------------
    def check_parameters(self, parameters: dict[str, str]) -> None:
        unknown = sorted(k for k in parameters if k.lower() not in KNOWN)
        if unknown:
            raise PermanentError(
                f"invalid parameter(s) for provisioner {self.name}: {', '.join(repr(u) for u in unknown)}"
                f" (known: {', '.join(sorted(KNOWN))})")

    def _zones(self, req: ProvisionRequest, params: dict[str, str], regional: bool) -> list[str]:
        zone = params.get("zone", "").strip()
        zones = [z.strip() for z in params.get("zones", "").split(",") if z.strip()]
        if "zone" in params and "zones" in params:
            raise PermanentError("parameters zone and zones must not be used at the same time")
        allowed = _allowed_zones(req.storage_class)
        if (zone or zones) and allowed:
            raise PermanentError("parameters zone/zones cannot be used together with allowedTopologies")
        for z in ([zone] if zone else []) + zones + allowed:
            if not ZONE_RE.match(z):
                raise PermanentError(f'parameter zone/zones: invalid zone "{z}" (expected e.g. us-central1-a)')
        if req.selected_node is not None:
            if zone or zones:
                raise PermanentError("parameters zone/zones cannot be used with volumeBindingMode WaitForFirstConsumer: "
                                     "use allowedTopologies to restrict the zones")
            node_zone = node_zone_of(req.selected_node)
            if not node_zone:
                raise PermanentError(f"selected node {(req.selected_node.get('metadata') or {}).get('name')} has "
                                     f"no {ZONE_LABEL} label and no gce:// providerID")
            if allowed and node_zone not in allowed:
                raise PermanentError(f"selected node's zone {node_zone} is not in allowedTopologies {allowed}")
            if not regional:
                return [node_zone]
            others = [z for z in sorted(set(allowed)) if z != node_zone and region_of(z) == region_of(node_zone)]
            if not others:
                raise PermanentError("replication-type regional-pd under WaitForFirstConsumer needs allowedTopologies "
                                     f"naming a second zone of region {region_of(node_zone)}")
            return [node_zone, _pick(others, req.volume_name, 1)[0]]
        candidates = [zone] if zone else sorted(set(zones or allowed))
        if not candidates and self.default_zone():
            candidates = [str(self.default_zone())]
        if not candidates:
            raise PermanentError("no zone for the disk: set parameter zone or zones, use WaitForFirstConsumer, or "
                                 f"configure a default zone ({ENV_ZONE})")
        if not regional:
            return _pick(candidates, req.volume_name, 1)
        if len(candidates) < 2:
            raise PermanentError(f"replication-type regional-pd needs two zones, got {candidates}")
        first = _pick(candidates, req.volume_name, 1)[0]
        same_region = [z for z in candidates if z != first and region_of(z) == region_of(first)]
        if not same_region:
            raise PermanentError(f"replication-type regional-pd needs two zones of one region, got {candidates}")
        return [first, _pick(same_region, req.volume_name, 1)[0]]

    # ---- Provisioner ---------------------------------------------------------------------------------
    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        from google.api_core import exceptions as gexc
        from google.cloud import compute_v1

        self.check_parameters(req.parameters)
        params = {k.lower(): str(v) for k, v in req.parameters.items()}
        disk_type = params.get("type", "pd-standard").strip() or "pd-standard"
        if disk_type not in DISK_TYPES:
            raise PermanentError(f'parameter type: unsupported value "{disk_type}" (supported: {", ".join(DISK_TYPES)})')
        replication = params.get("replication-type", "none").strip().lower() or "none"
        if replication not in ("none", "regional-pd"):
            raise PermanentError(f'parameter replication-type: unsupported value "{replication}" (none, regional-pd)')
        regional = replication == "regional-pd"
        if req.volume_mode not in ("Filesystem", "Block"):
            raise PermanentError(f"volumeMode {req.volume_mode} is not supported")
        modes = set(req.access_modes)
        if "ReadWriteMany" in modes:
            raise PermanentError("access mode ReadWriteMany is not supported by GCE persistent disks "
                                 "(ReadWriteOnce, ReadWriteOncePod, ReadOnlyMany)")
        fs_type = params.get("csi.storage.k8s.io/fstype") or params.get("fstype") or "ext4"
        extra_labels = _parse_labels(params.get("labels", ""))
        zones = self._zones(req, params, regional)
        minimum = min_size_gb(disk_type, regional)
        size_gb = max(math.ceil(req.requested_bytes / GIB), minimum)
        if size_gb > MAX_GB:
            raise PermanentError(f"requested size {req.requested_bytes} bytes is over GCE's {MAX_GB} GiB limit")

        name = disk_name(req.volume_name)
        meta = req.claim.get("metadata") or {}
        labels = {**extra_labels, LABEL_CLUSTER: self.cluster_id, LABEL_PV: label_value(req.volume_name),
                  LABEL_CLAIM_NS: label_value(meta.get("namespace") or "default"),
                  LABEL_CLAIM: label_value(meta.get("name") or "")}
        description = json.dumps({"kubernetes.io/created-for/pv/name": req.volume_name,
                                  "kubernetes.io/created-for/pvc/namespace": meta.get("namespace") or "default",
                                  "kubernetes.io/created-for/pvc/name": meta.get("name") or "",
                                  "stowage.io/cluster": self.cluster_id}, sort_keys=True)
        clients = self._setup()
        project = self.project
        scope = f"regions/{region_of(zones[0])}" if regional else f"zones/{zones[0]}"
        ref = DiskRef(project, scope, name)
        disk = compute_v1.Disk(name=name, size_gb=size_gb, type_=f"projects/{project}/{scope}/diskTypes/{disk_type}",
                               labels=labels, description=description)
        if regional:
            disk.replica_zones = [f"projects/{project}/zones/{z}" for z in zones]
        if params.get("disk-encryption-kms-key"):
            disk.disk_encryption_key = compute_v1.CustomerEncryptionKey(kms_key_name=params["disk-encryption-kms-key"])
        if req.data_source is not None:
            if self._get_disk(ref) is not None:  # made by an earlier attempt: the snapshot may be gone by now
                return self._existing(req, ref, zones)
            snapshot = self._restore_source(req.data_source)
            if isinstance(snapshot, ProvisionResult):
                return snapshot
            # GS5: at least the snapshot's size (GCE refuses smaller); the disk's own type and zones.
            size_gb = max(size_gb, int(snapshot.disk_size_gb))
            disk.size_gb = size_gb
            disk.source_snapshot = f"projects/{project}/global/snapshots/{snapshot.name}"
        with self._lock:
            pending = self._pending.get(req.volume_name)
        if pending is not None and pending[0] == ref.path:
            op = self._operation(scope, pending[1])
            if op is not None:
                return self._inserted(req, ref, op, fs_type, size_gb, zones)
        try:
            if regional:
                op = self._call("regionDisks.insert", clients.region_disks.insert_unary, project=project,
                                region=ref.where, disk_resource=disk)
            else:
                op = self._call("disks.insert", clients.disks.insert_unary, project=project, zone=ref.where,
                                disk_resource=disk)
        except gexc.Conflict:
            return self._existing(req, ref, zones)
        except gexc.BadRequest as exc:
            raise PermanentError(f"GCE refused disk {ref.path}: {exc.message}") from None
        except gexc.Forbidden as exc:
            if _reason(exc) == "quotaExceeded":
                raise TemporaryError(f"GCE quota exceeded creating disk {ref.path}: {exc.message}", delay=30.0) from None
            raise PermanentError(f"GCE refused disk {ref.path}: {exc.message}") from None
        log.info("gce_pd.disk_inserted", disk=ref.path, size_gb=size_gb, type=disk_type, zones=zones)
        return self._inserted(req, ref, op, fs_type, size_gb, zones)

    def _restore_source(self, source: DataSource) -> Any:
        """The READY snapshot a claim restores from, or ``in_progress`` while it is still being made."""
        if source.kind == "PersistentVolumeClaim":
            raise PermanentError(f"provisioner {self.name} does not clone claims (dataSource kind "
                                 "PersistentVolumeClaim); take a VolumeSnapshot of the source claim and restore from it")
        if source.kind != "VolumeSnapshot":
            raise PermanentError(f"provisioner {self.name} cannot restore from a dataSource of kind {source.kind}")
        if source.driver and source.driver not in self.names():
            raise PermanentError(f"provisioner {self.name} cannot restore from a snapshot of driver {source.driver!r} "
                                 f"(only {', '.join(sorted(self.names()))} snapshots)")
        _project, name = self._parse_snapshot_handle(source.snapshot_handle)
        snapshot = self._get_snapshot(name)
        if snapshot is None:
            raise PermanentError(f"GCE snapshot {source.snapshot_handle} does not exist: cannot restore from it")
        status = str(snapshot.status)
        if status in ("CREATING", "UPLOADING"):
            return ProvisionResult.in_progress(f"GCE snapshot {source.snapshot_handle} is {status}", retry_after=2.0)
        if status != "READY":
            raise PermanentError(f"GCE snapshot {source.snapshot_handle} is {status}: cannot restore from it")
        return snapshot

    # ---- snapshots (GS*) -----------------------------------------------------------------------------
    def _parse_snapshot_handle(self, handle: str) -> tuple[str, str]:
        m = _SNAPSHOT_HANDLE_RE.match(handle or "")
        if not m:
            raise PermanentError(f'"{handle}" is not a GCE snapshot handle (projects/<project>/global/snapshots/<name>)')
        if m.group(1) != self.project:
            raise PermanentError(f"GCE snapshot {handle} is in project {m.group(1)}, not {self.project}")
        return m.group(1), m.group(2)

    def _get_snapshot(self, name: str) -> Any | None:
        from google.api_core import exceptions as gexc

        clients = self._setup()
        try:
            return self._call("snapshots.get", clients.snapshots.get, project=self.project, snapshot=name)
        except gexc.NotFound:
            return None

    @staticmethod
    def snapshot_name(content_name: str) -> str:
        """The PD CSI driver's naming: the external-snapshotter's ``snapshot-<uid>`` for ``snapcontent-<uid>``."""
        base = "snapshot-" + content_name.removeprefix("snapcontent-")
        return disk_name(base)

    def _check_snapshot_parameters(self, parameters: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        params = {k.lower(): str(v) for k, v in parameters.items() if not k.lower().startswith("csi.storage.k8s.io/")}
        unknown = sorted(k for k in parameters if k.lower() not in SNAPSHOT_KNOWN
                         and not k.lower().startswith("csi.storage.k8s.io/"))
        if unknown:
            raise PermanentError(f"invalid VolumeSnapshotClass parameter(s) for driver {self.name}: "
                                 f"{', '.join(repr(u) for u in unknown)} (known: {', '.join(SNAPSHOT_KNOWN)})")
        kind = params.get("snapshot-type", "snapshots").strip().lower() or "snapshots"
        if kind != "snapshots":
            raise PermanentError(f'VolumeSnapshotClass parameter snapshot-type: unsupported value "{kind}" '
                                 '(only "snapshots"; disk images are not made)')
        locations = [x.strip().lower() for x in params.get("storage-locations", "").split(",") if x.strip()]
        if len(locations) > 1:
            raise PermanentError("VolumeSnapshotClass parameter storage-locations: at most one location")
        return locations, _parse_labels(params.get("labels", ""))

    def _snapshot_result(self, snapshot: Any) -> SnapshotResult:
        import datetime

        handle = f"projects/{self.project}/global/snapshots/{snapshot.name}"
        status = str(snapshot.status)
        if status in ("FAILED", "DELETING"):
            raise PermanentError(f"GCE snapshot {handle} is {status}")
        try:
            created = datetime.datetime.fromisoformat(str(snapshot.creation_timestamp)).timestamp()
        except ValueError:
            created = time.time()
        ready = status == "READY"
        return SnapshotResult(handle=handle, restore_size=int(snapshot.disk_size_gb) * GIB, ready=ready,
                              creation_time=created, message="" if ready else f"GCE snapshot {handle} is {status}",
                              retry_after=2.0)

    def create_snapshot(self, req: SnapshotRequest) -> SnapshotResult:
        from google.api_core import exceptions as gexc
        from google.cloud import compute_v1

        locations, extra_labels = self._check_snapshot_parameters(req.parameters)
        name = self.snapshot_name(req.name)
        label = label_value(req.name)
        existing = self._get_snapshot(name)
        if existing is None:
            pv_name = (req.pv.get("metadata") or {}).get("name", "")
            source = next((ref for ref in self._locate(req.pv) if self._get_disk(ref) is not None), None)
            if source is None:
                raise PermanentError(f"the GCE disk {pd_name(req.pv)} of PV {pv_name} does not exist: nothing to snapshot")
            body = compute_v1.Snapshot(name=name, source_disk=source.path,
                                       labels={**extra_labels, LABEL_CLUSTER: self.cluster_id, LABEL_SNAPSHOT: label,
                                               LABEL_PV: label_value(pv_name)},
                                       description=json.dumps({"storage.kubernetes.io/snapshot-content": req.name,
                                                               "stowage.io/cluster": self.cluster_id}))
            if locations:
                body.storage_locations = locations
            clients = self._setup()
            try:
                op = self._call("snapshots.insert", clients.snapshots.insert_unary, project=self.project,
                                snapshot_resource=body)
            except gexc.Conflict:
                op = None  # an earlier attempt made it (its answer was lost): found by name below
            except gexc.NotFound as exc:
                raise PermanentError(f"GCE refused snapshot {name}: {exc.message}") from None
            except gexc.BadRequest as exc:
                if _reason(exc) == "resourceNotReady":
                    raise TemporaryError(f"disk {source.path} is not ready to be snapshotted", delay=5.0) from None
                raise PermanentError(f"GCE refused snapshot {name}: {exc.message}") from None
            if op is not None:
                log.info("gce_pd.snapshot_inserted", snapshot=name, disk=source.path)
                self._wait(op, "global", f"insert of snapshot {name}")
            existing = self._get_snapshot(name)
            if existing is None:
                raise TemporaryError(f"GCE snapshot {name} vanished while being made", delay=2.0)
        labels = dict(existing.labels or {})
        if labels.get(LABEL_CLUSTER) != self.cluster_id or labels.get(LABEL_SNAPSHOT) != label:
            raise PermanentError(f"a GCE snapshot {name} already exists and was not made for {req.name} by cluster "
                                 f"{self.cluster_id}; refusing to use it")
        return self._snapshot_result(existing)

    def delete_snapshot(self, handle: str, parameters: dict[str, str]) -> None:
        from google.api_core import exceptions as gexc

        _project, name = self._parse_snapshot_handle(handle)
        clients = self._setup()
        try:
            op = self._call("snapshots.delete", clients.snapshots.delete_unary, project=self.project, snapshot=name)
        except gexc.NotFound:
            return  # gone is success
        if not self._wait(op, "global", f"delete of snapshot {name}"):
            raise TemporaryError(f"GCE snapshot {handle} is being deleted", delay=2.0)
        log.info("gce_pd.snapshot_deleted", snapshot=handle)

    def snapshot_status(self, handle: str, parameters: dict[str, str]) -> SnapshotResult | None:
        _project, name = self._parse_snapshot_handle(handle)
        snapshot = self._get_snapshot(name)
        return None if snapshot is None else self._snapshot_result(snapshot)

    def _inserted(self, req: ProvisionRequest, ref: DiskRef, op: Any, fs_type: str, size_gb: int,
                  zones: list[str]) -> ProvisionResult:
        try:
            done = self._wait(op, ref.scope, f"insert of disk {ref.path}")
        except StowageError:
            with self._lock:
                self._pending.pop(req.volume_name, None)
            raise
        with self._lock:
            if done:
                self._pending.pop(req.volume_name, None)
            else:
                self._pending[req.volume_name] = (ref.path, op.name)
        if not done:
            return ProvisionResult.in_progress(f"disk {ref.path} is being created", retry_after=2.0)
        return ProvisionResult.finished(self._source(ref.name, fs_type), f"{size_gb}Gi", zone_affinity(zones))

    def _operation(self, scope: str, name: str) -> Any | None:
        """A zone or region operation by name; None once Compute Engine forgot it."""
        from google.api_core import exceptions as gexc

        clients = self._setup()
        where = scope.split("/", 1)[-1]
        try:
            if scope == "global":
                return self._call("globalOperations.get", clients.global_ops.get, project=self.project, operation=name)
            if scope.startswith("zones/"):
                return self._call("zoneOperations.get", clients.zone_ops.get, project=self.project, zone=where,
                                  operation=name)
            return self._call("regionOperations.get", clients.region_ops.get, project=self.project, region=where,
                              operation=name)
        except gexc.NotFound:
            return None

    def _source(self, name: str, fs_type: str) -> Obj:
        return {"gcePersistentDisk": {"pdName": name, "fsType": fs_type}}

    def _existing(self, req: ProvisionRequest, ref: DiskRef, zones: list[str]) -> ProvisionResult:
        """Insert said the name exists: a disk an earlier attempt made (ours), or somebody else's."""
        disk = self._get_disk(ref)
        if disk is None:  # deleted in between: insert again next time
            return ProvisionResult.in_progress(f"disk {ref.path} vanished while being looked up", retry_after=1.0)
        if not self._ours(disk, req.volume_name):
            raise PermanentError(f"a GCE disk {ref.path} already exists and was not made for volume {req.volume_name} "
                                 f"by cluster {self.cluster_id}; refusing to use it")
        status = str(disk.status)
        if status == "CREATING":
            return ProvisionResult.in_progress(f"disk {ref.path} is being created", retry_after=2.0)
        if status == "FAILED":
            self._delete_disk(ref)  # a failed create leaves a husk; remove it so the next attempt can insert
            raise TemporaryError(f"creation of disk {ref.path} failed; retrying", delay=5.0)
        if status != "READY":
            raise TemporaryError(f"disk {ref.path} is {status}", delay=5.0)
        params = {k.lower(): str(v) for k, v in req.parameters.items()}
        fs_type = params.get("csi.storage.k8s.io/fstype") or params.get("fstype") or "ext4"
        actual = [re.sub(r".*zones/", "", z) for z in disk.replica_zones] if ref.regional else [ref.where]
        log.info("gce_pd.disk_adopted", disk=ref.path)
        return ProvisionResult.finished(self._source(ref.name, fs_type), f"{int(disk.size_gb)}Gi",
                                        zone_affinity(actual or zones))

    def _locate(self, pv: Obj, instance: Instance | None = None) -> list[DiskRef]:
        """Where the PV's disk may be: from its zone affinity, else the instance's zone and region."""
        name = pd_name(pv)
        project = self.project
        zones = affinity_zones(pv)
        if len(zones) >= 2:
            return [DiskRef(project, f"regions/{region_of(zones[0])}", name)]
        if len(zones) == 1:
            return [DiskRef(project, f"zones/{zones[0]}", name)]
        zone = instance.zone if instance else self.default_zone()
        if not zone:
            raise PermanentError(f"cannot tell the zone of disk {name}: the PV has no {ZONE_LABEL} node affinity")
        return [DiskRef(project, f"zones/{zone}", name), DiskRef(project, f"regions/{region_of(zone)}", name)]

    def _delete_disk(self, ref: DiskRef) -> None:
        from google.api_core import exceptions as gexc

        clients = self._setup()
        try:
            if ref.regional:
                op = self._call("regionDisks.delete", clients.region_disks.delete_unary, project=ref.project,
                                region=ref.where, disk=ref.name)
            else:
                op = self._call("disks.delete", clients.disks.delete_unary, project=ref.project, zone=ref.where,
                                disk=ref.name)
        except gexc.NotFound:
            return
        except gexc.BadRequest as exc:
            if _reason(exc) == "resourceInUseByAnotherResource":
                raise TemporaryError(f"disk {ref.path} is still attached: {exc.message}", delay=5.0) from None
            raise PermanentError(f"GCE refused to delete disk {ref.path}: {exc.message}") from None
        if not self._wait(op, ref.scope, f"delete of disk {ref.path}"):
            raise TemporaryError(f"disk {ref.path} is being deleted", delay=2.0)
        log.info("gce_pd.disk_deleted", disk=ref.path)

    def delete(self, pv: Obj) -> None:
        if not self.owns(pv):
            return
        volume_name = (pv.get("metadata") or {}).get("name", "")
        for ref in self._locate(pv):
            disk = self._get_disk(ref)
            if disk is None:
                continue
            if not self._ours(disk, volume_name):
                log.warning("gce_pd.delete_foreign_disk_ignored", disk=ref.path, volume=volume_name)
                return
            if str(disk.status) == "DELETING":
                raise TemporaryError(f"disk {ref.path} is being deleted", delay=2.0)
            if list(disk.users):
                raise TemporaryError(f"disk {ref.path} is still attached to {', '.join(_path_of(u) for u in disk.users)}",
                                     delay=5.0)
            self._delete_disk(ref)
            return

    def expand(self, pv: Obj, new_size: int) -> int:
        from google.api_core import exceptions as gexc
        from google.cloud import compute_v1

        clients = self._setup()
        want = math.ceil(new_size / GIB)
        if want > MAX_GB:
            raise PermanentError(f"requested size {new_size} bytes is over GCE's {MAX_GB} GiB limit")
        for ref in self._locate(pv):
            disk = self._get_disk(ref)
            if disk is None:
                continue
            have = int(disk.size_gb)
            if have >= want:  # grow only; a retry after the resize finished lands here
                return have * GIB
            try:
                if ref.regional:
                    op = self._call("regionDisks.resize", clients.region_disks.resize_unary, project=ref.project,
                                    region=ref.where, disk=ref.name,
                                    region_disks_resize_request_resource=compute_v1.RegionDisksResizeRequest(size_gb=want))
                else:
                    op = self._call("disks.resize", clients.disks.resize_unary, project=ref.project, zone=ref.where,
                                    disk=ref.name, disks_resize_request_resource=compute_v1.DisksResizeRequest(size_gb=want))
            except gexc.BadRequest as exc:
                raise PermanentError(f"GCE refused to resize disk {ref.path} to {want} GiB: {exc.message}") from None
            if not self._wait(op, ref.scope, f"resize of disk {ref.path}"):
                raise TemporaryError(f"disk {ref.path} is being resized to {want} GiB", delay=2.0)
            log.info("gce_pd.disk_resized", disk=ref.path, size_gb=want)
            return want * GIB
        raise PermanentError(f"disk {pd_name(pv)} of volume {(pv.get('metadata') or {}).get('name')} does not exist")

    # ---- Attacher ------------------------------------------------------------------------------------
    def instance_of(self, node: Obj) -> Instance:
        """The VM behind a Node: its ``gce://<project>/<zone>/<instance>`` providerID, else its name and zone label."""
        meta = node.get("metadata") or {}
        provider_id = str((node.get("spec") or {}).get("providerID") or "")
        m = _PROVIDER_RE.match(provider_id)
        if m:
            return Instance(*m.groups())
        zone = node_zone_of(node)
        if not zone:
            raise PermanentError(f"node {meta.get('name')} has no gce:// providerID and no {ZONE_LABEL} label")
        return Instance(self.project, zone, str(meta.get("name") or ""))

    @staticmethod
    def read_only(pv: Obj) -> bool:
        """Attached read-only when the PV says so or can only be used read-only (ReadOnlyMany)."""
        spec = pv.get("spec") or {}
        modes = set(spec.get("accessModes") or [])
        return bool((spec.get("gcePersistentDisk") or {}).get("readOnly")) or modes == {"ReadOnlyMany"}

    def attach(self, pv: Obj, node: Obj) -> dict[str, str]:
        from google.api_core import exceptions as gexc
        from google.cloud import compute_v1

        clients = self._setup()
        vm = self.instance_of(node)
        node_name = (node.get("metadata") or {}).get("name", "")
        name = pd_name(pv)
        mode = "READ_ONLY" if self.read_only(pv) else "READ_WRITE"
        metadata = {"devicePath": f"/dev/disk/by-id/google-{name}", "deviceName": name}
        refs = self._locate(pv, vm)
        zones = affinity_zones(pv)
        if zones and vm.zone not in zones:  # CG6: the API refuses too, but say why in Kubernetes' terms
            raise PermanentError(f"disk {name} is in zone(s) {', '.join(zones)} and cannot be attached to node "
                                 f"{node_name} in zone {vm.zone}")
        with self._lock:
            self._instances[node_name] = vm
        try:
            instance = self._call("instances.get", clients.instances.get, project=vm.project, zone=vm.zone,
                                  instance=vm.name)
        except gexc.NotFound:
            raise TemporaryError(f"instance {vm.path} of node {node_name} not found", delay=10.0) from None
        for attached in instance.disks:
            if any(_path_of(attached.source) == ref.path for ref in refs):
                return {**metadata, "deviceName": attached.device_name,
                        "devicePath": f"/dev/disk/by-id/google-{attached.device_name}"}
        last: Exception | None = None
        for ref in refs:
            body = compute_v1.AttachedDisk(source=ref.path, device_name=name, mode=mode)
            try:
                op = self._call("instances.attachDisk", clients.instances.attach_disk_unary, project=vm.project,
                                zone=vm.zone, instance=vm.name, attached_disk_resource=body)
            except gexc.NotFound as exc:
                last = exc
                continue
            except gexc.BadRequest as exc:
                reason = _reason(exc)
                if reason == "resourceInUseByAnotherResource" and vm.path in exc.message:
                    raise TemporaryError(f"disk {ref.path} is being attached to {vm.path}", delay=2.0) from None
                if reason == "resourceInUseByAnotherResource":
                    raise TemporaryError(f"disk {ref.path} cannot be attached {mode.lower().replace('_', '-')} to "
                                         f"node {node_name}: {exc.message}", delay=5.0) from None
                if reason == "resourceNotReady":
                    raise TemporaryError(f"disk {ref.path} is not ready: {exc.message}", delay=2.0) from None
                raise PermanentError(f"GCE refused to attach disk {ref.path} to {vm.path}: {exc.message}") from None
            if not self._wait(op, f"zones/{vm.zone}", f"attach of disk {ref.path} to {vm.path}"):
                raise TemporaryError(f"disk {ref.path} is being attached to {vm.path}", delay=2.0)
            log.info("gce_pd.attached", disk=ref.path, instance=vm.path, mode=mode)
            return metadata
        raise PermanentError(f"disk {name} not found in {', '.join(r.scope for r in refs)}: {last}")

    def _instance_for(self, node_name: str) -> Instance | None:
        if self.nodes is not None:
            node = self.nodes(node_name)
            if node is not None:
                return self.instance_of(node)
        with self._lock:
            return self._instances.get(node_name)

    def detach(self, pv: Obj, node_name: str) -> None:
        from google.api_core import exceptions as gexc

        clients = self._setup()
        name = pd_name(pv)
        vm = self._instance_for(node_name)
        refs = self._locate(pv, vm)
        if vm is None:
            # Only the node name is known: find the VM among the disk's users (GCE names VMs as their nodes).
            for ref in refs:
                disk = self._get_disk(ref)
                for user in (disk.users if disk is not None else []):
                    m = re.search(r"projects/([^/]+)/zones/([^/]+)/instances/([^/]+)$", _path_of(user))
                    if m and m.group(3) == node_name:
                        vm = Instance(*m.groups())
            if vm is None:
                return  # not attached to a VM of that name: nothing to do
        try:
            instance = self._call("instances.get", clients.instances.get, project=vm.project, zone=vm.zone,
                                  instance=vm.name)
        except gexc.NotFound:
            return  # the VM is gone, and its disks were detached with it
        device = next((a.device_name for a in instance.disks if any(_path_of(a.source) == r.path for r in refs)), None)
        if device is None:
            return
        try:
            op = self._call("instances.detachDisk", clients.instances.detach_disk_unary, project=vm.project,
                            zone=vm.zone, instance=vm.name, device_name=device)
        except gexc.NotFound:
            return
        except gexc.BadRequest as exc:
            if "No attached disk" in exc.message:
                return
            raise PermanentError(f"GCE refused to detach {device} from {vm.path}: {exc.message}") from None
        if not self._wait(op, f"zones/{vm.zone}", f"detach of disk {name} from {vm.path}"):
            raise TemporaryError(f"disk {name} is being detached from {vm.path}", delay=2.0)
        log.info("gce_pd.detached", disk=name, instance=vm.path)


def _reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None) or []
    for err in errors:
        if isinstance(err, dict) and err.get("reason"):
            return str(err["reason"])
    return str(getattr(exc, "reason", "") or "")


def _pick(candidates: list[str], key: str, count: int) -> list[str]:
    """``count`` of ``candidates`` chosen by a stable hash of ``key`` (a retry chooses the same)."""
    ordered = sorted(set(candidates))
    start = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(ordered)
    return [ordered[(start + i) % len(ordered)] for i in range(min(count, len(ordered)))]


def _allowed_zones(storage_class: Obj) -> list[str]:
    zones: list[str] = []
    for term in storage_class.get("allowedTopologies") or []:
        for expr in term.get("matchLabelExpressions") or []:
            if expr.get("key") in ZONE_LABELS:
                zones += [str(v) for v in expr.get("values") or [] if v not in zones]
    return zones


def _parse_labels(text: str) -> dict[str, str]:
    """The CSI driver's ``labels`` parameter: ``key=value,key2=value2`` in GCE's label syntax."""
    out: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.match(r"^[a-z][a-z0-9_-]{0,62}$", key) or not re.match(r"^[a-z0-9_-]{0,63}$", value):
            raise PermanentError(f'parameter labels: invalid label "{item}" (key=value, lower case letters, digits, '
                                 "_ and -, at most 63 characters)")
        out[key] = value
    return out


def node_zone_of(node: Obj) -> str | None:
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key in ZONE_LABELS:
        if labels.get(key):
            return str(labels[key])
    m = _PROVIDER_RE.match(str((node.get("spec") or {}).get("providerID") or ""))
    return m.group(2) if m else None
