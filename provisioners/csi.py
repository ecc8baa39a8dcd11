"""CSI drivers on the control path: CreateVolume/DeleteVolume, ControllerPublish/Unpublish (as an
``Attacher``) and ControllerExpandVolume, for any StorageClass whose ``provisioner`` is the name of a
CSI driver Stowage knows (CS4). No per-driver code: the driver's capabilities decide what is called.

Where the control plane reaches a driver's controller service: ``register_driver(name, endpoint)``,
fed by ``--csi-controller NAME=unix:///path`` on ``stowage up``/``serve`` and, in ``stowage up``
(one host), by the node agent's ``--csi-driver NAME=unix:///path`` registrations. The registry
consults ``resolve`` for names it does not otherwise know.
"""
from __future__ import annotations

import json
import threading
import time
from string import Template
from typing import Any, Mapping

import structlog

from provisioners.base import (
    ANN_PROVISIONED_BY,
    Attacher,
    SCHEDULING_PARAMETERS,
    CapacityReport,
    ProvisionRequest,
    ProvisionResult,
    Provisioner,
    SnapshotRequest,
    SnapshotResult,
    Snapshotter,
    current_secrets,
)
from storage.errors import PermanentError, TemporaryError
from storage.system.csi import CsiClient, CsiError
from storage.system.csi.client import ANN_NODE_IDS, ANN_TOPOLOGY_KEYS, SECRET_PARAMETER_PREFIX, volume_capability

log = structlog.get_logger(__name__)

# PV annotations external-provisioner writes so DeleteVolume finds the provisioner secret again.
ANN_DELETION_SECRET_NAME = "volume.kubernetes.io/provisioner-deletion-secret-name"
ANN_DELETION_SECRET_NAMESPACE = "volume.kubernetes.io/provisioner-deletion-secret-namespace"

P = SECRET_PARAMETER_PREFIX
# StorageClass parameter stem -> the PV's csi secret reference field (CS5).
SECRET_REFS: dict[str, str] = {
    "node-stage-secret": "nodeStageSecretRef",
    "node-publish-secret": "nodePublishSecretRef",
    "controller-publish-secret": "controllerPublishSecretRef",
    "controller-expand-secret": "controllerExpandSecretRef",
}
FSTYPE_PARAMETER = P + "fstype"

_lock = threading.Lock()
_endpoints: dict[str, str] = {}
_instances: dict[str, "CsiProvisioner"] = {}


def register_driver(name: str, endpoint: str) -> None:
    """Make the driver ``name``'s controller service at ``endpoint`` available to the control plane."""
    with _lock:
        if _endpoints.get(name) != endpoint:
            _endpoints[name] = endpoint
            old = _instances.pop(name, None)
            if old is not None:
                old.client.close()


def unregister_driver(name: str) -> None:
    with _lock:
        _endpoints.pop(name, None)
        old = _instances.pop(name, None)
    if old is not None:
        old.client.close()


def registered_drivers() -> dict[str, str]:
    with _lock:
        return dict(_endpoints)


def parse_driver_flag(value: str) -> tuple[str, str]:
    """``NAME=unix:///path`` (the --csi-controller / --csi-driver flags)."""
    name, sep, endpoint = value.partition("=")
    if not sep or not name or not endpoint.startswith("unix:///"):
        raise PermanentError(f"CSI driver {value!r}: expected NAME=unix:///absolute/path/csi.sock")
    return name, endpoint


def resolve(name: str) -> Provisioner | None:
    """The provisioner for CSI driver ``name`` when it is registered; the attaching variant when the
    driver has PUBLISH_UNPUBLISH_VOLUME (CS7). Driver unreachable: None for now (the claim waits as
    for an external provisioner) and asked again next time."""
    with _lock:
        found = _instances.get(name)
        endpoint = _endpoints.get(name)
    if found is not None or endpoint is None:
        return found
    client = CsiClient(endpoint, timeout=2.0)  # short: registry.get runs inside reconciles
    try:
        info = client.info()
        client.timeout = 30.0
    except CsiError as exc:
        log.warning("csi_driver_unreachable", driver=name, endpoint=endpoint, error=str(exc))
        client.close()
        return None
    if info.name != name:
        log.warning("csi_driver_name_mismatch", driver=name, reported=info.name, endpoint=endpoint)
        client.close()
        return None
    cls = CsiAttachingProvisioner if "PUBLISH_UNPUBLISH_VOLUME" in info.controller_capabilities else CsiProvisioner
    provisioner = cls(name, client)
    with _lock:
        if _endpoints.get(name) != endpoint:  # re-registered meanwhile
            client.close()
            return None
        return _instances.setdefault(name, provisioner)


def _substitute(text: str, field_name: str, values: Mapping[str, str]) -> str:
    class _T(Template):
        idpattern = r"[a-z]+\.[a-z]+"

    try:
        return _T(text).substitute(values)
    except (KeyError, ValueError) as exc:
        raise PermanentError(f"parameter {field_name}: template {exc} is not allowed here") from None


def secret_ref(parameters: Mapping[str, str], stem: str, *, pv: str, claim: Mapping[str, Any] | None
               ) -> dict[str, str] | None:
    """``{name, namespace}`` from ``csi.storage.k8s.io/<stem>-name/-namespace`` (CS5), or None. As in
    external-provisioner: names may use ${pv.name}, ${pvc.name}, ${pvc.namespace}; namespaces only
    ${pv.name} and ${pvc.namespace}."""
    name = parameters.get(f"{P}{stem}-name")
    namespace = parameters.get(f"{P}{stem}-namespace")
    if name is None and namespace is None:
        return None
    if not name or not namespace:
        raise PermanentError(f"parameters {P}{stem}-name and {P}{stem}-namespace must be given together")
    meta = (claim or {}).get("metadata") or {}
    ns_values = {"pv.name": pv, "pvc.namespace": str(meta.get("namespace") or "")}
    return {"name": _substitute(name, f"{P}{stem}-name", {**ns_values, "pvc.name": str(meta.get("name") or "")}),
            "namespace": _substitute(namespace, f"{P}{stem}-namespace", ns_values)}


def _read_secret(ref: Mapping[str, str] | None, reader: Any) -> dict[str, str]:
    if not ref:
        return {}
    if reader is None:
        raise TemporaryError("no Secret reader available to read the CSI secret", delay=2.0)
    data = reader(ref["namespace"], ref["name"])
    if data is None:
        # external-provisioner retries: the Secret may be created after the claim.
        raise TemporaryError(f"secret {ref['namespace']}/{ref['name']} named by the StorageClass not found", delay=5.0)
    return dict(data)


def _node_topology(node: Mapping[str, Any] | None, driver: str) -> dict[str, str]:
    if not node:
        return {}
    meta = node.get("metadata") or {}
    try:
        keys = json.loads((meta.get("annotations") or {}).get(ANN_TOPOLOGY_KEYS) or "{}").get(driver) or []
    except ValueError:
        keys = []
    labels = meta.get("labels") or {}
    return {k: labels[k] for k in keys if k in labels}


def node_id_for(node: Mapping[str, Any] | None, driver: str) -> str | None:
    meta = (node or {}).get("metadata") or {}
    try:
        ids = json.loads((meta.get("annotations") or {}).get(ANN_NODE_IDS) or "{}")
    except ValueError:
        return None
    value = ids.get(driver) if isinstance(ids, dict) else None
    return str(value) if value else None


class CsiProvisioner(Provisioner, Snapshotter):
    """One CSI driver's controller service. Instances are per driver (``name`` is set per instance).
    Snapshots, restores and clones go to the driver when it has the capability (CS17-CS20)."""

    name = "csi"  # replaced per instance by the driver's name

    def __init__(self, driver: str, client: CsiClient) -> None:
        self.name = driver  # type: ignore[misc]
        self.client = client

    def names(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({self.name})

    def check_parameters(self, parameters: dict[str, str]) -> None:
        return None  # the driver validates its own parameters; CreateVolume says INVALID_ARGUMENT

    def _caps(self) -> frozenset[str]:
        try:
            return self.client.info().controller_capabilities
        except CsiError as exc:
            raise exc.to_stowage() from None

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        params = req.parameters
        if "CREATE_DELETE_VOLUME" not in self._caps():
            raise PermanentError(f"CSI driver {self.name} cannot create volumes (no CREATE_DELETE_VOLUME)")
        pv = req.volume_name
        prov_ref = secret_ref(params, "provisioner-secret", pv=pv, claim=req.claim)
        secrets = _read_secret(prov_ref, req.secrets)
        driver_params = {k: v for k, v in params.items() if not k.startswith(P)}
        fs_type = params.get(FSTYPE_PARAMETER, "")
        block = req.volume_mode == "Block"
        caps = [volume_capability(block=block, fs_type=fs_type, mount_flags=req.mount_options, mode=m)
                for m in (req.access_modes or ["ReadWriteOnce"])]
        topo = _node_topology(req.selected_node, self.name)
        snapshot_id, source_volume_id = self._content_source(req)
        try:
            volume = self.client.create_volume(
                pv, required_bytes=req.requested_bytes, parameters=driver_params, secrets=secrets,
                capabilities=caps, requisite=[topo] if topo else None, preferred=[topo] if topo else None,
                snapshot_id=snapshot_id, source_volume_id=source_volume_id,
                mutable_parameters=req.mutable_parameters)
        except CsiError as exc:
            raise exc.to_stowage() from None
        source: dict[str, Any] = {"driver": self.name, "volumeHandle": volume.volume_id,
                                  "volumeAttributes": {**dict(volume.volume_context),
                                                       "storage.kubernetes.io/csiProvisionerIdentity": self.name}}
        if fs_type and not block:
            source["fsType"] = fs_type
        for stem, field_name in SECRET_REFS.items():
            ref = secret_ref(params, stem, pv=pv, claim=req.claim)
            if ref:
                source[field_name] = ref
        affinity = None
        terms = [{"matchExpressions": [{"key": k, "operator": "In", "values": [v]}
                                       for k, v in sorted(t.segments.items())]}
                 for t in volume.accessible_topology if t.segments]
        if terms:
            affinity = {"required": {"nodeSelectorTerms": terms}}
        annotations = {}
        if prov_ref:
            annotations = {ANN_DELETION_SECRET_NAME: prov_ref["name"], ANN_DELETION_SECRET_NAMESPACE: prov_ref["namespace"]}
        capacity = int(volume.capacity_bytes) or req.requested_bytes
        log.info("csi_volume_created", driver=self.name, pv=pv, handle=volume.volume_id, bytes=capacity)
        return ProvisionResult.finished({"csi": source}, str(capacity), node_affinity=affinity, annotations=annotations)

    def _content_source(self, req: ProvisionRequest) -> tuple[str, str]:
        """(snapshot id, source volume id) for CreateVolume's volume_content_source (CS18, CS19): only this
        driver's own snapshots and volumes; the driver restores them, the controller checked sizes."""
        ds = req.data_source
        if ds is None:
            return "", ""
        if ds.kind == "VolumeSnapshot":
            if ds.driver != self.name:
                raise PermanentError(f"CSI driver {self.name} cannot restore a snapshot of driver {ds.driver!r}")
            return ds.snapshot_handle, ""
        if not self.supports_clone:
            raise PermanentError(f"CSI driver {self.name} cannot clone volumes (no CLONE_VOLUME capability)")
        handle, _src = self._handle(ds.source_pv or {})
        return "", handle

    @property
    def supports_clone(self) -> bool:  # type: ignore[override]
        return "CLONE_VOLUME" in self._caps()

    def _snapshot_secrets(self, parameters: Mapping[str, str], reader: Any) -> dict[str, str]:
        # The external-snapshotter's keys; no templates (a snapshot's content has no claim to fill them from).
        name = parameters.get(f"{P}snapshotter-secret-name")
        namespace = parameters.get(f"{P}snapshotter-secret-namespace")
        if not name and not namespace:
            return {}
        if not name or not namespace:
            raise PermanentError(f"parameters {P}snapshotter-secret-name and {P}snapshotter-secret-namespace"
                                 " must be given together")
        return _read_secret({"name": name, "namespace": namespace}, reader)

    @staticmethod
    def _snapshot_result(snap: Any) -> SnapshotResult:
        created = snap.creation_time.ToNanoseconds() / 1e9 if snap.HasField("creation_time") else time.time()
        return SnapshotResult(handle=snap.snapshot_id, restore_size=int(snap.size_bytes), ready=bool(snap.ready_to_use),
                              creation_time=created, message="" if snap.ready_to_use else "the driver is cutting it")

    def create_snapshot(self, req: SnapshotRequest) -> SnapshotResult:
        """CS17: CreateSnapshot named after the content (idempotent at the driver), class parameters without
        the csi.storage.k8s.io/ keys, the snapshotter Secret's data as the request's secrets."""
        if "CREATE_DELETE_SNAPSHOT" not in self._caps():
            raise PermanentError(f"CSI driver {self.name} cannot take snapshots (no CREATE_DELETE_SNAPSHOT)")
        handle, _src = self._handle(req.pv)
        secrets = self._snapshot_secrets(req.parameters, req.secrets)
        params = {k: v for k, v in req.parameters.items() if not k.startswith(P)}
        try:
            snap = self.client.create_snapshot(handle, req.name, parameters=params, secrets=secrets)
        except CsiError as exc:
            raise exc.to_stowage() from None
        log.info("csi_snapshot_created", driver=self.name, snapshot=req.name, handle=snap.snapshot_id,
                 ready=snap.ready_to_use)
        return self._snapshot_result(snap)

    def delete_snapshot(self, handle: str, parameters: dict[str, str]) -> None:
        secrets = self._snapshot_secrets(parameters, current_secrets())
        try:
            self.client.delete_snapshot(handle, secrets=secrets)
        except CsiError as exc:
            raise exc.to_stowage() from None

    def snapshot_status(self, handle: str, parameters: dict[str, str]) -> SnapshotResult | None:
        """CS20: a pre-provisioned content's snapshot, through ListSnapshots by id."""
        if "LIST_SNAPSHOTS" not in self._caps():
            raise PermanentError(f"CSI driver {self.name} cannot list snapshots (no LIST_SNAPSHOTS)")
        secrets = self._snapshot_secrets(parameters, current_secrets())
        try:
            found = self.client.list_snapshots(snapshot_id=handle, secrets=secrets)
        except CsiError as exc:
            raise exc.to_stowage() from None
        return self._snapshot_result(found[0]) if found else None

    def _handle(self, pv: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        src = ((pv.get("spec") or {}).get("csi") or {})
        if src.get("driver") != self.name or not src.get("volumeHandle"):
            raise PermanentError(f"PV {(pv.get('metadata') or {}).get('name')}: spec.csi.volumeHandle of driver "
                                 f"{self.name} missing")
        return str(src["volumeHandle"]), src

    def delete(self, pv: dict[str, Any]) -> None:
        ann = (pv.get("metadata") or {}).get("annotations") or {}
        by = ann.get(ANN_PROVISIONED_BY)
        if by and by != self.name:  # as external-provisioner: another provisioner's PV is never deleted here
            log.info("csi_delete_skipped_foreign", driver=self.name, pv=(pv.get("metadata") or {}).get("name"), by=by)
            return
        handle, _ = self._handle(pv)
        ref = None
        if ann.get(ANN_DELETION_SECRET_NAME):
            ref = {"name": ann[ANN_DELETION_SECRET_NAME], "namespace": ann.get(ANN_DELETION_SECRET_NAMESPACE, "")}
        secrets = _read_secret(ref, current_secrets())
        try:
            self.client.delete_volume(handle, secrets=secrets)
        except CsiError as exc:
            raise exc.to_stowage() from None
        log.info("csi_volume_deleted", driver=self.name, handle=handle)

    def expand(self, pv: dict[str, Any], new_size: int) -> int:
        handle, src = self._handle(pv)
        if "EXPAND_VOLUME" not in self._caps():
            return new_size  # CS8: node-only expansion; NodeExpandVolume grows it on the node
        secrets = _read_secret(src.get("controllerExpandSecretRef"), current_secrets())
        try:
            size, _node_needed = self.client.controller_expand(handle, new_size, secrets=secrets)
        except CsiError as exc:
            raise exc.to_stowage() from None
        return max(size, new_size)

    def get_capacity(self, storage_class: dict[str, Any], segment: dict[str, str]) -> CapacityReport | None:
        """SCAP2: GetCapacity with the class's parameters (without csi.storage.k8s.io/ ones, as CreateVolume gets
        them) and the segment; None for a driver without GET_CAPACITY."""
        if "GET_CAPACITY" not in self._caps():
            return None
        params = {k: v for k, v in (storage_class.get("parameters") or {}).items()
                  if not k.startswith(P) and k not in SCHEDULING_PARAMETERS}
        try:
            available, maximum = self.client.get_capacity(parameters=params, topology=segment)
        except CsiError as exc:
            raise exc.to_stowage() from None
        return CapacityReport(available, maximum)

    def supports_modify(self) -> bool:
        # CSI: mutable_parameters are for drivers with MODIFY_VOLUME only (the spec's "SHALL NOT" otherwise).
        return "MODIFY_VOLUME" in self._caps()

    def modify(self, pv: dict[str, Any], parameters: dict[str, str]) -> None:
        """VAC4: ControllerModifyVolume with the class's parameters; INVALID_ARGUMENT is InfeasibleError."""
        handle, src = self._handle(pv)
        if not self.supports_modify():
            raise PermanentError(f"CSI driver {self.name} cannot modify volumes (no MODIFY_VOLUME capability)")
        # external-resizer sends the expansion secret with ControllerModifyVolume too.
        secrets = _read_secret(src.get("controllerExpandSecretRef"), current_secrets())
        try:
            self.client.controller_modify(handle, parameters, secrets=secrets)
        except CsiError as exc:
            raise exc.to_stowage() from None
        log.info("csi_volume_modified", driver=self.name, handle=handle)

    def owns(self, pv: dict[str, Any]) -> bool:
        ann = (pv.get("metadata") or {}).get("annotations") or {}
        return ann.get(ANN_PROVISIONED_BY) == self.name or ((pv.get("spec") or {}).get("csi") or {}).get(
            "driver") == self.name


class CsiAttachingProvisioner(CsiProvisioner, Attacher):
    """A driver with PUBLISH_UNPUBLISH_VOLUME: the attach/detach controller calls ControllerPublish (CS7)."""

    def _capability(self, pv: Mapping[str, Any], src: Mapping[str, Any]) -> Any:
        spec = pv.get("spec") or {}
        modes = spec.get("accessModes") or ["ReadWriteOnce"]
        return volume_capability(block=spec.get("volumeMode") == "Block", fs_type=str(src.get("fsType") or ""),
                                 mount_flags=list(spec.get("mountOptions") or []), mode=modes[0])

    def attach(self, pv: dict[str, Any], node: dict[str, Any]) -> dict[str, str]:
        handle, src = self._handle(pv)
        node_name = (node.get("metadata") or {}).get("name")
        node_id = node_id_for(node, self.name)
        if not node_id:
            raise TemporaryError(f"node {node_name} has not registered CSI driver {self.name} yet", delay=2.0)
        secrets = _read_secret(src.get("controllerPublishSecretRef"), current_secrets())
        _known_node_ids[(self.name, str(node_name))] = node_id
        try:
            return self.client.controller_publish(handle, node_id, self._capability(pv, src),
                                                  readonly=bool(src.get("readOnly")), secrets=secrets,
                                                  volume_context=src.get("volumeAttributes") or {})
        except CsiError as exc:
            raise exc.to_stowage() from None

    def detach(self, pv: dict[str, Any], node_name: str) -> None:
        handle, src = self._handle(pv)
        # The node object may be gone; the driver's node id is, for every driver seen so far, recorded on
        # the VolumeAttachment's node only. Without it, fall back to the node name (hostpath and mock use it).
        secrets = _read_secret(src.get("controllerPublishSecretRef"), current_secrets())
        node_id = _known_node_ids.get((self.name, node_name), node_name)
        try:
            self.client.controller_unpublish(handle, node_id, secrets=secrets)
        except CsiError as exc:
            raise exc.to_stowage() from None


# (driver, node name) -> the driver's node id, remembered from attaches so a detach after the Node is
# deleted still names the right node.
_known_node_ids: dict[tuple[str, str], str] = {}
