"""``flocker`` volumes through Flocker's control-service REST API (v1), as Kubernetes' flocker plugin (SV5-SV7).

The dataset is ``datasetUUID``, or the one whose ``metadata.name`` is ``datasetName`` (created when
missing, 10 GiB as Kubernetes); its primary is moved to this node when it is elsewhere, the plugin waits
(back-off, deadline) until the control service's state shows it here with a path, and binds that path
into the pod. The control service is ``$FLOCKER_CONTROL_SERVICE_URL``, or Kubernetes' variables
``FLOCKER_CONTROL_SERVICE_HOST`` / ``_PORT`` (4523) with ``_CA_FILE``, ``_CLIENT_KEY_FILE`` and
``_CLIENT_CERT_FILE`` for its TLS. This node is the Flocker node whose ``host`` is the address this host
reaches the control service from.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from storage.errors import PermanentError, TemporaryError
from storage.system import mounts
from volume_plugins.base import VolumeContext, VolumePlugin

log = structlog.get_logger(__name__)

DEFAULT_PORT = 4523
DEFAULT_SIZE = 10 * 2**30
PRIMARY_WAIT_SECONDS = 60.0


def control_service_url() -> str:
    url = os.environ.get("FLOCKER_CONTROL_SERVICE_URL")
    if url:
        return url.rstrip("/")
    host = os.environ.get("FLOCKER_CONTROL_SERVICE_HOST")
    if not host:
        raise TemporaryError("flocker: no control service configured on this node (FLOCKER_CONTROL_SERVICE_URL, "
                             "or FLOCKER_CONTROL_SERVICE_HOST and _PORT)", delay=30.0)
    port = os.environ.get("FLOCKER_CONTROL_SERVICE_PORT") or DEFAULT_PORT
    return f"https://{host}:{port}"


class FlockerClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        cert = None
        key_file, cert_file = (os.environ.get("FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE"),
                               os.environ.get("FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE"))
        if key_file and cert_file:
            cert = (cert_file, key_file)
        verify: Any = os.environ.get("FLOCKER_CONTROL_SERVICE_CA_FILE") or True
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, cert=cert, verify=verify)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise TemporaryError(f"flocker: control service {self.base_url}: {exc}", delay=10.0) from exc
        if response.status_code >= 400:
            try:
                description = response.json().get("description") or response.text
            except ValueError:
                description = response.text
            raise TemporaryError(f"flocker: {method} {path}: {response.status_code} {description}".strip(), delay=10.0)
        return response.json()

    def node_uuid(self) -> str:
        parts = urlsplit(self.base_url)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORT))
            address = probe.getsockname()[0]
        finally:
            probe.close()
        for node in self._call("GET", "/v1/state/nodes"):
            if node.get("host") == address:
                return str(node["uuid"])
        raise TemporaryError(f"flocker: the control service knows no node at {address} (this host)", delay=10.0)

    def configured(self) -> list[dict[str, Any]]:
        return [d for d in self._call("GET", "/v1/configuration/datasets") if not d.get("deleted")]

    def state(self, dataset_id: str) -> dict[str, Any] | None:
        return next((d for d in self._call("GET", "/v1/state/datasets") if d.get("dataset_id") == dataset_id), None)

    def create(self, name: str, primary: str) -> dict[str, Any]:
        return self._call("POST", "/v1/configuration/datasets",
                          {"primary": primary, "maximum_size": DEFAULT_SIZE, "metadata": {"name": name}})

    def move(self, dataset_id: str, primary: str) -> None:
        self._call("POST", f"/v1/configuration/datasets/{dataset_id}", {"primary": primary})


class FlockerPlugin(VolumePlugin):
    name = "kubernetes.io/flocker"
    source_key = "flocker"

    def __init__(self, client: FlockerClient | None = None) -> None:
        self._client = client

    def client(self) -> FlockerClient:
        return self._client or FlockerClient(control_service_url())

    def setup(self, ctx: VolumeContext) -> Path:
        spec = self.spec(ctx.source)
        name, uuid = str(spec.get("datasetName") or ""), str(spec.get("datasetUUID") or "")
        if bool(name) == bool(uuid):
            raise PermanentError("flocker: exactly one of datasetName and datasetUUID is required")
        if mounts.is_mount_point(ctx.target):
            return ctx.target
        client = self.client()
        node = client.node_uuid()
        configured = client.configured()
        if name:
            found = next((d for d in configured if (d.get("metadata") or {}).get("name") == name), None)
            if found is None:
                found = client.create(name, node)
                log.info("flocker.dataset_created", dataset=found.get("dataset_id"), name=name)
        else:
            found = next((d for d in configured if d.get("dataset_id") == uuid), None)
        if found is None or found.get("primary") != node:
            client.move(uuid or str(found["dataset_id"]), node)  # an unknown id is refused by the service
        uuid = uuid or str(found["dataset_id"])
        state = self._wait_primary(client, uuid, node)
        ctx.target.mkdir(parents=True, exist_ok=True)
        mounts.bind_mount(state["path"], ctx.target, ctx.read_only or bool(spec.get("readOnly")), executor=ctx.executor)
        return ctx.target

    @staticmethod
    def _wait_primary(client: FlockerClient, uuid: str, node: str) -> dict[str, Any]:
        deadline = time.monotonic() + PRIMARY_WAIT_SECONDS
        delay = 0.05
        while True:
            state = client.state(uuid)
            if state is not None and state.get("primary") == node and state.get("path"):
                return state
            if time.monotonic() + delay > deadline:
                raise TemporaryError(f"flocker: dataset {uuid} is not on this node yet", delay=5.0)
            time.sleep(delay)
            delay = min(1.0, delay * 2)
