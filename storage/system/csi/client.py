"""Typed thin client for one CSI driver endpoint (Identity, Controller and Node services).

Every call has a deadline; UNAVAILABLE (the driver restarting, its socket not there yet) is retried
with back-off until the call's deadline. Secrets travel only in the request's ``secrets`` field: they
are never logged, and any secret value a driver echoes in an error message is redacted before the
error leaves this module (CS2).
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import grpc
import structlog

from storage.errors import InfeasibleError, PermanentError, TemporaryError
from storage.system.csi import csi_pb2 as pb
from storage.system.csi import csi_pb2_grpc as pbg
from storage.system.csi.names import ANN_NODE_IDS, ANN_TOPOLOGY_KEYS  # noqa: F401  (callers import them from here)

log = structlog.get_logger(__name__)

# StorageClass parameters that name Secrets (external-provisioner's prefix); never passed to the driver.
SECRET_PARAMETER_PREFIX = "csi.storage.k8s.io/"

# gRPC codes that mean "try again later" rather than "this request is wrong".
_RETRY_LATER = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


def secret_parameter_keys(parameters: Mapping[str, str]) -> set[str]:
    return {k for k in parameters if k.startswith(SECRET_PARAMETER_PREFIX)}


class CsiError(Exception):
    """A CSI call failed: ``code`` is the gRPC status code; the message is already redacted."""

    def __init__(self, method: str, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"CSI {method}: {code.name}: {message}")
        self.method = method
        self.code = code
        self.detail = message

    def to_stowage(self) -> Exception:
        if self.code in _RETRY_LATER:
            return TemporaryError(str(self), delay=2.0)
        if self.code == grpc.StatusCode.INVALID_ARGUMENT:
            return InfeasibleError(str(self))
        return PermanentError(str(self))


@dataclass(frozen=True)
class DriverInfo:
    name: str
    vendor_version: str
    plugin_capabilities: frozenset[str]
    controller_capabilities: frozenset[str] = frozenset()
    node_capabilities: frozenset[str] = frozenset()


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    max_volumes_per_node: int
    topology: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeUsage:
    available_bytes: int | None
    total_bytes: int | None
    used_bytes: int | None
    available_inodes: int | None = None
    total_inodes: int | None = None
    used_inodes: int | None = None
    abnormal: bool = False
    message: str = ""


def _redact(text: str, secrets: Mapping[str, str] | None) -> str:
    for value in (secrets or {}).values():
        if value and len(value) >= 3:
            text = text.replace(value, "***")
    return text


def _endpoint_target(endpoint: str) -> str:
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://"):]
    elif endpoint.startswith("/"):
        path = endpoint
    else:
        raise PermanentError(f"CSI endpoint {endpoint!r}: only unix:///absolute/path sockets are supported")
    if not path.startswith("/"):
        raise PermanentError(f"CSI endpoint {endpoint!r}: the socket path must be absolute")
    return "unix://" + path


def access_mode(mode: str) -> int:
    """A Kubernetes access mode -> the CSI one (as external-provisioner maps them)."""
    m = pb.VolumeCapability.AccessMode.Mode
    return {
        "ReadWriteOnce": m.SINGLE_NODE_WRITER,
        "ReadWriteOncePod": m.SINGLE_NODE_WRITER,
        "ReadOnlyMany": m.MULTI_NODE_READER_ONLY,
        "ReadWriteMany": m.MULTI_NODE_MULTI_WRITER,
    }.get(mode, m.SINGLE_NODE_WRITER)


def volume_capability(*, block: bool = False, fs_type: str = "", mount_flags: list[str] | None = None,
                      mode: str = "ReadWriteOnce", volume_mount_group: str = "") -> pb.VolumeCapability:
    """``volume_mount_group``: the pod's fsGroup, for a node service with VOLUME_MOUNT_GROUP (CS23)."""
    cap = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(mode=access_mode(mode)))
    if block:
        cap.block.CopyFrom(pb.VolumeCapability.BlockVolume())
    else:
        cap.mount.CopyFrom(pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(mount_flags or []),
                                                           volume_mount_group=volume_mount_group))
    return cap


class CsiClient:
    """One driver endpoint. Thread-safe; the channel is opened lazily and reused."""

    def __init__(self, endpoint: str, *, timeout: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self._target = _endpoint_target(endpoint)
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._info: DriverInfo | None = None

    # --- plumbing -------------------------------------------------------------------------------
    def _stubs(self) -> tuple[pbg.IdentityStub, pbg.ControllerStub, pbg.NodeStub]:
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(self._target)
            ch = self._channel
        return pbg.IdentityStub(ch), pbg.ControllerStub(ch), pbg.NodeStub(ch)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def __enter__(self) -> "CsiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, service: str, method: str, request: Any, *, secrets: Mapping[str, str] | None = None,
              timeout: float | None = None) -> Any:
        identity, controller, node = self._stubs()
        stub = {"identity": identity, "controller": controller, "node": node}[service]
        fn = getattr(stub, method)
        deadline = self._clock() + (timeout or self.timeout)
        delay = 0.05
        while True:
            remaining = deadline - self._clock()
            try:
                return fn(request, timeout=max(remaining, 0.01), wait_for_ready=False)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                detail = _redact(str(exc.details() if hasattr(exc, "details") else exc), secrets)
                left = deadline - self._clock()
                if code == grpc.StatusCode.UNAVAILABLE and left > 0.01:
                    log.debug("csi_retry_unavailable", endpoint=self.endpoint, method=method)
                    # Back-off with jitter, within the call's deadline (the last try gets what is left).
                    time.sleep(min(delay * (0.5 + random.random()), left))
                    delay = min(delay * 2, 1.0)
                    continue
                raise CsiError(method, code, detail) from None

    # --- Identity -------------------------------------------------------------------------------
    def probe(self, timeout: float | None = None) -> bool:
        resp = self._call("identity", "Probe", pb.ProbeRequest(), timeout=timeout)
        return resp.ready.value if resp.HasField("ready") else True

    def info(self, refresh: bool = False) -> DriverInfo:
        """Name, version and capabilities of all three services (cached: they are static for a driver)."""
        if self._info is not None and not refresh:
            return self._info
        pi = self._call("identity", "GetPluginInfo", pb.GetPluginInfoRequest())
        pc = self._call("identity", "GetPluginCapabilities", pb.GetPluginCapabilitiesRequest())
        plugin_caps: set[str] = set()
        for c in pc.capabilities:
            if c.HasField("service"):
                plugin_caps.add(pb.PluginCapability.Service.Type.Name(c.service.type))
            elif c.HasField("volume_expansion"):
                plugin_caps.add("EXPANSION_" + pb.PluginCapability.VolumeExpansion.Type.Name(c.volume_expansion.type))
        ctrl: set[str] = set()
        if "CONTROLLER_SERVICE" in plugin_caps:
            cc = self._call("controller", "ControllerGetCapabilities", pb.ControllerGetCapabilitiesRequest())
            ctrl = {pb.ControllerServiceCapability.RPC.Type.Name(c.rpc.type) for c in cc.capabilities
                    if c.HasField("rpc")}
        node: set[str] = set()
        try:
            nc = self._call("node", "NodeGetCapabilities", pb.NodeGetCapabilitiesRequest())
            node = {pb.NodeServiceCapability.RPC.Type.Name(c.rpc.type) for c in nc.capabilities if c.HasField("rpc")}
        except CsiError as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:  # a controller-only endpoint has no Node service
                raise
        self._info = DriverInfo(pi.name, pi.vendor_version, frozenset(plugin_caps), frozenset(ctrl), frozenset(node))
        return self._info

    # --- Controller -----------------------------------------------------------------------------
    def create_volume(self, name: str, *, required_bytes: int = 0, limit_bytes: int = 0,
                      parameters: Mapping[str, str] | None = None, secrets: Mapping[str, str] | None = None,
                      capabilities: list[pb.VolumeCapability] | None = None,
                      requisite: list[dict[str, str]] | None = None, preferred: list[dict[str, str]] | None = None,
                      snapshot_id: str = "", source_volume_id: str = "",
                      mutable_parameters: Mapping[str, str] | None = None) -> pb.Volume:
        req = pb.CreateVolumeRequest(
            name=name,
            capacity_range=pb.CapacityRange(required_bytes=required_bytes, limit_bytes=limit_bytes),
            volume_capabilities=capabilities or [volume_capability()],
            parameters=dict(parameters or {}), secrets=dict(secrets or {}),
            mutable_parameters=dict(mutable_parameters or {}),
        )
        if requisite or preferred:
            req.accessibility_requirements.CopyFrom(pb.TopologyRequirement(
                requisite=[pb.Topology(segments=s) for s in requisite or []],
                preferred=[pb.Topology(segments=s) for s in preferred or []]))
        if snapshot_id:
            req.volume_content_source.snapshot.snapshot_id = snapshot_id
        elif source_volume_id:
            req.volume_content_source.volume.volume_id = source_volume_id
        return self._call("controller", "CreateVolume", req, secrets=secrets).volume

    def delete_volume(self, volume_id: str, *, secrets: Mapping[str, str] | None = None) -> None:
        try:
            self._call("controller", "DeleteVolume", pb.DeleteVolumeRequest(volume_id=volume_id,
                                                                             secrets=dict(secrets or {})),
                       secrets=secrets)
        except CsiError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:  # already gone is success (spec: idempotent)
                raise

    def controller_publish(self, volume_id: str, node_id: str, capability: pb.VolumeCapability, *,
                           readonly: bool = False, secrets: Mapping[str, str] | None = None,
                           volume_context: Mapping[str, str] | None = None) -> dict[str, str]:
        resp = self._call("controller", "ControllerPublishVolume", pb.ControllerPublishVolumeRequest(
            volume_id=volume_id, node_id=node_id, volume_capability=capability, readonly=readonly,
            secrets=dict(secrets or {}), volume_context=dict(volume_context or {})), secrets=secrets)
        return dict(resp.publish_context)

    def controller_unpublish(self, volume_id: str, node_id: str, *,
                             secrets: Mapping[str, str] | None = None) -> None:
        try:
            self._call("controller", "ControllerUnpublishVolume", pb.ControllerUnpublishVolumeRequest(
                volume_id=volume_id, node_id=node_id, secrets=dict(secrets or {})), secrets=secrets)
        except CsiError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise

    def controller_expand(self, volume_id: str, required_bytes: int, *, secrets: Mapping[str, str] | None = None,
                          capability: pb.VolumeCapability | None = None) -> tuple[int, bool]:
        req = pb.ControllerExpandVolumeRequest(volume_id=volume_id,
                                               capacity_range=pb.CapacityRange(required_bytes=required_bytes),
                                               secrets=dict(secrets or {}))
        if capability is not None:
            req.volume_capability.CopyFrom(capability)
        resp = self._call("controller", "ControllerExpandVolume", req, secrets=secrets)
        return int(resp.capacity_bytes), bool(resp.node_expansion_required)

    def get_capacity(self, *, parameters: Mapping[str, str] | None = None,
                     topology: Mapping[str, str] | None = None) -> tuple[int, int | None]:
        """GetCapacity: (available bytes, maximum volume size or None when the driver gives none)."""
        req = pb.GetCapacityRequest(parameters=dict(parameters or {}))
        if topology:
            req.accessible_topology.CopyFrom(pb.Topology(segments=dict(topology)))
        resp = self._call("controller", "GetCapacity", req)
        maximum = int(resp.maximum_volume_size.value) if resp.HasField("maximum_volume_size") else None
        return int(resp.available_capacity), maximum

    def controller_modify(self, volume_id: str, mutable_parameters: Mapping[str, str], *,
                          secrets: Mapping[str, str] | None = None) -> None:
        """ControllerModifyVolume (CSI 1.10+): apply a VolumeAttributesClass's parameters to an existing volume."""
        self._call("controller", "ControllerModifyVolume", pb.ControllerModifyVolumeRequest(
            volume_id=volume_id, mutable_parameters=dict(mutable_parameters), secrets=dict(secrets or {})),
            secrets=secrets)

    def create_snapshot(self, source_volume_id: str, name: str, *, parameters: Mapping[str, str] | None = None,
                        secrets: Mapping[str, str] | None = None) -> pb.Snapshot:
        return self._call("controller", "CreateSnapshot", pb.CreateSnapshotRequest(
            source_volume_id=source_volume_id, name=name, parameters=dict(parameters or {}),
            secrets=dict(secrets or {})), secrets=secrets).snapshot

    def delete_snapshot(self, snapshot_id: str, *, secrets: Mapping[str, str] | None = None) -> None:
        try:
            self._call("controller", "DeleteSnapshot", pb.DeleteSnapshotRequest(
                snapshot_id=snapshot_id, secrets=dict(secrets or {})), secrets=secrets)
        except CsiError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise

    def list_snapshots(self, *, snapshot_id: str = "", source_volume_id: str = "",
                       secrets: Mapping[str, str] | None = None) -> list[pb.Snapshot]:
        """The driver's snapshots, filtered by id or source volume; an unknown id is an empty list (spec)."""
        req = pb.ListSnapshotsRequest(snapshot_id=snapshot_id, source_volume_id=source_volume_id,
                                      secrets=dict(secrets or {}))
        found: list[pb.Snapshot] = []
        while True:
            resp = self._call("controller", "ListSnapshots", req, secrets=secrets)
            found.extend(e.snapshot for e in resp.entries)
            if not resp.next_token:
                return found
            req.starting_token = resp.next_token

    # --- Node -----------------------------------------------------------------------------------
    def node_info(self, timeout: float | None = None) -> NodeInfo:
        resp = self._call("node", "NodeGetInfo", pb.NodeGetInfoRequest(), timeout=timeout)
        topo = dict(resp.accessible_topology.segments) if resp.HasField("accessible_topology") else {}
        return NodeInfo(resp.node_id, int(resp.max_volumes_per_node), topo)

    def node_stage(self, volume_id: str, staging_path: str, capability: pb.VolumeCapability, *,
                   publish_context: Mapping[str, str] | None = None, volume_context: Mapping[str, str] | None = None,
                   secrets: Mapping[str, str] | None = None) -> None:
        self._call("node", "NodeStageVolume", pb.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging_path, volume_capability=capability,
            publish_context=dict(publish_context or {}), volume_context=dict(volume_context or {}),
            secrets=dict(secrets or {})), secrets=secrets)

    def node_unstage(self, volume_id: str, staging_path: str) -> None:
        self._call("node", "NodeUnstageVolume", pb.NodeUnstageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging_path))

    def node_publish(self, volume_id: str, target_path: str, capability: pb.VolumeCapability, *,
                     staging_path: str = "", readonly: bool = False, publish_context: Mapping[str, str] | None = None,
                     volume_context: Mapping[str, str] | None = None,
                     secrets: Mapping[str, str] | None = None) -> None:
        self._call("node", "NodePublishVolume", pb.NodePublishVolumeRequest(
            volume_id=volume_id, target_path=target_path, staging_target_path=staging_path,
            volume_capability=capability, readonly=readonly, publish_context=dict(publish_context or {}),
            volume_context=dict(volume_context or {}), secrets=dict(secrets or {})), secrets=secrets)

    def node_unpublish(self, volume_id: str, target_path: str) -> None:
        try:
            self._call("node", "NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(
                volume_id=volume_id, target_path=target_path))
        except CsiError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise

    def node_expand(self, volume_id: str, volume_path: str, required_bytes: int, *, staging_path: str = "",
                    capability: pb.VolumeCapability | None = None) -> int:
        req = pb.NodeExpandVolumeRequest(volume_id=volume_id, volume_path=volume_path,
                                         staging_target_path=staging_path,
                                         capacity_range=pb.CapacityRange(required_bytes=required_bytes))
        if capability is not None:
            req.volume_capability.CopyFrom(capability)
        return int(self._call("node", "NodeExpandVolume", req).capacity_bytes)

    def node_volume_stats(self, volume_id: str, volume_path: str, staging_path: str = "") -> VolumeUsage:
        resp = self._call("node", "NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(
            volume_id=volume_id, volume_path=volume_path, staging_target_path=staging_path))
        by_unit: dict[int, Any] = {u.unit: u for u in resp.usage}
        b = by_unit.get(pb.VolumeUsage.BYTES)
        i = by_unit.get(pb.VolumeUsage.INODES)
        cond = resp.volume_condition if resp.HasField("volume_condition") else None
        return VolumeUsage(
            available_bytes=b.available if b else None, total_bytes=b.total if b else None,
            used_bytes=b.used if b else None, available_inodes=i.available if i else None,
            total_inodes=i.total if i else None, used_inodes=i.used if i else None,
            abnormal=bool(cond and cond.abnormal), message=cond.message if cond else "")
