"""Turning a pod's ``spec.volumes`` into what the volume manager needs.

Claims are followed to their bound PersistentVolume; configMap, secret and
downward-API contents are read through the API here, so the node-side
plugins never talk to the API server themselves.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol

from storage.agent.volume_manager import PodVolumes, VolumeRequest
from storage.api.ephemeral import claim_volumes, foreign_ephemeral_claim, not_created_for
from storage.api.volume_secrets import SECRET_DATA_KEY, volume_secret_ref
from storage.errors import NotFound
from volume_plugins.azure_file import DATA_KEY as AZURE_FILE_SECRET, secret_location as azure_file_secret
from volume_plugins.glusterfs import DATA_KEY as GLUSTERFS_HOSTS, endpoint_hosts, endpoints_location

Obj = dict[str, Any]


class Reader(Protocol):
    def get(self, resource: str, name: str, namespace: str = "") -> Obj: ...


class VolumeNotReady(Exception):
    """A volume cannot be set up yet (claim unbound, volume missing); the message says why."""


CSI_DRIVER_DATA_KEY = "csi:driver"


def _get(reader: Reader, resource: str, name: str, namespace: str = "") -> Obj | None:
    try:
        return reader.get(resource, name, namespace)
    except NotFound:
        return None


def config_map_contents(obj: Obj | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    contents: dict[str, Any] = dict(obj.get("data") or {})
    for key, value in (obj.get("binaryData") or {}).items():
        contents[key] = base64.b64decode(value)
    return contents


def secret_contents(obj: Obj | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    contents: dict[str, Any] = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    for key, value in (obj.get("stringData") or {}).items():
        contents[key] = str(value).encode()
    return contents


def field_value(pod: Obj, path: str) -> str:
    """A downward-API ``fieldRef.fieldPath`` of a pod."""
    meta = pod.get("metadata") or {}
    if path.startswith("metadata.labels['") or path.startswith("metadata.annotations['"):
        which = "labels" if path.startswith("metadata.labels") else "annotations"
        key = path.split("['", 1)[1].rstrip("']")
        return str((meta.get(which) or {}).get(key, ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    node: Any = pod
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def _downward_values(pod: Obj, items: list[Obj]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        ref = item.get("fieldRef")
        if ref:
            values[item.get("path", "")] = field_value(pod, ref.get("fieldPath", ""))
        resource_ref = item.get("resourceFieldRef")
        if resource_ref:
            container = next((c for c in (pod.get("spec") or {}).get("containers") or []
                              if c.get("name") == resource_ref.get("containerName")), {})
            kind, _, res = resource_ref.get("resource", "").partition(".")
            values[item.get("path", "")] = str(((container.get("resources") or {}).get(kind) or {}).get(res, "0"))
    return values


def resolve_pod_volumes(pod: Obj, reader: Reader) -> PodVolumes:
    meta = pod.get("metadata") or {}
    namespace = meta.get("namespace", "default")
    spec = pod.get("spec") or {}
    fs_group = (spec.get("securityContext") or {}).get("fsGroup")
    requests: list[VolumeRequest] = []
    for volume in claim_volumes(pod):  # an ephemeral volume is its claim (EV3)
        name = volume.get("name", "")
        source = {k: v for k, v in volume.items() if k != "name"}
        data: dict[str, Any] = {}
        pv_name: str | None = None
        mode = "Filesystem"
        # Container mounts honour their own readOnly; the node-side setup is read-only
        # only when the source itself says so, as in Kubernetes.
        read_only = bool((next(iter(source.values()), {}) or {}).get("readOnly")) if len(source) == 1 and isinstance(next(iter(source.values())), dict) else False
        claim_ref = source.get("persistentVolumeClaim")
        if claim_ref:
            claim_name = claim_ref.get("claimName", "")
            claim = _get(reader, "persistentvolumeclaims", claim_name, namespace)
            if claim is None:
                raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" not found')
            if foreign_ephemeral_claim(pod, claim):
                raise VolumeNotReady(not_created_for(claim_name, pod))
            pv_name = (claim.get("spec") or {}).get("volumeName")
            if not pv_name or (claim.get("status") or {}).get("phase") != "Bound":
                raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" is not bound')
            pv = _get(reader, "persistentvolumes", pv_name)
            if pv is None:
                raise VolumeNotReady(f'persistentvolume "{pv_name}" not found')
            source = dict(pv.get("spec") or {})
            mode = source.get("volumeMode") or "Filesystem"
            read_only = read_only or bool(claim_ref.get("readOnly"))
        for cm in _named_sources(source, "configMap"):
            data[f"configMap:{cm}"] = config_map_contents(_get(reader, "configmaps", cm, namespace))
        for secret in _named_sources(source, "secret"):
            data[f"secret:{secret}"] = secret_contents(_get(reader, "secrets", secret, namespace))
        if isinstance(source.get("azureFile"), dict):
            secret_ns, secret_name = azure_file_secret(source, namespace, inline=pv_name is None)
            data[AZURE_FILE_SECRET] = secret_contents(_get(reader, "secrets", secret_name, secret_ns)) if secret_name else None
        volume_secret = volume_secret_ref(source, namespace, inline=pv_name is None)
        if volume_secret is not None:
            data[SECRET_DATA_KEY] = secret_contents(_get(reader, "secrets", volume_secret[1], volume_secret[0]))
        if isinstance(source.get("glusterfs"), dict):
            # The Gluster servers: the addresses of the Endpoints the source names (GF5).
            ep_ns, ep_name = endpoints_location(source, namespace, inline=pv_name is None)
            data[GLUSTERFS_HOSTS] = endpoint_hosts(_get(reader, "endpoints", ep_name, ep_ns)) if ep_name else None
        csi = source.get("csi")
        if isinstance(csi, dict) and csi.get("driver"):
            # CS12: the driver's CSIDriver object (podInfoOnMount, fsGroupPolicy); none is an empty spec.
            driver_obj = _get(reader, "csidrivers", str(csi["driver"]))
            data[CSI_DRIVER_DATA_KEY] = dict((driver_obj or {}).get("spec") or {})
            data["serviceAccountName"] = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
        downward_items = list((source.get("downwardAPI") or {}).get("items") or [])
        for projection in (source.get("projected") or {}).get("sources") or []:
            downward_items += (projection.get("downwardAPI") or {}).get("items") or []
        if downward_items:
            data["downwardAPI"] = _downward_values(pod, downward_items)
        requests.append(VolumeRequest(name=name, plugin_source=source, read_only=read_only, fs_group=fs_group,
                                      pv_name=pv_name, data=data, mode=mode))  # type: ignore[arg-type]
    return PodVolumes(uid=meta.get("uid", ""), namespace=namespace, name=meta.get("name", ""), volumes=requests)


def _named_sources(source: Obj, kind: str) -> list[str]:
    names = []
    if kind == "configMap" and source.get("configMap"):
        names.append(source["configMap"].get("name", ""))
    if kind == "secret" and source.get("secret"):
        names.append(source["secret"].get("secretName", ""))
    for projection in (source.get("projected") or {}).get("sources") or []:
        if kind in projection:
            names.append(projection[kind].get("name", ""))
    return [n for n in names if n]


@dataclass
class ApiEnvSources:
    """ConfigMaps and Secrets for container environments, read through the API."""

    reader: Reader

    def get_config_map(self, namespace: str, name: str) -> Obj | None:
        return _get(self.reader, "configmaps", name, namespace)

    def get_secret(self, namespace: str, name: str) -> Obj | None:
        return _get(self.reader, "secrets", name, namespace)


def pod_with_service_env(pod: Obj, services: list[Obj], endpoints: dict[str, Obj]) -> Obj:
    """The pod as its containers should see it: each Service of its namespace as
    ``<NAME>_SERVICE_HOST`` / ``_PORT`` variables ahead of the container's own env
    (which wins on a clash), unless ``enableServiceLinks`` is false, as Kubernetes does."""
    from storage.api.service_links import service_env

    spec = pod.get("spec") or {}
    if spec.get("enableServiceLinks") is False or not services:
        return pod
    variables = service_env(services, endpoints)
    if not variables:
        return pod
    containers = []
    for container in spec.get("containers") or []:
        own = {e.get("name") for e in container.get("env") or []}
        injected = [{"name": k, "value": v} for k, v in variables.items() if k not in own]
        containers.append({**container, "env": injected + list(container.get("env") or [])})
    return {**pod, "spec": {**spec, "containers": containers}}
