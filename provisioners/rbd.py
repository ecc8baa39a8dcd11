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
"""
from __future__ import annotations

import errno
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import structlog

from provisioners.base import ProvisionRequest, ProvisionResult, Provisioner, current_secrets
from storage.api.ceph import (Credentials, new_rados, credentials_from_secret, csi_config_location, import_binding,
                              parse_csi_config, rados_conf, split_monitors)
from storage.errors import PermanentError, TemporaryError

log = structlog.get_logger(__name__)

MiB = 1 << 20
IMAGE_PREFIX = "kubernetes-dynamic-"
META_VOLUME = "stowage.io/volume"  # image metadata: the PV it was made for
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


@contextmanager
def open_pool(monitors: tuple[str, ...], credentials: Credentials, pool: str,
              timeout: int = CONNECT_TIMEOUT_SECONDS) -> Iterator[Any]:
    """An I/O context on ``pool``; an unreachable monitor is a TemporaryError naming it (RB6)."""
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
        try:
            ioctx = cluster.open_ioctx(pool)
        except rados.ObjectNotFound:
            raise TemporaryError(f"Ceph pool {pool!r} does not exist (monitors {','.join(monitors)})", delay=30.0) from None
        except rados.Error as exc:
            raise TemporaryError(f"opening Ceph pool {pool!r}: {_clean(exc, credentials)}", delay=10.0) from None
        try:
            yield ioctx
        finally:
            ioctx.close()
    finally:
        cluster.shutdown()


def _clean(exc: BaseException, credentials: Credentials) -> str:
    return str(exc).replace(credentials.key, "***")


class RbdProvisioner(Provisioner):
    name: ClassVar[str] = "kubernetes.io/rbd"
    aliases: ClassVar[frozenset[str]] = frozenset({"rbd.csi.ceph.com"})
    known_parameters: ClassVar[frozenset[str]] = IN_TREE_PARAMETERS | CSI_PARAMETERS

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
        with open_pool(config.monitors, admin, config.pool, self.connect_timeout) as ioctx:
            created = False
            try:
                with rbd.Image(ioctx, name, read_only=True) as image:
                    size = max(size, image.size())
            except rbd.ImageNotFound:
                self._create(rbd, ioctx, name, size, config)
                created = True
            # Set on every pass: a crash between create and this call leaves an image that the retry adopts.
            with rbd.Image(ioctx, name) as image:
                image.metadata_set(META_VOLUME, req.volume_name)
        log.info("rbd.provisioned", volume=req.volume_name, image=f"{config.pool}/{name}", bytes=size, created=created)
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

    # ---- delete and expand --------------------------------------------------

    def _pv_access(self, pv: dict[str, Any], secret_annotation: str = ANN_ADMIN_SECRET) -> tuple[tuple[str, ...], Credentials, str, str]:
        spec = (pv.get("spec") or {}).get("rbd") or {}
        annotations = (pv.get("metadata") or {}).get("annotations") or {}
        location = annotations.get(secret_annotation) or annotations.get(ANN_ADMIN_SECRET, "")
        namespace, _, secret_name = location.partition("/")
        if not secret_name:
            raise PermanentError(f"PV {pv['metadata']['name']} has no {ANN_ADMIN_SECRET} annotation: cannot reach its image")
        credentials = _credentials(current_secrets(), (namespace, secret_name), annotations.get(ANN_ADMIN_ID, ""))
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
            try:
                rbd.RBD().remove(ioctx, image)
            except rbd.ImageNotFound:
                return
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
