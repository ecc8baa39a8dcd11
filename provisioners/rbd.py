"""Ceph RBD images through the rados/rbd bindings (RB1-RB8).

Two spellings of a class select this provisioner, so a StorageClass copied from Kubernetes or from a
ceph-csi deployment works unchanged:

* in-tree ``kubernetes.io/rbd``: ``monitors``, ``adminId``, ``adminSecretName``,
  ``adminSecretNamespace``, ``pool``, ``userId``, ``userSecretName``, ``userSecretNamespace``,
  ``imageFormat``, ``imageFeatures``, ``fsType``;
* ceph-csi ``rbd.csi.ceph.com``: ``clusterID`` (monitors from the ``ceph-csi-config`` ConfigMap),
  ``pool``, ``imageFeatures``, ``dataPool``, ``csi.storage.k8s.io/provisioner-secret-*``,
  ``node-stage-secret-*``, ``controller-expand-secret-*``, ``fstype``; the other standard
  ``csi.storage.k8s.io/*`` keys are accepted and ignored.

The image is named after the PV (``kubernetes-dynamic-<pv>``, as in-tree) and carries the PV's name in
its metadata, so a provision repeated after a crash finds the image the first call made (RB2). The PV
gets the in-tree ``rbd`` source; where its admin Secret lives is kept in annotations, for delete and
expand. Keys travel in memory only (``rados_conf``), never on disk or in a message.

Snapshots (RS1-RS10) are ceph-csi's: a protected ``rbd snap`` on the image named after the
VolumeSnapshotContent; restores and claim clones are ``rbd clone`` + flatten, so no volume ever depends on a
snapshot and a snapshot can always be deleted. A PV deleted while its image has snapshots retires the image
(renamed ``kubernetes-retired-<pv>``) until its last snapshot goes.
"""
from __future__ import annotations

import datetime
import errno
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import structlog

from provisioners.base import (DataSource, ProvisionRequest, ProvisionResult, Provisioner, SnapshotRequest, SnapshotResult,
                               Snapshotter, current_config_maps, current_secrets)
from storage.api.ceph import (Credentials, new_rados, credentials_from_secret, csi_config_location, import_binding,
                              parse_csi_config, rados_conf, split_monitors)
from storage.errors import PermanentError, TemporaryError

log = structlog.get_logger(__name__)

MiB = 1 << 20
IMAGE_PREFIX = "kubernetes-dynamic-"
META_VOLUME = "stowage.io/volume"  # image metadata: the PV it was made for
# Image metadata on an image whose PV is deleted while snapshots of it remain (RS7): the PV it was made for.
META_RETIRED = "stowage.io/retired-volume"
RETIRED_PREFIX = "kubernetes-retired-"
# The temporary snapshot a clone is cut from, on the source image (RS10): named after the new volume.
CLONE_SNAP_PREFIX = "stowage-clone-"
# A snapshot handle: <pool>/<image id>@<snapshot name>; the id survives the image's rename on retirement.
_HANDLE = re.compile(r"^(?P<pool>[^/@]+)/(?P<image_id>[0-9a-f]+)@(?P<snap>[^/@]+)$")
# VolumeSnapshotClass parameters: ceph-csi's (clusterID, pool, the snapshotter Secret) or, for a cluster not in
# ceph-csi's ConfigMap, the in-tree class's spelling of where the cluster is (monitors, admin*).
SNAPSHOT_PARAMETERS = frozenset({"clusterID", "pool", "monitors", "adminId", "adminSecretName", "adminSecretNamespace"})
# PV annotations: where the provisioner's (admin) credentials are, for delete and expand.
ANN_ADMIN_SECRET = "rbd.stowage.io/admin-secret"  # "namespace/name"
ANN_ADMIN_ID = "rbd.stowage.io/admin-id"
ANN_EXPAND_SECRET = "rbd.stowage.io/expand-secret"  # ceph-csi's controller-expand Secret, "namespace/name"
# How long a monitor may stay silent before a call gives up (and the controller retries later).
CONNECT_TIMEOUT_SECONDS = 10

CSI_PREFIX = "csi.storage.k8s.io/"
IN_TREE_PARAMETERS = frozenset({
    "monitors", "adminId", "adminSecretName", "adminSecretNamespace", "pool", "userId", "userSecretName",
    "userSecretNamespace", "imageFormat", "imageFeatures", "fsType",
})
CSI_PARAMETERS = frozenset({"clusterID", "pool", "imageFeatures", "imageFormat", "dataPool"})
CSI_SECRET_KEYS = ("provisioner-secret", "node-stage-secret", "controller-expand-secret")


def image_name(volume_name: str) -> str:
    return f"{IMAGE_PREFIX}{volume_name}"


def retired_name(volume_name: str) -> str:
    return f"{RETIRED_PREFIX}{volume_name}"


def round_up_mib(size: int) -> int:
    return max(1, -(-int(size) // MiB)) * MiB


@dataclass(frozen=True)
class ClassConfig:
    """A StorageClass read into what the provisioner does with it."""

    monitors: tuple[str, ...]
    pool: str
    admin_secret: tuple[str, str]  # (namespace, name)
    admin_id: str
    user: str  # may be empty: the node takes userID from a ceph-csi Secret
    user_secret: tuple[str, str]  # (namespace or "" for the pod's, name); name "" for none
    features: str
    image_format: str
    data_pool: str
    fs_type: str
    expand_secret: tuple[str, str] | None = None


def _secret_ref(params: dict[str, str], key: str) -> tuple[str, str] | None:
    name = params.get(f"{CSI_PREFIX}{key}-name", "").strip()
    if not name:
        return None
    return params.get(f"{CSI_PREFIX}{key}-namespace", "").strip() or "default", name


def parse_class(params: dict[str, str], provisioner_name: str, config_maps: Any = None) -> ClassConfig:
    """The class's parameters in either spelling; PermanentError naming the parameter at fault."""
    context = f"StorageClass (provisioner {provisioner_name})"
    image_format = params.get("imageFormat", "2").strip() or "2"
    if image_format not in ("1", "2"):
        raise PermanentError(f"{context} parameter imageFormat: Unsupported value: {image_format!r}: supported values: \"1\", \"2\"")
    features = params.get("imageFeatures", "").strip()
    if image_format == "1" and features:
        raise PermanentError(f"{context} parameter imageFeatures: only image format 2 has features")
    if image_format == "2" and not features:
        features = "layering"
    if "clusterID" in params or any(k.startswith(CSI_PREFIX) for k in params):
        cluster_id = params.get("clusterID", "").strip()
        if not cluster_id:
            raise PermanentError(f"{context} parameter clusterID: Required value")
        pool = params.get("pool", "").strip()
        if not pool:
            raise PermanentError(f"{context} parameter pool: Required value")
        namespace, name = csi_config_location()
        if config_maps is None:
            raise TemporaryError(f"ConfigMap {namespace}/{name} cannot be read here (no API access)", delay=10.0)
        data = config_maps(namespace, name)
        if data is None:
            raise TemporaryError(f"ConfigMap {namespace}/{name} (ceph-csi's cluster map) not found", delay=10.0)
        clusters = parse_csi_config(str(data.get("config.json") or ""), f"{namespace}/{name}")
        if cluster_id not in clusters:
            raise PermanentError(f"{context} parameter clusterID: {cluster_id!r} is not in ConfigMap {namespace}/{name}")
        provisioner_secret = _secret_ref(params, "provisioner-secret")
        if provisioner_secret is None:
            raise PermanentError(f"{context} parameter {CSI_PREFIX}provisioner-secret-name: Required value")
        node_secret = _secret_ref(params, "node-stage-secret") or ("", "")
        return ClassConfig(
            monitors=clusters[cluster_id].monitors, pool=pool, admin_secret=provisioner_secret, admin_id="",
            user="", user_secret=node_secret, features=features, image_format=image_format,
            data_pool=params.get("dataPool", "").strip(), fs_type=params.get(f"{CSI_PREFIX}fstype", "").strip() or "ext4",
            expand_secret=_secret_ref(params, "controller-expand-secret"))
    monitors = split_monitors(params.get("monitors", ""), f"{context} parameter monitors")
    admin_secret_name = params.get("adminSecretName", "").strip()
    if not admin_secret_name:
        raise PermanentError(f"{context} parameter adminSecretName: Required value")
    admin_id = params.get("adminId", "").strip() or "admin"
    return ClassConfig(
        monitors=monitors, pool=params.get("pool", "").strip() or "rbd",
        admin_secret=(params.get("adminSecretNamespace", "").strip() or "default", admin_secret_name),
        admin_id=admin_id, user=params.get("userId", "").strip() or admin_id,
        user_secret=(params.get("userSecretNamespace", "").strip(), params.get("userSecretName", "").strip()),
        features=features, image_format=image_format, data_pool="", fs_type=params.get("fsType", "").strip())


def _credentials(reader: Any, ref: tuple[str, str], user: str) -> Credentials:
    namespace, name = ref
    if reader is None:
        raise TemporaryError(f"Secret {namespace}/{name} cannot be read here (no API access)", delay=10.0)
    data = reader(namespace, name)
    if data is None:
        # A Secret created after the class is normal: wait for it.
        raise TemporaryError(f"Secret {namespace}/{name} not found", delay=10.0)
    return credentials_from_secret(data, user=user, role="admin", secret=f"{namespace}/{name}")


class Cluster:
    """A connected cluster handle that opens pools with the same errors as ``open_pool``."""

    def __init__(self, handle: Any, monitors: tuple[str, ...], credentials: Credentials) -> None:
        self.handle, self.monitors, self.credentials = handle, monitors, credentials

    @contextmanager
    def pool(self, pool: str) -> Iterator[Any]:
        rados = import_binding("rados")
        try:
            ioctx = self.handle.open_ioctx(pool)
        except rados.ObjectNotFound:
            raise TemporaryError(f"Ceph pool {pool!r} does not exist (monitors {','.join(self.monitors)})",
                                 delay=30.0) from None
        except rados.Error as exc:
            raise TemporaryError(f"opening Ceph pool {pool!r}: {_clean(exc, self.credentials)}", delay=10.0) from None
        try:
            yield ioctx
        finally:
            ioctx.close()


@contextmanager
def open_cluster(monitors: tuple[str, ...], credentials: Credentials,
                 timeout: int = CONNECT_TIMEOUT_SECONDS) -> Iterator[Cluster]:
    """A connection to the cluster; an unreachable monitor is a TemporaryError naming it (RB6)."""
    rados = import_binding("rados")
    conf = {**rados_conf(monitors, credentials), "client_mount_timeout": str(timeout),
            "rados_mon_op_timeout": str(timeout),
            # Breaking a stale lock must not blocklist anyone (the old holder's watch is already gone).
            "rbd_blocklist_on_break_lock": "false"}
    cluster = new_rados(rados, credentials.user, conf)
    try:
        try:
            cluster.connect(timeout=timeout)
        except rados.Error as exc:
            raise TemporaryError(f"Ceph monitors {','.join(monitors)} unreachable as client.{credentials.user}: "
                                 f"{_clean(exc, credentials)}", delay=10.0) from None
        yield Cluster(cluster, monitors, credentials)
    finally:
        cluster.shutdown()


@contextmanager
def open_pool(monitors: tuple[str, ...], credentials: Credentials, pool: str,
              timeout: int = CONNECT_TIMEOUT_SECONDS) -> Iterator[Any]:
    """An I/O context on ``pool``; an unreachable monitor is a TemporaryError naming it (RB6)."""
    with open_cluster(monitors, credentials, timeout) as cluster, cluster.pool(pool) as ioctx:
        yield ioctx


def _clean(exc: BaseException, credentials: Credentials) -> str:
    return str(exc).replace(credentials.key, "***")


class RbdProvisioner(Provisioner, Snapshotter):
    name: ClassVar[str] = "kubernetes.io/rbd"
    aliases: ClassVar[frozenset[str]] = frozenset({"rbd.csi.ceph.com"})
    known_parameters: ClassVar[frozenset[str]] = IN_TREE_PARAMETERS | CSI_PARAMETERS
    # RS10: a temporary snapshot of the source, cloned and flattened (ceph-csi's way of cloning a claim).
    supports_clone: ClassVar[bool] = True

    def __init__(self, connect_timeout: int = CONNECT_TIMEOUT_SECONDS) -> None:
        self.connect_timeout = connect_timeout

    def check_parameters(self, parameters: dict[str, str]) -> None:
        # Kubernetes' external-provisioner strips the csi.storage.k8s.io/ keys before the driver sees them (RB1).
        super().check_parameters({k: v for k, v in parameters.items() if not k.startswith(CSI_PREFIX)})

    # ---- provision --------------------------------------------------------

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        params = req.parameters
        self.check_parameters(params)
        config = parse_class(params, self.name, req.config_maps)
        admin = _credentials(req.secrets, config.admin_secret, config.admin_id)
        user = config.user
        if not user and config.user_secret[1] and req.secrets is not None:
            # ceph-csi: the node-stage Secret names its user; the node also reads it at mount time.
            data = req.secrets(config.user_secret[0], config.user_secret[1]) or {}
            user = str(data.get("userID") or "").strip()
        size = round_up_mib(req.requested_bytes)
        name = image_name(req.volume_name)
        rbd = import_binding("rbd")
        copy_from = self._copy_source(req, config)  # a refused source creates nothing
        with open_cluster(config.monitors, admin, self.connect_timeout) as cluster, cluster.pool(config.pool) as ioctx:
            created = False
            try:
                with rbd.Image(ioctx, name, read_only=True) as image:
                    size = max(size, image.size())
            except rbd.ImageNotFound:
                if copy_from is None:
                    self._create(rbd, ioctx, name, size, config)
                else:
                    self._clone(rbd, cluster, ioctx, name, config, copy_from)
                created = True
            if copy_from is not None:
                # On every pass, so a retry after a crash anywhere in a restore or clone finishes it (RS8, RS10).
                size = self._finish_copy(rbd, cluster, ioctx, name, size, copy_from)
            # Set on every pass: a crash between create and this call leaves an image that the retry adopts.
            with rbd.Image(ioctx, name) as image:
                image.metadata_set(META_VOLUME, req.volume_name)
        log.info("rbd.provisioned", volume=req.volume_name, image=f"{config.pool}/{name}", bytes=size, created=created,
                 source=None if copy_from is None else f"{copy_from.pool}/{copy_from.image}@{copy_from.snap}")
        source: dict[str, Any] = {"monitors": list(config.monitors), "pool": config.pool, "image": name}
        if user:
            source["user"] = user
        if config.user_secret[1]:
            ref = {"name": config.user_secret[1]}
            if config.user_secret[0]:
                ref["namespace"] = config.user_secret[0]
            source["secretRef"] = ref
        if config.fs_type:
            source["fsType"] = config.fs_type
        annotations = {ANN_ADMIN_SECRET: "/".join(config.admin_secret)}
        if config.admin_id:
            annotations[ANN_ADMIN_ID] = config.admin_id
        if config.expand_secret:
            annotations[ANN_EXPAND_SECRET] = "/".join(config.expand_secret)
        return ProvisionResult.finished({"rbd": source}, f"{size // MiB}Mi", annotations=annotations)

    @staticmethod
    def _create(rbd: Any, ioctx: Any, name: str, size: int, config: ClassConfig) -> None:
        try:
            if config.image_format == "1":
                rbd.RBD().create(ioctx, name, size, old_format=True)
            else:
                features = rbd.RBD().features_from_string(config.features)
                rbd.RBD().create(ioctx, name, size, old_format=False, features=features,
                                 data_pool=config.data_pool or None)
        except rbd.ImageExists:
            return  # a concurrent pass made it: the same name is the same volume
        except rbd.InvalidArgument:
            raise PermanentError(f"StorageClass parameter imageFeatures: Invalid value: {config.features!r}") from None
        except rbd.Error as exc:
            raise TemporaryError(f"creating rbd image {config.pool}/{name}: {exc}", delay=10.0) from None

    # ---- restore and clone (RS8-RS11) ---------------------------------------------

    def _copy_source(self, req: ProvisionRequest, config: ClassConfig) -> "_CopySource | None":
        source: DataSource | None = req.data_source
        if source is None:
            return None
        if config.image_format != "2":
            raise PermanentError(f"StorageClass parameter imageFormat: {config.image_format!r}: restoring or cloning "
                                 "an rbd volume needs image format 2 (layering)")
        if source.kind == "VolumeSnapshot":
            if source.driver and source.driver not in self.names():
                raise PermanentError(f"provisioner {self.name} cannot restore from a snapshot of driver "
                                     f"{source.driver!r} (only {', '.join(sorted(self.names()))} snapshots)")
            pool, image_id, snap = parse_handle(source.snapshot_handle)
            return _CopySource(pool=pool, image=image_id, snap=snap, by_id=True, temporary=False)
        if source.kind == "PersistentVolumeClaim":
            spec = ((source.source_pv or {}).get("spec") or {}).get("rbd") or {}
            pv_name = ((source.source_pv or {}).get("metadata") or {}).get("name", "")
            if not spec.get("image"):
                raise PermanentError(f"provisioner {self.name} cannot clone PV {pv_name!r}: it is not an rbd volume")
            monitors = split_monitors(spec.get("monitors") or [], "rbd.monitors")
            if set(monitors) != set(config.monitors):
                raise PermanentError(f"cannot clone PV {pv_name!r}: its image is on monitors {','.join(monitors)}, "
                                     f"the class's cluster is {','.join(config.monitors)} (clones stay in one cluster)")
            return _CopySource(pool=str(spec.get("pool") or "rbd"), image=str(spec["image"]),
                               snap=f"{CLONE_SNAP_PREFIX}{req.volume_name}", by_id=False, temporary=True)
        raise PermanentError(f"provisioner {self.name} cannot fill a volume from a dataSource of kind {source.kind}")

    def _clone(self, rbd: Any, cluster: "Cluster", ioctx: Any, name: str, config: ClassConfig,
               source: "_CopySource") -> None:
        """``rbd clone`` of the source's protected snapshot (cut first for a claim clone) into ``name``."""
        features = rbd.RBD().features_from_string(config.features) | rbd.RBD_FEATURE_LAYERING
        with cluster.pool(source.pool) as parent_ioctx:
            try:
                parent = (rbd.Image(parent_ioctx, image_id=source.image) if source.by_id
                          else rbd.Image(parent_ioctx, source.image))
            except rbd.ImageNotFound:
                what = "snapshot" if source.by_id else "source volume's image"
                raise PermanentError(f"rbd {what} {source.describe()} does not exist: nothing to copy from") from None
            with parent:
                parent_name = parent.get_name()
                if not parent.snap_exists(source.snap):
                    if not source.temporary:
                        raise PermanentError(f"rbd snapshot {source.describe()} does not exist: cannot restore from it")
                    _snap_create(rbd, parent, source.snap)
                if not parent.is_protected_snap(source.snap):
                    parent.protect_snap(source.snap)  # clone format 1 needs it; harmless with format 2
            try:
                rbd.RBD().clone(parent_ioctx, parent_name, source.snap, ioctx, name, features=features,
                                data_pool=config.data_pool or None)
            except rbd.ImageExists:
                pass  # a concurrent pass cloned it: the same name is the same volume
            except rbd.InvalidArgument:
                if source.temporary:  # never retried: the clone's snapshot would keep the source forever (RS7)
                    with rbd.Image(parent_ioctx, parent_name) as parent:
                        _snap_remove(rbd, parent, source.snap)
                raise PermanentError(f"StorageClass parameter imageFeatures: Invalid value: {config.features!r} "
                                     "for a clone") from None
            except rbd.Error as exc:
                raise TemporaryError(f"cloning {source.describe()} into {config.pool}/{name}: {exc}", delay=10.0) from None

    def _finish_copy(self, rbd: Any, cluster: "Cluster", ioctx: Any, name: str, size: int,
                     source: "_CopySource") -> int:
        """Flatten the new image (it must not depend on the snapshot, which may be deleted any time: RS8),
        grow it to the claim's size, and drop a clone's temporary snapshot. Every step is idempotent."""
        with rbd.Image(ioctx, name) as image:
            try:
                image.parent_info()
                has_parent = True
            except rbd.ImageNotFound:
                has_parent = False
            if has_parent:
                image.flatten()
            current = image.size()
            if current < size:
                image.resize(size)
            size = max(size, current)
        if source.temporary:
            with cluster.pool(source.pool) as parent_ioctx:
                try:
                    with rbd.Image(parent_ioctx, source.image) as parent:
                        _snap_remove(rbd, parent, source.snap)
                except rbd.ImageNotFound:
                    pass
        return size

    # ---- snapshots (RS1-RS7) ------------------------------------------------------

    def _snapshot_location(self, parameters: dict[str, str], config_maps: Any, reader: Any,
                           ) -> tuple[tuple[str, ...], Credentials, str] | None:
        """(monitors, credentials, pool or "") from a VolumeSnapshotClass; None when it names no cluster."""
        context = f"VolumeSnapshotClass (driver {self.name})"
        unknown = sorted(k for k in parameters if not k.startswith(CSI_PREFIX) and k not in SNAPSHOT_PARAMETERS)
        if unknown:
            raise PermanentError(f"invalid {context} parameter(s): {', '.join(repr(u) for u in unknown)} "
                                 f"(known: {', '.join(sorted(SNAPSHOT_PARAMETERS))}, "
                                 f"{CSI_PREFIX}snapshotter-secret-name/-namespace)")
        params = {k: str(v).strip() for k, v in parameters.items()}
        pool = params.get("pool", "")
        if params.get("clusterID") and params.get("monitors"):
            raise PermanentError(f"{context} parameters clusterID and monitors are mutually exclusive")
        if params.get("clusterID"):
            secret = _secret_ref(params, "snapshotter-secret")
            if secret is None:
                raise PermanentError(f"{context} parameter {CSI_PREFIX}snapshotter-secret-name: Required value")
            namespace, name = csi_config_location()
            if config_maps is None:
                raise TemporaryError(f"ConfigMap {namespace}/{name} cannot be read here (no API access)", delay=10.0)
            data = config_maps(namespace, name)
            if data is None:
                raise TemporaryError(f"ConfigMap {namespace}/{name} (ceph-csi's cluster map) not found", delay=10.0)
            clusters = parse_csi_config(str(data.get("config.json") or ""), f"{namespace}/{name}")
            if params["clusterID"] not in clusters:
                raise PermanentError(f"{context} parameter clusterID: {params['clusterID']!r} is not in ConfigMap "
                                     f"{namespace}/{name}")
            return clusters[params["clusterID"]].monitors, _credentials(reader, secret, ""), pool
        if params.get("monitors"):
            monitors = split_monitors(params["monitors"], f"{context} parameter monitors")
            if not params.get("adminSecretName"):
                raise PermanentError(f"{context} parameter adminSecretName: Required value")
            secret = (params.get("adminSecretNamespace") or "default", params["adminSecretName"])
            return monitors, _credentials(reader, secret, params.get("adminId") or "admin"), pool
        for key in ("adminId", "adminSecretName", "adminSecretNamespace"):
            if key in params:
                raise PermanentError(f"{context} parameter {key} needs parameter monitors")
        return None

    def _location_for_handle(self, parameters: dict[str, str]) -> tuple[tuple[str, ...], Credentials]:
        location = self._snapshot_location(parameters, current_config_maps(), current_secrets())
        if location is None:
            raise PermanentError(f"VolumeSnapshotClass (driver {self.name}) parameter clusterID (or monitors): "
                                 "Required value: where the snapshot's cluster is")
        return location[0], location[1]

    def create_snapshot(self, req: SnapshotRequest) -> SnapshotResult:
        reader = req.secrets or current_secrets()
        location = self._snapshot_location(req.parameters, req.config_maps or current_config_maps(), reader)
        if "rbd" not in (req.pv.get("spec") or {}):
            raise PermanentError(f"PV {req.pv.get('metadata', {}).get('name', '')!r} is not an rbd volume")
        monitors, credentials, pool, image_name_ = self._pv_access(req.pv, reader=reader) if location is None else (
            location[0], location[1], str(req.pv["spec"]["rbd"].get("pool") or "rbd"), str(req.pv["spec"]["rbd"].get("image") or ""))
        if location is not None and location[2] and location[2] != pool:
            raise PermanentError(f"VolumeSnapshotClass parameter pool: {location[2]!r}: an rbd snapshot stays in its "
                                 f"volume's pool ({pool!r})")
        rbd = import_binding("rbd")
        with open_pool(monitors, credentials, pool, self.connect_timeout) as ioctx:
            try:
                image = rbd.Image(ioctx, image_name_)
            except rbd.ImageNotFound:
                raise PermanentError(f"rbd image {pool}/{image_name_} of PV {req.pv['metadata']['name']} does not exist: "
                                     "nothing to snapshot") from None
            with image:
                if not image.features() & rbd.RBD_FEATURE_LAYERING:
                    raise PermanentError(f"rbd image {pool}/{image_name_} has no layering feature (image format 1?): "
                                         "its snapshots could not be restored")
                created = False
                if not image.snap_exists(req.name):
                    _snap_create(rbd, image, req.name)
                    created = True
                if not image.is_protected_snap(req.name):
                    image.protect_snap(req.name)
                result = _snapshot_result(image, pool, req.name)
        if created:
            log.info("rbd.snapshot_created", snapshot=req.name, handle=result.handle)
        return result

    def snapshot_status(self, handle: str, parameters: dict[str, str]) -> SnapshotResult | None:
        pool, image_id, snap = parse_handle(handle)
        monitors, credentials = self._location_for_handle(parameters)
        rbd = import_binding("rbd")
        with open_pool(monitors, credentials, pool, self.connect_timeout) as ioctx:
            try:
                with rbd.Image(ioctx, image_id=image_id, read_only=True) as image:
                    if not image.snap_exists(snap):
                        return None
                    return _snapshot_result(image, pool, snap)
            except rbd.ImageNotFound:
                return None

    def delete_snapshot(self, handle: str, parameters: dict[str, str]) -> None:
        """RS5, RS6: children (restores a crash left unflattened) are flattened first, so the snapshot goes
        whatever was cloned from it; then unprotect and remove; a retired image goes with its last snapshot."""
        pool, image_id, snap = parse_handle(handle)
        monitors, credentials = self._location_for_handle(parameters)
        rbd = import_binding("rbd")
        with open_cluster(monitors, credentials, self.connect_timeout) as cluster, cluster.pool(pool) as ioctx:
            try:
                image = rbd.Image(ioctx, image_id=image_id)
            except rbd.ImageNotFound:
                return  # gone is success
            with image:
                name = image.get_name()
                if image.snap_exists(snap):
                    with rbd.Image(ioctx, image_id=image_id, snapshot=snap, read_only=True) as at:
                        children = list(at.list_children2())
                    for child in children:
                        self._flatten_child(rbd, cluster, child, handle)
                    _snap_remove(rbd, image, snap)
                    log.info("rbd.snapshot_deleted", handle=handle, children_flattened=len(children))
                retired = dict(image.metadata_list()).get(META_RETIRED)
                remaining = [s["name"] for s in image.list_snaps()]
            if retired and not remaining:
                try:
                    rbd.RBD().remove(ioctx, name)
                except (rbd.ImageNotFound, rbd.ImageHasSnapshots):
                    pass  # gone already, or a new snapshot keeps it (the next delete_snapshot removes it)
                except rbd.ImageBusy:
                    raise TemporaryError(f"rbd image {pool}/{name} is busy", delay=10.0) from None
                log.info("rbd.retired_image_removed", image=f"{pool}/{name}", volume=retired)

    @staticmethod
    def _flatten_child(rbd: Any, cluster: "Cluster", child: dict[str, Any], handle: str) -> None:
        with cluster.pool(str(child["pool"])) as child_ioctx:
            if child.get("pool_namespace"):
                child_ioctx.set_namespace(str(child["pool_namespace"]))
            try:
                with rbd.Image(child_ioctx, image_id=str(child["id"])) as clone:
                    clone.flatten()
            except rbd.ImageNotFound:
                return
            except rbd.ImageBusy:
                raise TemporaryError(f"a clone of rbd snapshot {handle} ({child['pool']}/{child['image']}) is busy; "
                                     "flattening it later", delay=10.0) from None
        log.info("rbd.child_flattened", handle=handle, child=f"{child['pool']}/{child['image']}")

    @staticmethod
    def _retire_if_snapshotted(rbd: Any, ioctx: Any, pool: str, image: str, volume_name: str) -> bool:
        """RS7: a PV whose image still has snapshots: the image cannot go (its snapshots would), so it is renamed
        ``kubernetes-retired-<pv>`` and marked; the last delete_snapshot removes it."""
        with rbd.Image(ioctx, image) as handle:
            snaps = [s["name"] for s in handle.list_snaps()]
            if not snaps:
                return False
            handle.metadata_set(META_RETIRED, volume_name)
            try:
                handle.metadata_remove(META_VOLUME)
            except (KeyError, rbd.ObjectNotFound):
                pass
        try:
            rbd.RBD().rename(ioctx, image, retired_name(volume_name))
        except rbd.ImageExists:
            raise TemporaryError(f"rbd image {pool}/{retired_name(volume_name)} already exists; not retiring "
                                 f"{pool}/{image}", delay=30.0) from None
        log.info("rbd.retired", image=f"{pool}/{image}", as_name=retired_name(volume_name), snapshots=len(snaps))
        return True

    # ---- delete and expand --------------------------------------------------

    def _pv_access(self, pv: dict[str, Any], secret_annotation: str = ANN_ADMIN_SECRET,
                   reader: Any = None) -> tuple[tuple[str, ...], Credentials, str, str]:
        spec = (pv.get("spec") or {}).get("rbd") or {}
        annotations = (pv.get("metadata") or {}).get("annotations") or {}
        location = annotations.get(secret_annotation) or annotations.get(ANN_ADMIN_SECRET, "")
        namespace, _, secret_name = location.partition("/")
        if not secret_name:
            raise PermanentError(f"PV {pv['metadata']['name']} has no {ANN_ADMIN_SECRET} annotation: cannot reach its image")
        credentials = _credentials(reader or current_secrets(), (namespace, secret_name), annotations.get(ANN_ADMIN_ID, ""))
        monitors = split_monitors(spec.get("monitors") or [], "rbd.monitors")
        pool, image = str(spec.get("pool") or "rbd"), str(spec.get("image") or "")
        if not image:
            raise PermanentError(f"PV {pv['metadata']['name']}: rbd.image: Required value")
        return monitors, credentials, pool, image

    def delete(self, pv: dict[str, Any]) -> None:
        if not self.owns(pv) or "rbd" not in (pv.get("spec") or {}):
            return
        monitors, credentials, pool, image = self._pv_access(pv)
        rbd = import_binding("rbd")
        with open_pool(monitors, credentials, pool, self.connect_timeout) as ioctx:
            try:
                with rbd.Image(ioctx, image, read_only=True) as handle:
                    watchers = list(handle.watchers_list())
            except rbd.ImageNotFound:
                return
            if watchers:
                # In-tree: "rbd <image> is still being used" keeps the PV until every node let go (RB4).
                raise TemporaryError(f"rbd image {pool}/{image} is still being used by "
                                     f"{', '.join(str(w.get('addr')) for w in watchers)}", delay=10.0)
            if self._retire_if_snapshotted(rbd, ioctx, pool, image, pv["metadata"]["name"]):
                return
            try:
                rbd.RBD().remove(ioctx, image)
            except rbd.ImageNotFound:
                return
            except rbd.ImageHasSnapshots:
                raise TemporaryError(f"rbd image {pool}/{image} got a snapshot while being deleted; retrying",
                                     delay=1.0) from None
            except rbd.ImageBusy:
                raise TemporaryError(f"rbd image {pool}/{image} is busy", delay=10.0) from None
            except rbd.Error as exc:
                if getattr(exc, "errno", None) == errno.ENOENT:
                    return
                raise TemporaryError(f"removing rbd image {pool}/{image}: {exc}", delay=10.0) from None
        log.info("rbd.deleted", image=f"{pool}/{image}", volume=pv["metadata"]["name"])

    def expand(self, pv: dict[str, Any], new_size: int) -> int:
        monitors, credentials, pool, image = self._pv_access(pv, ANN_EXPAND_SECRET)
        target = round_up_mib(new_size)
        rbd = import_binding("rbd")
        with open_pool(monitors, credentials, pool, self.connect_timeout) as ioctx:
            try:
                with rbd.Image(ioctx, image) as handle:
                    current = handle.size()
                    if current >= target:
                        return current
                    handle.resize(target)  # grow only: RB5
            except rbd.ImageNotFound:
                raise PermanentError(f"rbd image {pool}/{image} not found") from None
        log.info("rbd.expanded", image=f"{pool}/{image}", bytes=target)
        return target


@dataclass(frozen=True)
class _CopySource:
    """What a restore or clone copies: ``pool``/``image`` (an image id for a snapshot, a name for a claim's
    volume) at snapshot ``snap``; ``temporary``: the snapshot is cut for this clone and removed after it."""

    pool: str
    image: str
    snap: str
    by_id: bool
    temporary: bool

    def describe(self) -> str:
        return f"{self.pool}/{self.image}@{self.snap}"


def parse_handle(handle: str) -> tuple[str, str, str]:
    """(pool, image id, snapshot name) from a handle ``<pool>/<image id>@<snapshot>``."""
    match = _HANDLE.match(handle or "")
    if match is None:
        raise PermanentError(f'"{handle}" is not an rbd snapshot handle (<pool>/<image id>@<snapshot>)')
    return match["pool"], match["image_id"], match["snap"]


def _snap_create(rbd: Any, image: Any, snap: str) -> None:
    try:
        image.create_snap(snap)
    except rbd.ImageExists:
        pass  # a concurrent pass cut it


def _snap_remove(rbd: Any, image: Any, snap: str) -> None:
    """Unprotect and remove; already gone is success."""
    if not image.snap_exists(snap):
        return
    try:
        if image.is_protected_snap(snap):
            image.unprotect_snap(snap)
        image.remove_snap(snap)
    except rbd.ImageNotFound:
        return
    except rbd.ImageBusy:
        raise TemporaryError(f"rbd snapshot {image.get_name()}@{snap} still has clones", delay=10.0) from None


def _snapshot_result(image: Any, pool: str, snap: str) -> SnapshotResult:
    info = next((s for s in image.list_snaps() if s["name"] == snap), None)
    if info is None:
        raise TemporaryError(f"rbd snapshot {image.get_name()}@{snap} vanished while being read", delay=1.0)
    stamp = image.get_snap_timestamp(info["id"])
    if isinstance(stamp, datetime.datetime):
        created = (stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.timezone.utc)).timestamp()
    else:
        created = time.time()
    # An rbd snapshot is cut at once: ready as soon as it exists (RS1).
    return SnapshotResult(handle=f"{pool}/{image.id()}@{snap}", restore_size=int(info["size"]), ready=True,
                          creation_time=created)


def volumes_of(ioctx: Any, volume_name: str) -> list[str]:
    """Images in ``ioctx``'s pool made for ``volume_name`` (tests and repair tools count them)."""
    rbd = import_binding("rbd")
    found = []
    for name in rbd.RBD().list(ioctx):
        try:
            with rbd.Image(ioctx, name, read_only=True) as image:
                if dict(image.metadata_list()).get(META_VOLUME) == volume_name or name == image_name(volume_name):
                    found.append(name)
        except rbd.ImageNotFound:
            continue
    return found
