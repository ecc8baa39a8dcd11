"""CephFS subvolumes (the ``cephfs`` source), made through the manager's volumes module.

Three StorageClass ``provisioner`` names select this one:

* ``cephfs.csi.ceph.com`` (ceph-csi): ``clusterID`` looked up in ceph-csi's ConfigMap for the
  monitors (and ``cephFS.subvolumeGroup``), ``fsName``, ``pool``, ``mounter``, the
  ``csi.storage.k8s.io/*`` Secret references;
* ``ceph.com/cephfs`` (the external-storage provisioner): ``monitors``, ``adminId``,
  ``adminSecretName``, ``adminSecretNamespace``, ``claimRoot``;
* ``kubernetes.io/cephfs``: an alias of the latter. Kubernetes never had an in-tree CephFS
  provisioner, only the ``cephfs`` volume source; classes written with that name get this one.

A volume is the subvolume named after the PV in its subvolume group, with a quota of the request
(CF1), and a Ceph user of its own, also named after the PV, allowed only that subvolume's path
(CF2). Every step is idempotent, so a retry after any failure or crash finishes what the last
attempt started and never makes a second subvolume (CF4). The commands go to the manager through
the ``rados`` binding (``mgr_command``), never through the ``ceph`` command line: the admin key
stays in memory.
"""
from __future__ import annotations

import base64
import errno
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import structlog

from provisioners.base import (
    ConfigMapReader, ProvisionRequest, ProvisionResult, Provisioner, SecretReader, current_config_maps,
    current_secrets,
)
from storage.api import ceph
from storage.errors import PermanentError, TemporaryError

log = structlog.get_logger(__name__)

MiB = 1 << 20
CSI_NAME = "cephfs.csi.ceph.com"
EXTERNAL_NAME = "ceph.com/cephfs"
IN_TREE_ALIAS = "kubernetes.io/cephfs"  # no in-tree provisioner ever existed: an alias of ceph.com/cephfs
DEFAULT_FS = "cephfs"
DEFAULT_CSI_GROUP = "csi"  # ceph-csi's default subvolume group
DEFAULT_EXTERNAL_ROOT = "/volumes/kubernetes"  # external-storage's default claimRoot
CSI_PREFIX = "csi.storage.k8s.io/"

# Where a PV records what delete and expand need (the monitors and the user are in the source).
ANN_PREFIX = "cephfs.stowage.io/"
ANN_CLUSTER_ID = ANN_PREFIX + "cluster-id"
ANN_FS = ANN_PREFIX + "fs-name"
ANN_GROUP = ANN_PREFIX + "subvolume-group"
ANN_SUBVOLUME = ANN_PREFIX + "subvolume"
ANN_ADMIN_SECRET = ANN_PREFIX + "admin-secret"  # "namespace/name"
ANN_ADMIN_ID = ANN_PREFIX + "admin-id"
ANN_EXPAND_SECRET = ANN_PREFIX + "expand-secret"

ACCESS_MODES = frozenset({"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"})


def user_secret_name(pv_name: str) -> str:
    return f"{pv_name}-cephfs-user"


def quota_bytes(requested: int) -> int:
    """The request rounded up to whole MiB, at least 1 MiB (CF1)."""
    return max(1, -(-requested // MiB)) * MiB


@dataclass(frozen=True)
class Target:
    """Where a volume lives and who may make it."""

    monitors: tuple[str, ...]
    fs_name: str
    group: str
    admin: ceph.Credentials
    cluster_id: str = ""
    pool: str = ""

    @property
    def where(self) -> str:
        return f"{','.join(self.monitors)}" + (f" (cluster {self.cluster_id})" if self.cluster_id else "")


def _errno_name(code: int) -> str:
    return errno.errorcode.get(abs(code), str(abs(code)))


class CephfsProvisioner(Provisioner):
    name = CSI_NAME
    aliases = frozenset({EXTERNAL_NAME, IN_TREE_ALIAS})
    known_parameters = frozenset({
        # ceph-csi
        "clusterID", "fsName", "pool", "mounter", "volumeNamePrefix", "subvolumeGroup",
        "kernelMountOptions", "fuseMountOptions",
        # external-storage ceph.com/cephfs
        "monitors", "adminId", "adminSecretName", "adminSecretNamespace", "claimRoot",
    })

    def __init__(self, secrets: SecretReader | None = None, config_maps: ConfigMapReader | None = None,
                 connect_timeout: float = 10.0) -> None:
        self._fallback_secrets = secrets  # calls made outside the controllers (tests, tools)
        self._fallback_config_maps = config_maps
        self.connect_timeout = connect_timeout

    # ---- parameters --------------------------------------------------------------------

    def check_parameters(self, parameters: dict[str, str]) -> None:
        # The external provisioner's sidecars accept every csi.storage.k8s.io/* key (fstype, the
        # publish and stage Secrets ...): so do we, and use those we need.
        unknown = sorted(k for k in parameters if k not in self.known_parameters and not k.startswith(CSI_PREFIX))
        if unknown:
            raise PermanentError(
                f"invalid parameter(s) for provisioner {self.name}: {', '.join(repr(u) for u in unknown)}"
                f" (known: {', '.join(sorted(self.known_parameters))}, csi.storage.k8s.io/*)")

    def _secrets(self, given: SecretReader | None = None) -> SecretReader | None:
        return given or current_secrets() or self._fallback_secrets

    def _config_maps(self, given: ConfigMapReader | None = None) -> ConfigMapReader | None:
        return given or current_config_maps() or self._fallback_config_maps

    def _cluster(self, cluster_id: str, reader: ConfigMapReader | None) -> ceph.ClusterInfo:
        namespace, name = ceph.csi_config_location()
        data = reader(namespace, name) if reader is not None else None
        if data is None:
            raise TemporaryError(f"parameter clusterID={cluster_id!r}: ConfigMap {namespace}/{name} not found", delay=10.0)
        clusters = ceph.parse_csi_config(data.get(ceph.CSI_CONFIG_KEY, ""), f"{namespace}/{name}")
        if cluster_id not in clusters:
            raise PermanentError(f"parameter clusterID={cluster_id!r}: not in ConfigMap {namespace}/{name}"
                                 f" (clusters: {', '.join(sorted(clusters)) or 'none'})")
        return clusters[cluster_id]

    def _admin(self, reader: SecretReader | None, namespace: str, name: str, admin_id: str) -> ceph.Credentials:
        if reader is None:
            raise TemporaryError(f"Secret {namespace}/{name}: no Secret reader in this process", delay=10.0)
        data = reader(namespace, name)
        if data is None:
            raise TemporaryError(f"Secret {namespace}/{name} not found", delay=10.0)
        role = "admin" if (data.get("adminKey") or data.get("key")) else "user"
        return ceph.credentials_from_secret(data, user=admin_id, role=role, secret=f"{namespace}/{name}")

    def _target(self, params: dict[str, str], claim_namespace: str, secrets: SecretReader | None,
                config_maps: ConfigMapReader | None) -> tuple[Target, str, str]:
        """(target, admin Secret "ns/name", expand Secret "ns/name")."""
        cluster_id = params.get("clusterID", "").strip()
        group = params.get("subvolumeGroup", "").strip()
        if cluster_id:
            info = self._cluster(cluster_id, config_maps)
            monitors = info.monitors
            group = group or info.subvolume_group or DEFAULT_CSI_GROUP
        elif params.get("monitors", "").strip():
            monitors = ceph.split_monitors(params["monitors"], "parameter monitors")
        else:
            raise PermanentError("parameter clusterID (ceph-csi) or monitors (ceph.com/cephfs): Required value")
        if not group:
            root = (params.get("claimRoot") or DEFAULT_EXTERNAL_ROOT).rstrip("/")
            parts = root.split("/")
            # The volumes module keeps every subvolume at /volumes/<group>/<name>: claimRoot names the group.
            if len(parts) != 3 or parts[:2] != ["", "volumes"] or not parts[2]:
                raise PermanentError(f"parameter claimRoot={params.get('claimRoot')!r}: must be /volumes/<group>"
                                     " (subvolumes live under /volumes/<group>/)")
            group = parts[2]
        name = params.get(CSI_PREFIX + "provisioner-secret-name") or params.get("adminSecretName") or ""
        namespace = (params.get(CSI_PREFIX + "provisioner-secret-namespace") or params.get("adminSecretNamespace")
                     or "default")
        if not name:
            raise PermanentError(f"parameter {CSI_PREFIX}provisioner-secret-name or adminSecretName: Required value"
                                 " (the Secret with the Ceph admin key)")
        admin = self._admin(secrets, namespace, name, params.get("adminId") or ("" if cluster_id else "admin"))
        expand_name = params.get(CSI_PREFIX + "controller-expand-secret-name") or ""
        expand_ns = params.get(CSI_PREFIX + "controller-expand-secret-namespace") or namespace
        target = Target(monitors=monitors, fs_name=params.get("fsName") or DEFAULT_FS, group=group, admin=admin,
                        cluster_id=cluster_id, pool=params.get("pool", ""))
        return target, f"{namespace}/{name}", (f"{expand_ns}/{expand_name}" if expand_name else "")

    # ---- talking to the cluster --------------------------------------------------------

    @contextmanager
    def _connected(self, target: Target) -> Iterator[Any]:
        rados = ceph.import_binding("rados")
        with ceph.RADOS_INIT_LOCK:
            conf = {**ceph.rados_conf(target.monitors, target.admin),
                    "client_mount_timeout": str(max(1, int(self.connect_timeout)))}  # what bounds connect()
            client = rados.Rados(rados_id=target.admin.user, conf=conf)
        started = time.monotonic()
        try:
            client.connect(timeout=int(self.connect_timeout))
        except rados.Error as exc:
            client.shutdown()
            # The message names the endpoint and the reason, never the key (CF5).
            raise TemporaryError(f"cannot reach Ceph monitors {target.where} as client.{target.admin.user}:"
                                 f" {exc}", delay=10.0) from None
        log.debug("cephfs.connected", monitors=target.where, seconds=round(time.monotonic() - started, 3))
        try:
            yield client
        finally:
            client.shutdown()

    def _mgr(self, client: Any, target: Target, prefix: str, ok_missing: bool = False, **args: Any) -> str:
        """One volumes-module command; returns its output. ENOENT is "" when ``ok_missing``."""
        rados = ceph.import_binding("rados")
        body = {"prefix": prefix, "vol_name": target.fs_name, "format": "json", **args}
        try:
            ret, out, status = client.mgr_command(json.dumps(body), b"", timeout=30)
        except rados.Error as exc:
            raise TemporaryError(f"ceph {prefix} at {target.where}: {exc}", delay=10.0) from None
        if ret == 0:
            return out.decode() if isinstance(out, bytes) else str(out)
        if ret == -errno.ENOENT and ok_missing:
            return ""
        message = f"ceph {prefix} ({target.fs_name}/{args.get('group_name', '')}/{args.get('sub_name', '')})" \
                  f" at {target.where}: {_errno_name(ret)}: {status.strip()}"
        if ret in (-errno.EINVAL, -errno.EPERM, -errno.EACCES, -errno.ENOENT):
            # ENOENT here: the file system (fsName) or, for resize, the subvolume does not exist.
            raise PermanentError(message)
        raise TemporaryError(message, delay=10.0)

    def _user_key(self, client: Any, target: Target, user: str) -> str:
        rados = ceph.import_binding("rados")
        try:
            ret, out, status = client.mon_command(
                json.dumps({"prefix": "auth get-key", "entity": f"client.{user}", "format": "json"}), b"", timeout=30)
        except rados.Error as exc:
            raise TemporaryError(f"ceph auth get-key client.{user} at {target.where}: {exc}", delay=10.0) from None
        if ret != 0:
            raise TemporaryError(f"ceph auth get-key client.{user} at {target.where}: {_errno_name(ret)}:"
                                 f" {status.strip()}", delay=10.0)
        key = str(json.loads(out).get("key") or "")
        if not key:
            raise TemporaryError(f"ceph auth get-key client.{user} at {target.where}: no key returned", delay=10.0)
        return key

    # ---- provision ---------------------------------------------------------------------

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        params = {k: str(v) for k, v in req.parameters.items()}
        self.check_parameters(params)
        if req.volume_mode == "Block":
            raise PermanentError("volumeMode Block is not supported by CephFS (a file system); use RBD for block volumes")
        bad_modes = sorted(set(req.access_modes) - ACCESS_MODES)
        if bad_modes:
            raise PermanentError(f"access mode(s) {', '.join(bad_modes)} not supported by CephFS")
        mounter = params.get("mounter", "")
        if mounter not in ("", "kernel", "fuse"):
            raise PermanentError(f"parameter mounter={mounter!r}: must be kernel or fuse")
        claim_meta = req.claim.get("metadata") or {}
        claim_namespace = str(claim_meta.get("namespace") or "default")
        target, admin_secret, expand_secret = self._target(params, claim_namespace, req.secrets or self._secrets(),
                                                           req.config_maps or self._config_maps())
        size = quota_bytes(req.requested_bytes)
        subvolume = f"{params.get('volumeNamePrefix', '')}{req.volume_name}"
        user = req.volume_name
        started = time.monotonic()
        with self._connected(target) as client:
            self._mgr(client, target, "fs subvolumegroup create", group_name=target.group)
            create: dict[str, Any] = {"sub_name": subvolume, "group_name": target.group, "size": size, "mode": "0777"}
            if target.pool:
                create["pool_layout"] = target.pool
            # Creating an existing subvolume changes nothing: the retry after a crash adopts it (CF4).
            self._mgr(client, target, "fs subvolume create", **create)
            path = self._mgr(client, target, "fs subvolume getpath", sub_name=subvolume,
                             group_name=target.group).strip().strip('"')
            self._mgr(client, target, "fs subvolume authorize", sub_name=subvolume, group_name=target.group,
                      auth_id=user, access_level="rw")
            key = self._user_key(client, target, user)
        log.info("cephfs.provisioned", volume=req.volume_name, subvolume=subvolume, group=target.group,
                 fs=target.fs_name, bytes=size, seconds=round(time.monotonic() - started, 3))
        secret_name = user_secret_name(req.volume_name)
        source = {"cephfs": {"monitors": list(target.monitors), "path": path, "user": user,
                             "secretRef": {"name": secret_name, "namespace": claim_namespace}, "readOnly": False}}
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": secret_name, "namespace": claim_namespace},
                  "data": {"key": base64.b64encode(key.encode()).decode()}}
        annotations = {ANN_FS: target.fs_name, ANN_GROUP: target.group, ANN_SUBVOLUME: subvolume,
                       ANN_ADMIN_SECRET: admin_secret, ANN_ADMIN_ID: target.admin.user}
        if target.cluster_id:
            annotations[ANN_CLUSTER_ID] = target.cluster_id
        if expand_secret:
            annotations[ANN_EXPAND_SECRET] = expand_secret
        if mounter:
            annotations[ANN_PREFIX + "mounter"] = mounter
        return ProvisionResult.finished(source, f"{size // MiB}Mi", annotations=annotations, objects=[secret])

    # ---- delete and expand -------------------------------------------------------------

    def _pv_target(self, pv: dict[str, Any], secret_annotation: str = ANN_ADMIN_SECRET) -> tuple[Target, str]:
        meta = pv.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        spec = (pv.get("spec") or {}).get("cephfs") or {}
        subvolume = annotations.get(ANN_SUBVOLUME) or ""
        secret = annotations.get(secret_annotation) or annotations.get(ANN_ADMIN_SECRET) or ""
        if not subvolume or "/" not in secret:
            raise PermanentError(f"PersistentVolume {meta.get('name')}: no {ANN_SUBVOLUME} or {ANN_ADMIN_SECRET}"
                                 " annotation (not made by this provisioner)")
        cluster_id = annotations.get(ANN_CLUSTER_ID, "")
        monitors: tuple[str, ...]
        if cluster_id:
            # The cluster map may have moved the monitors since: it wins over the PV's copy.
            try:
                monitors = self._cluster(cluster_id, self._config_maps()).monitors
            except (PermanentError, TemporaryError):
                monitors = ceph.split_monitors(spec.get("monitors") or [], "cephfs.monitors")
        else:
            monitors = ceph.split_monitors(spec.get("monitors") or [], "cephfs.monitors")
        namespace, _, name = secret.partition("/")
        admin = self._admin(self._secrets(), namespace, name, annotations.get(ANN_ADMIN_ID, "admin"))
        target = Target(monitors=monitors, fs_name=annotations.get(ANN_FS) or DEFAULT_FS,
                        group=annotations.get(ANN_GROUP) or DEFAULT_CSI_GROUP, admin=admin, cluster_id=cluster_id)
        return target, subvolume

    def delete(self, pv: dict[str, Any]) -> None:
        if not self.owns(pv):
            return
        volume = (pv.get("metadata") or {}).get("name", "")
        user = ((pv.get("spec") or {}).get("cephfs") or {}).get("user") or volume
        target, subvolume = self._pv_target(pv)
        with self._connected(target) as client:
            where = {"sub_name": subvolume, "group_name": target.group}
            # The user first: once its caps are gone no client of it can reach the data (CF3).
            self._mgr(client, target, "fs subvolume deauthorize", ok_missing=True, auth_id=user, **where)
            self._mgr(client, target, "fs subvolume evict", ok_missing=True, auth_id=user, **where)
            self._mgr(client, target, "fs subvolume rm", ok_missing=True, **where)
        log.info("cephfs.deleted", volume=volume, subvolume=subvolume, group=target.group, fs=target.fs_name)

    def expand(self, pv: dict[str, Any], new_size: int) -> int:
        """``fs subvolume resize``: mounted clients see the new quota at once (no node step, CF6)."""
        target, subvolume = self._pv_target(pv, ANN_EXPAND_SECRET)
        size = quota_bytes(new_size)
        with self._connected(target) as client:
            out = self._mgr(client, target, "fs subvolume resize", sub_name=subvolume, group_name=target.group,
                            new_size=str(size), no_shrink=True)
        quota = size
        try:
            for item in json.loads(out or "[]"):
                if isinstance(item, dict) and isinstance(item.get("bytes_quota"), int):
                    quota = int(item["bytes_quota"])
        except json.JSONDecodeError:
            pass
        log.info("cephfs.resized", volume=(pv.get("metadata") or {}).get("name"), subvolume=subvolume, bytes=quota)
        return quota
