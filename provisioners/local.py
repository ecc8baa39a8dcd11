"""``stowage.io/local``: capacity-enforced volumes carved from a node's local pool.

Used with WaitForFirstConsumer: the scheduler picks the node (and accounts
for the pool's free space), then this provisioner asks that node's agent to
create the volume (a sparse file, a loop device with direct I/O, its own
filesystem). The pool is idempotent by volume name, so a retry after a crash
finds the volume the first call made.
"""
from __future__ import annotations

import os
import ssl
import threading
from typing import Any

import httpx

from provisioners.base import (
    BACKUP_DRIVER, Provisioner, ProvisionRequest, ProvisionResult, SnapshotRequest, SnapshotResult, Snapshotter,
)
from storage.api.conditions import condition
from storage.api.node_affinity import affinity_hostnames, hostname_affinity
from storage.api.quantity import format_quantity
from storage.errors import BackendConflict, Conflict, NotFound, PermanentError, TemporaryError, from_status

Obj = dict[str, Any]
NAME = "stowage.io/local"
# A pool snapshot's handle: the node that holds it and its name there (LS16). Snapshots stay on their node.
HANDLE_PREFIX = "local:"
CLONE_SNAPSHOT_PREFIX = "clone-"
CONNECT_TIMEOUT = 10.0


def snapshot_handle(node: str, name: str) -> str:
    return f"{HANDLE_PREFIX}{node}/{name}"


def parse_snapshot_handle(handle: str) -> tuple[str, str]:
    """(node, snapshot name); PermanentError for anything that is not a local snapshot handle."""
    rest = handle[len(HANDLE_PREFIX):] if handle.startswith(HANDLE_PREFIX) else ""
    node, _, name = rest.partition("/")
    if not node or not name or "/" in name:
        raise PermanentError(f'snapshotHandle: Invalid value: "{handle}": not a {NAME} snapshot handle '
                             f"({HANDLE_PREFIX}NODE/NAME)")
    return node, name


def agent_url(node: Obj) -> str:
    status = node.get("status") or {}
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    address = next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
    if not port or not address:
        raise TemporaryError(f"node {(node.get('metadata') or {}).get('name')} has not published its agent endpoint yet", delay=2.0)
    shown = f"[{address}]" if ":" in address else address
    return f"https://{shown}:{port}"


class LocalProvisioner(Provisioner, Snapshotter):
    name = NAME
    supports_clone = True  # LS19: a snapshot of the source on its node, restored, the snapshot removed
    known_parameters = frozenset({"fsType", "csi.storage.k8s.io/fstype", "pool"})

    def __init__(self, token: str | None = None, *, nodes: Any = None, timeout: float = 300.0,
                 tls: ssl.SSLContext | None = None) -> None:
        # ``tls`` trusts the cluster CA and presents the control plane's client certificate, which agents
        # accept; ``token`` is only for agents started without TLS.
        self.token = token if token is not None else os.environ.get("STOWAGE_AGENT_TOKEN")
        self.tls = tls
        self.nodes = nodes  # optional lookup name -> Node, for delete/expand
        self.timeout = timeout
        # One connection pool for every call: a burst of claims would otherwise pay a TCP connect and a
        # TLS handshake per volume on both ends (CPU the node's mkfs needs) (PF22). httpx.Client is safe
        # to share between the binder's workers.
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()

    def _client(self) -> httpx.Client:
        with self._http_lock:
            if self._http is None:
                # A short connect timeout: SYNs to a host that dropped off the network are retransmitted
                # with a doubling back-off, so a long one would hold a binder worker for minutes.
                self._http = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT), verify=self.tls if self.tls is not None else True,
                                          limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
            return self._http

    def _call(self, method: str, url: str, body: Obj | None = None, params: dict[str, str] | None = None) -> Obj:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self._client().request(method, url, json=body, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise TemporaryError(f"node agent at {url} is unreachable: {exc}", delay=2.0) from None
        if response.status_code >= 400:
            try:
                status = response.json()
            except ValueError:
                status = {"message": response.text}
            err = from_status(status, response.status_code)
            if response.status_code == 503:
                raise TemporaryError(err.message, delay=5.0)
            if isinstance(err, Conflict):
                raise BackendConflict(err.message)  # the pool's "in use" or a failed check, not a store write race (L10)
            raise err
        return response.json()

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        self.check_parameters(req.parameters)
        if req.selected_node is None:
            raise PermanentError(f"{NAME} needs volumeBindingMode WaitForFirstConsumer: no node was selected for the claim")
        node_name = (req.selected_node.get("metadata") or {}).get("name", "")
        params = req.parameters
        fs_type = params.get("fsType") or params.get("csi.storage.k8s.io/fstype") or "ext4"
        size = req.requested_bytes
        body: Obj = {"name": req.volume_name, "sizeBytes": size, "fsType": fs_type, "volumeMode": req.volume_mode}
        if params.get("pool"):
            body["pool"] = params["pool"]
        clone_snapshot = None
        if req.data_source is not None:
            placed = self._data_source(req, node_name, body)
            if isinstance(placed, ProvisionResult):
                return placed
            clone_snapshot = placed
        try:
            created = self._call("POST", f"{agent_url(req.selected_node)}/volumes", body)
        except TemporaryError as exc:
            if "bytes free" in exc.message:
                return ProvisionResult.reschedule(exc.message)
            raise
        if clone_snapshot is not None:
            self._call("DELETE", f"{agent_url(req.selected_node)}/snapshots/{clone_snapshot}")
        source: Obj = {"local": {"path": created["path"]}}
        if req.volume_mode == "Filesystem":
            source["local"]["fsType"] = created.get("fsType") or fs_type
        return ProvisionResult.finished(source, format_quantity(int(created["sizeBytes"]), prefer_binary=True), hostname_affinity(node_name))

    def _node_of(self, pv: Obj) -> Obj:
        names = affinity_hostnames(pv)
        if not names:
            raise PermanentError("local volume has no kubernetes.io/hostname node affinity")
        if self.nodes is None:
            raise TemporaryError("no node lookup configured for the local provisioner", delay=5.0)
        node = self.nodes(names[0])
        if node is None:
            raise TemporaryError(f"node {names[0]} of the volume is not registered", delay=10.0)
        ready = (condition(node, "Ready") or {}).get("status")
        if ready not in (None, "True"):
            # LR7: a request sent to an agent cut off from the network is retransmitted with a back-off
            # that outlasts the host's return by minutes; the node's Ready condition says when to call.
            raise TemporaryError(f"node {names[0]} of the volume is not Ready (Ready={ready}): "
                                 f"its agent is called once it is back", delay=5.0)
        return node

    def delete(self, pv: Obj) -> None:
        if not self.owns(pv):
            return
        name = (pv.get("metadata") or {}).get("name", "")
        try:
            self._call("DELETE", f"{agent_url(self._node_of(pv))}/volumes/{name}")
        except NotFound:
            return

    def expand(self, pv: Obj, new_size: int) -> int:
        name = (pv.get("metadata") or {}).get("name", "")
        result = self._call("POST", f"{agent_url(self._node_of(pv))}/volumes/{name}/expand", {"sizeBytes": new_size})
        return int(result["sizeBytes"])

    # ---- restore and clone (LS17-LS20) -------------------------------------------------

    def _data_source(self, req: ProvisionRequest, node_name: str, body: Obj) -> ProvisionResult | str | None:
        """Fill ``body["source"]`` for the agent; a ``reschedule`` result when the data lives on another node;
        the name of a temporary clone snapshot to remove once the volume exists."""
        ds = req.data_source
        assert ds is not None
        if ds.kind == "VolumeSnapshot" and ds.driver in self.names():
            snap_node, snap_name = parse_snapshot_handle(ds.snapshot_handle)
            if snap_node != node_name:
                return ProvisionResult.reschedule(
                    f"snapshot {snap_name} is on node {snap_node}: a volume restored from it must be on node "
                    f"{snap_node}, not {node_name}")
            body["sizeBytes"] = max(int(body["sizeBytes"]), ds.restore_size)
            body["source"] = {"snapshot": snap_name}
            return None
        if ds.kind == "VolumeSnapshot" and ds.driver == BACKUP_DRIVER:
            from provisioners.backup import restore_source

            store_url, backup_id, credentials = restore_source(ds, req.secrets)
            body["sizeBytes"] = max(int(body["sizeBytes"]), ds.restore_size)
            body["source"] = {"backup": {"store": store_url, "backupId": backup_id, "credentials": credentials}}
            return None
        if ds.kind == "PersistentVolumeClaim" and ds.source_pv is not None and self.owns(ds.source_pv):
            src = ds.source_pv
            src_name = (src.get("metadata") or {}).get("name", "")
            names = affinity_hostnames(src)
            if not names:
                raise PermanentError(f"source volume {src_name} has no kubernetes.io/hostname node affinity")
            if names[0] != node_name:
                return ProvisionResult.reschedule(
                    f"source volume {src_name} is on node {names[0]}: its clone must be on node {names[0]}, "
                    f"not {node_name}")
            snap_name = f"{CLONE_SNAPSHOT_PREFIX}{req.volume_name}"
            self._call("POST", f"{agent_url(req.selected_node or {})}/snapshots", {"name": snap_name, "volume": src_name})
            body["source"] = {"snapshot": snap_name}
            return snap_name
        what = f"a {ds.kind}" + (f" of driver {ds.driver}" if ds.driver else "")
        raise PermanentError(f"{NAME} cannot restore from {what}: only its own snapshots, {BACKUP_DRIVER} backups "
                             f"and clones of its own volumes")

    # ---- snapshots (LS16) ---------------------------------------------------------------

    def create_snapshot(self, req: SnapshotRequest) -> SnapshotResult:
        unknown = sorted(set(req.parameters) - {"pool"})
        if unknown:
            raise PermanentError(f"invalid VolumeSnapshotClass parameter(s) for {NAME}: "
                                 f"{', '.join(repr(u) for u in unknown)}")
        node = self._node_of(req.pv)
        node_name = (node.get("metadata") or {}).get("name", "")
        volume = (req.pv.get("metadata") or {}).get("name", "")
        snap = self._call("POST", f"{agent_url(node)}/snapshots", {"name": req.name, "volume": volume})
        return self._result(node_name, snap)

    @staticmethod
    def _result(node_name: str, snap: Obj) -> SnapshotResult:
        return SnapshotResult(handle=snapshot_handle(node_name, snap["name"]), restore_size=int(snap["sizeBytes"]),
                              ready=bool(snap.get("readyToUse", True)), creation_time=float(snap.get("creationTime") or 0))

    def delete_snapshot(self, handle: str, parameters: dict[str, str]) -> None:
        node_name, name = parse_snapshot_handle(handle)
        if self.nodes is None:
            raise TemporaryError("no node lookup configured for the local provisioner", delay=5.0)
        node = self.nodes(node_name)
        if node is None:
            # The node is gone with its pool: so is the snapshot (as deleting a volume of a removed node).
            return
        self._call("DELETE", f"{agent_url(node)}/snapshots/{name}")

    def snapshot_status(self, handle: str, parameters: dict[str, str]) -> SnapshotResult | None:
        node_name, name = parse_snapshot_handle(handle)
        node = self.nodes(node_name) if self.nodes is not None else None
        if node is None:
            return None
        try:
            return self._result(node_name, self._call("GET", f"{agent_url(node)}/snapshots/{name}"))
        except NotFound:
            return None
