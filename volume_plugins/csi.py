"""CSI volumes on a node: the ``csi`` PV source and inline ephemeral ``csi`` pod volumes, set up by the
driver's Node service (NodeStage once per node into a global directory, NodePublish per pod) and torn
down in reverse (CS9-CS11).

Layout, as kubelet's: the stage directory is ``<root>/plugins/kubernetes.io/csi/<driver>/<sha256 of the
volume handle>/globalmount``; a pod's volume directory holds ``vol_data.json`` (what teardown needs) and
``mount`` (the publish target, created by the driver as the spec says).
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import structlog

from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.errors import BadRequest, PermanentError, TemporaryError
from storage.system.csi.names import ANN_NODE_IDS, ANN_TOPOLOGY_KEYS
from storage.system.durable import write_durably
from storage.system.executor import Executor
from volume_plugins.base import VolumeContext, VolumePlugin

if TYPE_CHECKING:
    from storage.system.csi.client import CsiClient

# grpc and the CSI stubs (about 12 MiB resident) load with the first driver registered here, not with
# every agent: storage.system.csi.client is imported inside the functions that talk to a driver (PF41).

log = structlog.get_logger(__name__)

DIR_NAME = "kubernetes.io~csi"
# VolumeContext.data key with the driver's CSIDriver spec ({} when there is none), filled by the agent.
CSI_DRIVER_DATA_KEY = "csi:driver"
# VolumeContext.data key with the JSON of the tokens the CSIDriver's tokenRequests ask for (CS21), from the agent.
CSI_TOKENS_DATA_KEY = "csi:serviceAccount.tokens"
TOKENS_ATTRIBUTE = "csi.storage.k8s.io/serviceAccount.tokens"
VOL_DATA = "vol_data.json"

_lock = threading.Lock()
_drivers: dict[str, CsiClient] = {}


# Called with (name, endpoint) on registration and (name, None) on unregistration: `stowage up` mirrors
# its node's drivers to the control plane (one host) through this.
_listeners: list[Callable[[str, str | None], None]] = []


def add_registration_listener(listener: Callable[[str, str | None], None]) -> None:
    with _lock:
        _listeners.append(listener)
        current = [(n, c.endpoint) for n, c in _drivers.items()]
    for name, endpoint in current:
        listener(name, endpoint)


def remove_registration_listener(listener: Callable[[str, str | None], None]) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def register_node_driver(name: str, endpoint: str) -> None:
    """A CSI driver's node service on this host (``--csi-driver NAME=unix:///path`` on the agent, or
    registered through the plugin registration socket, CS15)."""
    from storage.system.csi.client import CsiClient

    with _lock:
        old = _drivers.get(name)
        if old is not None and old.endpoint == endpoint:
            return
        _drivers[name] = CsiClient(endpoint)
        listeners = list(_listeners)
    if old is not None:
        old.close()
    for listener in listeners:
        listener(name, endpoint)


def unregister_node_driver(name: str) -> None:
    with _lock:
        old = _drivers.pop(name, None)
        listeners = list(_listeners)
    if old is not None:
        old.close()
        for listener in listeners:
            listener(name, None)


def node_driver(name: str) -> CsiClient:
    with _lock:
        client = _drivers.get(name)
    if client is None:
        # As kubelet: "driver name X not found in the list of registered CSI drivers" - it may register soon.
        raise TemporaryError(f"CSI driver {name} is not registered on this node", delay=3.0)
    return client


def node_drivers() -> dict[str, str]:
    with _lock:
        return {n: c.endpoint for n, c in _drivers.items()}


# A driver whose socket does not answer NodeGetInfo within this is left out of one registration pass (the
# next heartbeat asks again): the client's 30 s retry window would stall every other driver's registration.
NODE_INFO_TIMEOUT = 5.0


def node_registration() -> tuple[dict[str, str], dict[str, str], list[dict[str, Any]]]:
    """(Node annotations, Node labels) for the drivers registered here, from NodeGetInfo: each driver's
    node id and topology keys (what kubelet puts in the nodeid annotation and CSINode) and its
    topology segments as labels (CS11). A driver that does not answer is left out this time."""
    with _lock:
        registered = list(_drivers.items())
    if not registered:
        return {}, {}, []
    from storage.system.csi.client import CsiError

    ids: dict[str, str] = {}
    keys: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    drivers: list[dict[str, Any]] = []
    for name, client in registered:
        try:
            info = client.node_info(timeout=NODE_INFO_TIMEOUT)
        except CsiError as exc:
            log.warning("csi_node_info_failed", driver=name, error=str(exc))
            continue
        ids[name] = info.node_id
        keys[name] = sorted(info.topology)
        labels.update(info.topology)
        entry: dict[str, Any] = {"name": name, "nodeID": info.node_id, "topologyKeys": keys[name] or None}
        if info.max_volumes_per_node > 0:
            entry["allocatable"] = {"count": info.max_volumes_per_node}
        drivers.append({k: v for k, v in entry.items() if v is not None})
    if not ids:
        return {}, {}, []
    annotations = {ANN_NODE_IDS: json.dumps(ids, sort_keys=True), ANN_TOPOLOGY_KEYS: json.dumps(keys, sort_keys=True)}
    return annotations, labels, sorted(drivers, key=lambda d: d["name"])


def stage_path(root: Path, driver: str, handle: str) -> Path:
    return root / "plugins" / "kubernetes.io" / "csi" / driver / hashlib.sha256(handle.encode()).hexdigest() / "globalmount"


def _root_of(target: Path) -> Path:
    # <root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>
    if len(target.parents) < 5 or target.parents[3].name != "pods":
        raise PermanentError(f"unexpected CSI volume directory {target}")
    return target.parents[4]


def _write_vol_data(target: Path, data: dict[str, Any]) -> None:
    """Replace the publish record whole, and only when it changes. A running pod's volume is published
    again at each sync, while the node's resize and stats look the record up: a record rewritten in
    place was read empty once, and the claim's resize then waited for a mount it already had."""
    path = target / VOL_DATA
    text = json.dumps(data)
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    write_durably(path, text)  # teardown after a crash reads it


class CsiPlugin(VolumePlugin):
    name = "kubernetes.io/csi"
    source_key = "csi"

    def applies_fs_group(self, ctx: VolumeContext) -> bool:
        """CS16: the driver's CSIDriver fsGroupPolicy: File always, None never, ReadWriteOnceWithFSType
        (the default) when the volume has an fsType and is ReadWriteOnce (inline volumes: an fsType). CS23: never
        when the driver applies it itself (VOLUME_MOUNT_GROUP)."""
        if self._delegates_fs_group(ctx):
            return False
        policy = (ctx.data.get(CSI_DRIVER_DATA_KEY) or {}).get("fsGroupPolicy") or "ReadWriteOnceWithFSType"
        if policy == "File":
            return True
        if policy == "None":
            return False
        if not self.spec(ctx.source).get("fsType"):
            return False
        return ctx.pv_name is None or "ReadWriteOnce" in (ctx.source.get("accessModes") or [])

    def _delegates_fs_group(self, ctx: VolumeContext) -> bool:
        """CS23, kubelet's NodeSupportsVolumeMountGroup: the node service takes the pod's fsGroup itself."""
        client = node_driver(str(self.spec(ctx.source).get("driver") or ""))
        return "VOLUME_MOUNT_GROUP" in self._call(client.info).node_capabilities

    def needs_attachment(self, ctx: VolumeContext) -> bool:
        """A PV of a driver with PUBLISH_UNPUBLISH_VOLUME waits for its VolumeAttachment (CS7)."""
        if ctx.pv_name is None or (ctx.data.get(CSI_DRIVER_DATA_KEY) or {}).get("attachRequired") is False:
            return False
        client = node_driver(str(self.spec(ctx.source).get("driver") or ""))
        return "PUBLISH_UNPUBLISH_VOLUME" in self._call(client.info).controller_capabilities

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from storage.system.csi.client import CsiError

        try:
            return fn(*args, **kwargs)
        except CsiError as exc:
            raise exc.to_stowage() from None

    def setup(self, ctx: VolumeContext) -> Path:
        spec = self.spec(ctx.source)
        driver = str(spec.get("driver") or "")
        if not driver:
            raise BadRequest(f"volume {ctx.volume_name}: csi.driver is required")
        inline = ctx.pv_name is None
        client = node_driver(driver)
        info = self._call(client.info)
        if info.name != driver:
            raise PermanentError(f"CSI driver registered as {driver} reports the name {info.name}")
        secrets = dict(ctx.data.get(SECRET_DATA_KEY) or {})
        if any(isinstance(v, bytes) for v in secrets.values()):
            secrets = {k: v.decode() if isinstance(v, bytes) else v for k, v in secrets.items()}
        attrs = {str(k): str(v) for k, v in (spec.get("volumeAttributes") or {}).items()}
        if inline:
            # CS10: an inline volume's handle is made from the pod and volume, as kubelet's csi-<sha256>.
            handle = "csi-" + hashlib.sha256(f"{ctx.pod_uid}{ctx.volume_name}".encode()).hexdigest()
            attrs["csi.storage.k8s.io/ephemeral"] = "true"
        else:
            handle = str(spec.get("volumeHandle") or "")
            if not handle:
                raise BadRequest(f"PV {ctx.pv_name}: csi.volumeHandle is required")
        if (ctx.data.get(CSI_DRIVER_DATA_KEY) or {}).get("podInfoOnMount") is True:  # CS12, as kubelet
            attrs.update({"csi.storage.k8s.io/pod.name": ctx.pod_name,
                          "csi.storage.k8s.io/pod.namespace": ctx.pod_namespace,
                          "csi.storage.k8s.io/pod.uid": ctx.pod_uid,
                          "csi.storage.k8s.io/serviceAccount.name": str(ctx.data.get("serviceAccountName") or "default")})
        publish_attrs, publish_secrets = dict(attrs), dict(secrets)
        tokens = ctx.data.get(CSI_TOKENS_DATA_KEY)
        if tokens:
            # CS21: NodePublishVolume's only, in its secrets when the driver asks (serviceAccountTokenInSecrets),
            # else in its volume context, as kubelet passes them.
            if (ctx.data.get(CSI_DRIVER_DATA_KEY) or {}).get("serviceAccountTokenInSecrets") is True:
                publish_secrets[TOKENS_ATTRIBUTE] = str(tokens)
            else:
                publish_attrs[TOKENS_ATTRIBUTE] = str(tokens)
        from storage.system.csi.client import volume_capability

        # CS23: the pod's fsGroup goes to a driver with VOLUME_MOUNT_GROUP, in NodeStage and NodePublish, as kubelet.
        group = str(ctx.fs_group) if ctx.fs_group is not None and self._delegates_fs_group(ctx) else ""
        cap = volume_capability(fs_type=str(spec.get("fsType") or ""),
                                mount_flags=list(ctx.source.get("mountOptions") or []),
                                mode=(ctx.source.get("accessModes") or ["ReadWriteOnce"])[0], volume_mount_group=group)
        read_only = ctx.read_only or bool(spec.get("readOnly"))
        publish_context = dict(ctx.attachment)
        root = _root_of(ctx.target)
        staging = ""
        if not inline and "STAGE_UNSTAGE_VOLUME" in info.node_capabilities:
            sp = stage_path(root, driver, handle)
            sp.mkdir(parents=True, exist_ok=True)
            self._call(client.node_stage, handle, str(sp), cap, publish_context=publish_context,
                       volume_context=attrs, secrets=secrets)
            staging = str(sp)
        ctx.target.mkdir(parents=True, exist_ok=True)
        _write_vol_data(ctx.target, {"driver": driver, "volumeHandle": handle, "stagingPath": staging,
                                     "ephemeral": inline})
        mount = ctx.target / "mount"
        self._call(client.node_publish, handle, str(mount), cap, staging_path=staging, readonly=read_only,
                   publish_context=publish_context, volume_context=publish_attrs, secrets=publish_secrets)
        log.info("csi_volume_published", driver=driver, handle=handle, target=str(mount))
        return mount

    def teardown(self, target: Path, executor: Executor) -> None:
        try:
            data = json.loads((target / VOL_DATA).read_text())
        except FileNotFoundError:
            return  # setup never got as far as publishing
        driver, handle, staging = data["driver"], data["volumeHandle"], data.get("stagingPath") or ""
        client = node_driver(driver)
        self._call(client.node_unpublish, handle, str(target / "mount"))
        if staging and not self._still_used(target, handle, driver):
            self._call(client.node_unstage, handle, staging)
            try:
                Path(staging).rmdir()
                Path(staging).parent.rmdir()
            except OSError:
                pass
        log.info("csi_volume_unpublished", driver=driver, handle=handle)

    def _still_used(self, target: Path, handle: str, driver: str) -> bool:
        """Another pod on this node still has the staged volume published (unstage only after the last)."""
        root = _root_of(target)
        for other in root.glob(f"pods/*/volumes/{DIR_NAME}/*/{VOL_DATA}"):
            if other.parent == target:
                continue
            try:
                d = json.loads(other.read_text())
            except (OSError, ValueError):
                continue
            if d.get("driver") == driver and d.get("volumeHandle") == handle:
                return True
        return False

    def expand(self, target: Path, new_size: int) -> int:
        """NodeExpandVolume on a published volume, when the driver has EXPAND_VOLUME on its Node service (CS8)."""
        data = json.loads((target / VOL_DATA).read_text())
        client = node_driver(data["driver"])
        if "EXPAND_VOLUME" not in self._call(client.info).node_capabilities:
            return new_size
        return self._call(client.node_expand, data["volumeHandle"], str(target / "mount"), new_size,
                          staging_path=data.get("stagingPath") or "") or new_size

    def published(self, root: Path, driver: str, handle: str) -> list[Path]:
        """This node's pod volume directories where the volume is published."""
        found = []
        for data_file in root.glob(f"pods/*/volumes/{DIR_NAME}/*/{VOL_DATA}"):
            try:
                d = json.loads(data_file.read_text())
            except (OSError, ValueError):
                continue
            if d.get("driver") == driver and d.get("volumeHandle") == handle:
                found.append(data_file.parent)
        return found

    def expand_on_node(self, root: Path, pv: dict[str, Any], new_size: int) -> bool | None:
        """The node's half of expanding a CSI PV (CS8): NodeExpandVolume where it is published here.
        None: not a CSI volume; False: not published here yet (it waits for a mount)."""
        src = (pv.get("spec") or {}).get("csi")
        if not isinstance(src, dict):
            return None
        targets = self.published(root, str(src.get("driver") or ""), str(src.get("volumeHandle") or ""))
        if not targets:
            return False
        self.expand(targets[0], new_size)
        return True

    def stats(self, target: Path) -> Any:
        """NodeGetVolumeStats of a published volume (None when the driver does not offer it)."""
        data = json.loads((target / VOL_DATA).read_text())
        client = node_driver(data["driver"])
        if "GET_VOLUME_STATS" not in self._call(client.info).node_capabilities:
            return None
        return self._call(client.node_volume_stats, data["volumeHandle"], str(target / "mount"),
                          data.get("stagingPath") or "")
