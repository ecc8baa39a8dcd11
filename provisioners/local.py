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
from typing import Any

import httpx

from provisioners.base import Provisioner, ProvisionRequest, ProvisionResult
from storage.api.node_affinity import affinity_hostnames, hostname_affinity
from storage.api.quantity import format_quantity
from storage.errors import NotFound, PermanentError, TemporaryError, from_status

Obj = dict[str, Any]
NAME = "stowage.io/local"


def agent_url(node: Obj) -> str:
    status = node.get("status") or {}
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    address = next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
    if not port or not address:
        raise TemporaryError(f"node {(node.get('metadata') or {}).get('name')} has not published its agent endpoint yet", delay=2.0)
    shown = f"[{address}]" if ":" in address else address
    return f"https://{shown}:{port}"


class LocalProvisioner(Provisioner):
    name = NAME
    known_parameters = frozenset({"fsType", "csi.storage.k8s.io/fstype", "pool"})

    def __init__(self, token: str | None = None, *, nodes: Any = None, timeout: float = 300.0,
                 tls: ssl.SSLContext | None = None) -> None:
        # ``tls`` trusts the cluster CA and presents the control plane's client certificate, which agents
        # accept; ``token`` is only for agents started without TLS.
        self.token = token if token is not None else os.environ.get("STOWAGE_AGENT_TOKEN")
        self.tls = tls
        self.nodes = nodes  # optional lookup name -> Node, for delete/expand
        self.timeout = timeout

    def _call(self, method: str, url: str, body: Obj | None = None, params: dict[str, str] | None = None) -> Obj:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(method, url, json=body, params=params, headers=headers, timeout=self.timeout,
                                     verify=self.tls if self.tls is not None else True)
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
        body = {"name": req.volume_name, "sizeBytes": size, "fsType": fs_type, "volumeMode": req.volume_mode}
        if params.get("pool"):
            body["pool"] = params["pool"]
        try:
            created = self._call("POST", f"{agent_url(req.selected_node)}/volumes", body)
        except TemporaryError as exc:
            if "bytes free" in exc.message:
                return ProvisionResult.reschedule(exc.message)
            raise
        source: Obj = {"local": {"path": created["path"]}}
        if req.volume_mode == "Filesystem":
            source["local"]["fsType"] = fs_type
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
