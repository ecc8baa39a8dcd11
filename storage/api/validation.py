"""Validation of objects on every API write, with Kubernetes' field paths and wording.

``validate(obj, old)`` returns the normalized object (served apiVersion,
canonical quantities) or raises ``Invalid`` carrying every field error found.
Call ``apply_defaults`` first, as the API server does: update checks compare
defaulted objects with defaulted stored ones.

Field paths follow Kubernetes (``spec.containers[0].name``), except that keys
of resource maps are written as dotted names (``spec.resources.requests.storage``).
"""
from __future__ import annotations

import base64
import copy
import dataclasses
import ipaddress
import json
import re
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from storage.api import batch, crd
from storage.api.bench_figures import BenchParameterError, parse_requirements
from storage.api.conversion import convert
from storage.api.cron import cron_expression, zone
from storage.api.decoding import UndecodableObject, decode_error
from storage.api.events_v1 import V1 as EVENTS_V1
from storage.api.defaults import CSI_DRIVER_DEFAULTS, normalize_data_sources
from storage.api.disruption import UNHEALTHY_POD_EVICTION_POLICIES as _UNHEALTHY_POD_EVICTION_POLICIES
from storage.api.k8s_protobuf import root_message
from storage.api.modelbase import dump
from storage.api.models import MODELS
from storage.api.models.autoscaling import METRIC_SOURCE_MEMBERS
from storage.api.models.volumes import POD_VOLUME_SOURCES, PV_VOLUME_SOURCES
from storage.api.names import (
    INGRESS_CLASS_ANNOTATION,
    is_config_map_key,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_port_name,
    is_path_segment_name,
    is_qualified_name,
    is_valid_label_value,
    is_wildcard_dns1123_subdomain,
    mask_trailing_dash,
    regex_error,
)
from storage.api.priority import HIGHEST_USER_DEFINABLE_PRIORITY, PREEMPTION_POLICIES, SYSTEM_PREFIX, system_class_error
from storage.api.quantity import parse_quantity
from storage.api.registry import ResourceInfo, by_kind
from storage.errors import BadRequest, FieldError, Invalid

__all__ = ["validate", "validate_status"]

ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
PV_RECLAIM_POLICIES = ("Delete", "Recycle", "Retain")
SC_RECLAIM_POLICIES = ("Delete", "Retain")
BINDING_MODES = ("Immediate", "WaitForFirstConsumer")
VOLUME_MODES = ("Block", "Filesystem")
RESTART_POLICIES = ("Always", "Never", "OnFailure")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("SCTP", "TCP", "UDP")
TERMINATION_MESSAGE_POLICIES = ("FallbackToLogsOnError", "File")
HOST_PATH_TYPES = ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket")
SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
SESSION_AFFINITIES = ("ClientIP", "None")
TAINT_EFFECTS = ("NoExecute", "NoSchedule", "PreferNoSchedule")
TOLERATION_OPERATORS = ("Equal", "Exists")
SELECTOR_OPERATORS = ("DoesNotExist", "Exists", "In", "NotIn")
NODE_SELECTOR_OPERATORS = ("DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn")
RETENTION_POLICIES = ("Delete", "Retain")
UNHEALTHY_POD_EVICTION_POLICIES = _UNHEALTHY_POD_EVICTION_POLICIES
PV_PHASES = ("Available", "Bound", "Failed", "Pending", "Released")
PVC_PHASES = ("Bound", "Lost", "Pending")
POD_PHASES = ("Failed", "Pending", "Running", "Succeeded", "Unknown")
NAMESPACE_PHASES = ("Active", "Terminating")
ENV_FIELD_PATHS = (
    "metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid",
    "spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
)
ENV_RESOURCES = (
    "limits.cpu", "limits.ephemeral-storage", "limits.memory",
    "requests.cpu", "requests.ephemeral-storage", "requests.memory",
)
_ENV_FIELD_PATH_KEYED = re.compile(r"metadata\.(labels|annotations)\['([^']*)'\]")
TOTAL_ANNOTATION_SIZE = 256 * 1024

# Fields each volume source needs (Kubernetes: "<source>.<field>: Required value").
_SOURCE_REQUIRED: dict[str, tuple[str, ...]] = {
    "hostPath": ("path",),
    "local": ("path",),
    "nfs": ("server", "path"),
    "iscsi": ("targetPortal", "iqn"),
    "rbd": ("monitors", "image"),
    "cephfs": ("monitors",),
    "glusterfs": ("endpoints", "path"),
    "awsElasticBlockStore": ("volumeID",),
    "gcePersistentDisk": ("pdName",),
    "azureDisk": ("diskName", "diskURI"),
    "azureFile": ("secretName", "shareName"),
    "vsphereVolume": ("volumePath",),
    "quobyte": ("registry", "volume"),
    "gitRepo": ("repository",),
    "secret": ("secretName",),
    "configMap": ("name",),
    "persistentVolumeClaim": ("claimName",),
    "flexVolume": ("driver",),
    "csi": ("driver",),
    "cinder": ("volumeID",),
    "portworxVolume": ("volumeID",),
    "photonPersistentDisk": ("pdID",),
    "scaleIO": ("gateway", "system", "volumeName"),
    "storageos": ("volumeName",),
    "ephemeral": ("volumeClaimTemplate",),
}
_PYDANTIC_TYPE_TAGS = re.compile(r"^(int|str|float|bool|none|dict\[.*\]|list\[.*\]|function-.*|[a-z-]+\[.*\])$")


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


class _Errors:
    """Collects field errors; one per call site, all reported together."""

    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def required(self, path: str, detail: str = "") -> None:
        self.items.append(FieldError(path, "Required value", detail))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.items.append(FieldError(path, "Invalid value", detail, value, True))

    def unsupported(self, path: str, value: Any, supported: Iterable[str]) -> None:
        self.items.append(FieldError(path, "Unsupported value", f"supported values: {_quoted(supported)}", value, True))

    def forbidden(self, path: str, detail: str) -> None:
        self.items.append(FieldError(path, "Forbidden", detail))

    def duplicate(self, path: str, value: Any) -> None:
        self.items.append(FieldError(path, "Duplicate value", "", value, True))

    def not_found(self, path: str, value: Any) -> None:
        self.items.append(FieldError(path, "Not found", "", value, True))

    def too_many(self, path: str, items: list[Any], limit: int) -> bool:
        """Kubernetes' field.TooMany when ``items`` has more than ``limit``; whether it had."""
        if len(items) > limit:
            self.items.append(FieldError(path, "Too many", f"must have at most {limit} items", len(items), True))
            return True
        return False

    def too_long(self, path: str, limit: int) -> None:
        self.items.append(FieldError(path, "Too long", f"must have at most {limit} bytes"))

    # --- common shapes ---

    def names(self, path: str, value: Any, check: Callable[[str], list[str]]) -> None:
        if isinstance(value, str):
            for msg in check(value):
                self.invalid(path, value, msg)

    def enum(self, path: str, value: Any, supported: tuple[str, ...]) -> None:
        if value is not None and value not in supported:
            self.unsupported(path, value, supported)

    def non_negative(self, path: str, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            self.invalid(path, value, "must be greater than or equal to 0")

    def port(self, path: str, value: Any) -> None:
        if isinstance(value, int) and not 1 <= value <= 65535:
            self.invalid(path, value, "must be between 1 and 65535, inclusive")

    def port_or_name(self, path: str, value: Any) -> None:
        if isinstance(value, int):
            self.port(path, value)
        elif isinstance(value, str):
            self.names(path, value, is_port_name)

    def immutable(self, path: str, new: Any, old: Any) -> None:
        if new != old:
            self.invalid(path, new, "field is immutable")


# --- metadata ------------------------------------------------------------------

_NAME_CHECK: dict[str, Callable[[str], list[str]]] = {
    "Namespace": is_dns1123_label,
    "Service": is_dns1035_label,
    "Role": is_path_segment_name,
    "ClusterRole": is_path_segment_name,
    "RoleBinding": is_path_segment_name,
    "ClusterRoleBinding": is_path_segment_name,
}


def _labels(errs: _Errors, path: str, labels: Any) -> None:
    for key, value in _d(labels).items():
        for msg in is_qualified_name(key):
            errs.invalid(path, key, msg)
        if isinstance(value, str):
            for msg in is_valid_label_value(value):
                errs.invalid(path, value, msg)


def _annotations(errs: _Errors, path: str, annotations: Any) -> None:
    total = 0
    for key, value in _d(annotations).items():
        for msg in is_qualified_name(key.lower()):
            errs.invalid(path, key, msg)
        total += len(key) + (len(value) if isinstance(value, str) else 0)
    if total > TOTAL_ANNOTATION_SIZE:
        errs.too_long(path, TOTAL_ANNOTATION_SIZE)


def _owner_references(errs: _Errors, path: str, refs: Any) -> None:
    controllers = []
    for ref in _l(refs):
        ref = _d(ref)
        for field_name, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(field_name):
                errs.invalid(f"{path}.{field_name}", "", f"{what} must not be empty")
        if ref.get("controller") is True:
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        errs.invalid(
            path, refs,
            f'Only one reference can have Controller set to true. Found "true" in references for {" and ".join(controllers)}',
        )


def _object_meta(errs: _Errors, meta: Any, info: ResourceInfo | None, path: str = "metadata",
                 name_check: Callable[[str], list[str]] | None = None, require_name: bool = True) -> None:
    meta = _d(meta)
    name = meta.get("name")
    check = name_check or (_NAME_CHECK.get(info.kind, is_dns1123_subdomain) if info else is_dns1123_subdomain)
    generate = meta.get("generateName")
    if generate and isinstance(generate, str):
        # Kubernetes checks the prefix as a name whose trailing dash the suffix will follow (ValidateObjectMeta).
        for message in check(mask_trailing_dash(generate)):
            errs.invalid(f"{path}.generateName", generate, message)
    if not name:
        if require_name and not generate:
            errs.required(f"{path}.name", "name or generateName is required")
    else:
        errs.names(f"{path}.name", name, check)
    namespace = meta.get("namespace")
    if info is not None:
        if info.namespaced:
            if namespace:
                errs.names(f"{path}.namespace", namespace, is_dns1123_label)
        elif namespace:
            errs.forbidden(f"{path}.namespace", "not allowed on this type")
    _labels(errs, f"{path}.labels", meta.get("labels"))
    _annotations(errs, f"{path}.annotations", meta.get("annotations"))
    _owner_references(errs, f"{path}.ownerReferences", meta.get("ownerReferences"))
    for i, fin in enumerate(_l(meta.get("finalizers"))):
        errs.names(f"{path}.finalizers[{i}]", fin, is_qualified_name)


def _object_meta_update(errs: _Errors, new: Any, old: Any) -> None:
    new, old = _d(new), _d(old)
    errs.immutable("metadata.name", new.get("name"), old.get("name"))
    # Server-managed fields are compared only when the writer sent them.
    for key in ("namespace", "uid", "creationTimestamp"):
        if new.get(key):
            errs.immutable(f"metadata.{key}", new.get(key), old.get(key))


# --- quantities and selectors --------------------------------------------------------------


def _quantity(value: Any) -> Any:
    """The value of a quantity, or None when it does not parse (the model already said so)."""
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return None


def _label_selector(errs: _Errors, path: str, selector: Any) -> None:
    selector = _d(selector)
    _labels(errs, f"{path}.matchLabels", selector.get("matchLabels"))
    for i, expr in enumerate(_l(selector.get("matchExpressions"))):
        p = f"{path}.matchExpressions[{i}]"
        expr = _d(expr)
        op, values = expr.get("operator"), _l(expr.get("values"))
        if op in ("In", "NotIn"):
            if not values:
                errs.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.forbidden(f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        else:
            errs.unsupported(f"{p}.operator", op, SELECTOR_OPERATORS)
        key = expr.get("key")
        if isinstance(key, str):
            for msg in is_qualified_name(key):
                errs.invalid(f"{p}.key", key, msg)
        for j, v in enumerate(values):
            if isinstance(v, str):
                for msg in is_valid_label_value(v):
                    errs.invalid(f"{p}.values[{j}]", v, msg)


def _selector_matches(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    from storage.api.selectors import selector_matches

    return selector_matches(selector, labels)


def _node_selector(errs: _Errors, path: str, selector: Any) -> None:
    terms = _l(_d(selector).get("nodeSelectorTerms"))
    if not terms:
        errs.required(f"{path}.nodeSelectorTerms", "must have at least one node selector term")
    for i, term in enumerate(terms):
        for kind in ("matchExpressions", "matchFields"):
            for j, req in enumerate(_l(_d(term).get(kind))):
                p = f"{path}.nodeSelectorTerms[{i}].{kind}[{j}]"
                req = _d(req)
                op, values = req.get("operator"), _l(req.get("values"))
                if op in ("In", "NotIn") and not values:
                    errs.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'")
                elif op in ("Exists", "DoesNotExist") and values:
                    errs.forbidden(f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
                elif op in ("Gt", "Lt") and len(values) != 1:
                    errs.required(f"{p}.values", "must be specified single value when `operator` is 'Lt' or 'Gt'")
                elif op not in NODE_SELECTOR_OPERATORS:
                    errs.unsupported(f"{p}.operator", op, NODE_SELECTOR_OPERATORS)
                if kind == "matchExpressions":
                    errs.names(f"{p}.key", req.get("key"), is_qualified_name)


# --- volumes -------------------------------------------------------------------------------


def _volume_source(errs: _Errors, holder: dict[str, Any], sources: tuple[str, ...], path: str, prefix: str) -> str | None:
    """Exactly one source; returns its name. ``prefix`` is where the source keys hang (``spec.``)."""
    present = [s for s in sources if holder.get(s) is not None]
    if not present:
        errs.required(path, "must specify a volume type")
        return None
    for extra in present[1:]:
        errs.forbidden(f"{prefix}{extra}", "may not specify more than 1 volume type")
    source = present[0]
    body = _d(holder.get(source))
    sp = f"{prefix}{source}"
    for field_name in _SOURCE_REQUIRED.get(source, ()):
        if not body.get(field_name):
            errs.required(f"{sp}.{field_name}")
    if source == "hostPath":
        if body.get("path"):  # Kubernetes stops at a missing path
            _no_backsteps(errs, f"{sp}.path", body.get("path"))
            errs.enum(f"{sp}.type", body.get("type"), HOST_PATH_TYPES)
    elif source == "nfs":
        nfs_path = body.get("path")
        if isinstance(nfs_path, str) and nfs_path and not nfs_path.startswith("/"):
            errs.invalid(f"{sp}.path", nfs_path, "must be an absolute path")
    elif source == "iscsi":
        lun = body.get("lun")
        if isinstance(lun, int) and not 0 <= lun <= 255:
            errs.invalid(f"{sp}.lun", lun, "must be between 0 and 255, inclusive")
    elif source == "emptyDir":
        medium = body.get("medium")
        if medium and medium not in ("Memory", "HugePages") and not str(medium).startswith("HugePages-"):
            errs.unsupported(f"{sp}.medium", medium, ("", "HugePages", "Memory"))
        size = body.get("sizeLimit")
        limit = _quantity(size) if size is not None else None
        if limit is not None and limit < 0:
            errs.forbidden(f"{sp}.sizeLimit", "SizeLimit field must be a valid resource quantity")
    elif source == "azureDisk":
        errs.enum(f"{sp}.cachingMode", body.get("cachingMode"), ("None", "ReadOnly", "ReadWrite"))
        errs.enum(f"{sp}.kind", body.get("kind"), ("Dedicated", "Managed", "Shared"))
    elif source == "flocker":
        if bool(body.get("datasetName")) == bool(body.get("datasetUUID")):
            errs.required(sp, "one of datasetName and datasetUUID is required")
    elif source == "fc":
        if bool(body.get("targetWWNs")) == bool(body.get("wwids")):
            errs.required(f"{sp}.targetWWNs", "must specify either targetWWNs or wwids, but not both")
    elif source == "gitRepo":
        directory = body.get("directory")
        if isinstance(directory, str) and ".." in directory.split("/"):
            errs.invalid(f"{sp}.directory", directory, "must not contain '..'")
    elif source == "csi":
        _csi_driver_name(errs, f"{sp}.driver", body.get("driver"))
        if sources is PV_VOLUME_SOURCES and not body.get("volumeHandle"):
            errs.required(f"{sp}.volumeHandle")
    elif source in ("secret", "configMap"):
        _file_mode(errs, f"{sp}.defaultMode", body.get("defaultMode"))
        for i, item in enumerate(_l(body.get("items"))):
            _key_to_path(errs, item, f"{sp}.items[{i}]")
    elif source == "downwardAPI":
        _file_mode(errs, f"{sp}.defaultMode", body.get("defaultMode"))
        for item in _l(body.get("items")):
            _downward_api_file(errs, item, sp)
    elif source == "projected":
        _file_mode(errs, f"{sp}.defaultMode", body.get("defaultMode"))
        _projection_sources(errs, body.get("sources"), sp)
    return source


# Kubernetes' fileModeErrorMsg: defaultMode and mode of secret, configMap, downwardAPI and projected volumes.
_FILE_MODE_ERROR = "must be a number between 0 and 0777 (octal), both inclusive"
# Kubernetes' validContainerResourceFieldPathPrefixesWithDownwardAPIHugePages (env and downwardAPI volumes).
_HUGEPAGES_RESOURCE_PREFIXES = ("limits.hugepages-", "requests.hugepages-")


def _file_mode(errs: _Errors, path: str, mode: Any) -> None:
    if isinstance(mode, int) and not isinstance(mode, bool) and not 0 <= mode <= 0o777:
        errs.invalid(path, mode, _FILE_MODE_ERROR)


def _csi_driver_name(errs: _Errors, path: str, name: Any) -> None:
    """Kubernetes' ValidateCSIDriverName (a csi volume's driver); "Required value" comes from _SOURCE_REQUIRED,
    and as in Kubernetes an empty name is reported again against the subdomain rule."""
    if name is not None and not isinstance(name, str):
        return
    name = name or ""
    if len(name) > 63:
        errs.too_long(path, 63)
    for msg in is_dns1123_subdomain(name.lower()):
        errs.invalid(path, name, msg)


def _key_to_path(errs: _Errors, item: Any, path: str) -> None:
    """Kubernetes' validateKeyToPath: an item of a secret or configMap volume (or projection)."""
    item = _d(item)
    if not item.get("key"):
        errs.required(f"{path}.key")
    _local_non_reserved_path(errs, f"{path}.path", item.get("path"), required=True)
    _file_mode(errs, f"{path}.mode", item.get("mode"))


def _downward_api_file(errs: _Errors, item: Any, path: str) -> None:
    """Kubernetes' validateDownwardAPIVolumeFile. As in Kubernetes, ``path`` is the volume's (or projection's)
    own path: errors read ``downwardAPI.path``, not ``downwardAPI.items[0].path``."""
    item = _d(item)
    _local_non_reserved_path(errs, f"{path}.path", item.get("path"), required=True)
    field_ref, resource_ref = item.get("fieldRef"), item.get("resourceFieldRef")
    if field_ref is not None:
        if resource_ref is not None:
            errs.invalid(path, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously")
    elif resource_ref is not None:
        _resource_field_ref(errs, resource_ref, f"{path}.resourceFieldRef", volume=True)
    else:
        errs.required(path, "one of fieldRef and resourceFieldRef is required")
    _file_mode(errs, f"{path}.mode", item.get("mode"))


def _resource_field_ref(errs: _Errors, ref: Any, path: str, *, volume: bool) -> None:
    """Kubernetes' validateContainerResourceFieldSelector (env valueFrom and downwardAPI volume items)."""
    ref = _d(ref)
    resource = ref.get("resource")
    if volume and not ref.get("containerName"):
        errs.required(f"{path}.containerName")
    elif not resource:
        errs.required(f"{path}.resource")
    elif resource not in ENV_RESOURCES and not str(resource).startswith(_HUGEPAGES_RESOURCE_PREFIXES):
        errs.unsupported(f"{path}.resource", resource, ENV_RESOURCES)


def _projection_sources(errs: _Errors, sources: Any, path: str) -> None:
    """Kubernetes' validateProjectionSources; ``path`` is the projected volume's."""
    paths: set[str] = set()

    def seen(file_path: Any, value: Any) -> None:
        if isinstance(file_path, str) and file_path:
            if file_path in paths:
                errs.invalid(path, value, "conflicting duplicate paths")
            paths.add(file_path)

    for i, source in enumerate(_l(sources)):
        source = _d(source)
        src = f"{path}.sources[{i}]"
        count = 0
        for kind in ("secret", "configMap"):
            if source.get(kind) is None:
                continue
            count += 1
            projection = _d(source[kind])
            if not projection.get("name"):
                errs.required(f"{src}.{kind}.name")
            for j, item in enumerate(_l(projection.get("items"))):
                _key_to_path(errs, item, f"{src}.{kind}.items[{j}]")
                seen(_d(item).get("path"), projection.get("name") or "")
        if source.get("downwardAPI") is not None:
            count += 1
            for item in _l(_d(source["downwardAPI"]).get("items")):
                _downward_api_file(errs, item, f"{src}.downwardAPI")
                seen(_d(item).get("path"), _d(item).get("path"))
        if source.get("serviceAccountToken") is not None:
            count += 1
            token = _d(source["serviceAccountToken"])
            seconds = token.get("expirationSeconds")  # unset: Kubernetes defaults it to 3600
            if isinstance(seconds, int) and not isinstance(seconds, bool):
                if seconds < 600:
                    errs.invalid(f"{src}.serviceAccountToken.expirationSeconds", seconds,
                                 "may not specify a duration less than 10 minutes")
                if seconds > 1 << 32:
                    errs.invalid(f"{src}.serviceAccountToken.expirationSeconds", seconds,
                                 "may not specify a duration larger than 2^32 seconds")
            # As in Kubernetes, the token's path is reported against the projected volume (``projected.path``).
            _local_non_reserved_path(errs, f"{path}.path", token.get("path"), required=True)
        if source.get("clusterTrustBundle") is not None:
            count += 1
        if count > 1:
            errs.forbidden(src, "may not specify more than 1 volume type")


def _no_backsteps(errs: _Errors, path: str, value: Any) -> None:
    """Kubernetes' validatePathNoBacksteps: no '..' element."""
    if isinstance(value, str) and ".." in value.replace("\\", "/").split("/"):
        errs.invalid(path, value, "must not contain '..'")


def _relative_path(errs: _Errors, path: str, value: Any, required: bool = False) -> None:
    """Kubernetes' validateLocalDescendingPath (with Required when ``required`` and empty)."""
    if not value:
        if required:
            errs.required(path)
        return
    if not isinstance(value, str):
        return
    if value.startswith("/"):
        errs.invalid(path, value, "must be a relative path")
    _no_backsteps(errs, path, value)


def _local_non_reserved_path(errs: _Errors, path: str, value: Any, required: bool = False) -> None:
    """Kubernetes' ValidateLocalNonReservedPath: also not starting with '..' (the atomic writer's ``..data``)."""
    _relative_path(errs, path, value, required)
    if isinstance(value, str) and value.startswith("..") and not value.startswith("../"):
        errs.invalid(path, value, "must not start with '..'")


def _pod_volumes(errs: _Errors, volumes: Any, path: str) -> set[str]:
    names: set[str] = set()
    for i, vol in enumerate(_l(volumes)):
        vol = _d(vol)
        p = f"{path}[{i}]"
        name = vol.get("name")
        if not name:
            errs.required(f"{p}.name")
        else:
            errs.names(f"{p}.name", name, is_dns1123_label)
            if name in names:
                errs.duplicate(f"{p}.name", name)
            names.add(name)
        _volume_source(errs, vol, POD_VOLUME_SOURCES, p, f"{p}.")
        template = _d(_d(vol.get("ephemeral")).get("volumeClaimTemplate"))
        if template:
            _pvc_spec(errs, template.get("spec"), f"{p}.ephemeral.volumeClaimTemplate.spec")
    return names


# --- pods ----------------------------------------------------------------------------------


def _resource_quantity(errs: _Errors, path: str, name: str, value: Any) -> Any:
    """One entry of a resource list (limits, requests, a pod's overhead): a qualified name and a quantity not
    below 0. Its value, or None when it does not parse."""
    q = _quantity(value)
    errs.names(path, name, is_qualified_name)
    if q is not None and q < 0:
        errs.invalid(path, value, "must be greater than or equal to 0")
    return q


def _resources(errs: _Errors, resources: Any, path: str) -> None:
    resources = _d(resources)
    limits = _d(resources.get("limits"))
    for section in ("limits", "requests"):
        for name, value in _d(resources.get(section)).items():
            p = f"{path}.{section}.{name}"
            q = _resource_quantity(errs, p, name, value)
            if section == "requests" and q is not None and name in limits:
                limit = _quantity(limits[name])
                if limit is not None and q > limit:
                    errs.invalid(p, value, f"must be less than or equal to {name} limit of {limits[name]}")


def _probe(errs: _Errors, probe: Any, path: str, liveness_like: bool) -> None:
    if probe is None:
        return
    probe = _d(probe)
    _one_handler(errs, probe, path, ("exec", "httpGet", "tcpSocket", "grpc"))
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        errs.non_negative(f"{path}.{key}", probe.get(key))
    success = probe.get("successThreshold")
    if liveness_like and isinstance(success, int) and success != 1:
        errs.invalid(f"{path}.successThreshold", success, "must be 1")


def _lifecycle_handler(errs: _Errors, handler: dict[str, Any], path: str, grace: Any) -> None:
    """LH4: Kubernetes' validateHandler for a hook: exactly one handler type, and a sleep of more than 0 seconds
    and no more than the pod's grace period (Kubernetes 1.30, which does not allow 0)."""
    _one_handler(errs, handler, path, ("exec", "httpGet", "tcpSocket", "sleep"))
    sleep = handler.get("sleep")
    seconds = _d(sleep).get("seconds") if sleep is not None else None
    if isinstance(seconds, int) and not isinstance(seconds, bool) and isinstance(grace, int) and (
            seconds <= 0 or seconds > grace):
        errs.invalid(f"{path}.sleep", seconds,
                     f"must be greater than 0 and less than terminationGracePeriodSeconds ({grace})")


def _one_handler(errs: _Errors, handler: dict[str, Any], path: str, kinds: tuple[str, ...]) -> None:
    """Kubernetes' validateHandler: exactly one of ``kinds`` (a probe's or a hook's), then that handler's rules."""
    given = [k for k in kinds if handler.get(k) is not None]
    if not given:
        errs.required(path, "must specify a handler type")
    for extra in given[1:]:
        errs.forbidden(f"{path}.{extra}", "may not specify more than 1 handler type")
    _handler(errs, handler, path)


def _handler(errs: _Errors, handler: dict[str, Any], path: str) -> None:
    if "exec" in handler and handler["exec"] is not None and not _d(handler["exec"]).get("command"):
        errs.required(f"{path}.exec.command")
    http = handler.get("httpGet")
    if http is not None:
        http = _d(http)
        errs.port_or_name(f"{path}.httpGet.port", http.get("port"))
        errs.enum(f"{path}.httpGet.scheme", http.get("scheme"), ("HTTP", "HTTPS"))
    tcp = handler.get("tcpSocket")
    if tcp is not None:
        errs.port_or_name(f"{path}.tcpSocket.port", _d(tcp).get("port"))
    grpc = handler.get("grpc")
    if grpc is not None:
        errs.port(f"{path}.grpc.port", _d(grpc).get("port"))


def _env(errs: _Errors, env: Any, path: str) -> None:
    for i, var in enumerate(_l(env)):
        var = _d(var)
        p = f"{path}[{i}]"
        name = var.get("name")
        if not name:
            errs.required(f"{p}.name")
        elif isinstance(name, str) and ("=" in name or not name.isprintable() or not name.isascii()):
            errs.invalid(f"{p}.name", name, "a valid environment variable name must consist only of printable ASCII characters other than '='")
        source = var.get("valueFrom")
        if source is None:
            continue
        source = _d(source)
        vp = f"{p}.valueFrom"
        if var.get("value"):
            errs.invalid(vp, "", "may not be specified when `value` is not empty")
        refs = [r for r in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef") if source.get(r) is not None]
        if not refs:
            errs.invalid(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`")
        elif len(refs) > 1:
            errs.invalid(vp, "", "may not have more than one field specified at a time")
        field_ref = source.get("fieldRef")
        if field_ref is not None:
            fp = _d(field_ref).get("fieldPath")
            if not fp:
                errs.required(f"{vp}.fieldRef.fieldPath")
            elif fp not in ENV_FIELD_PATHS and not _ENV_FIELD_PATH_KEYED.fullmatch(str(fp)):
                errs.unsupported(f"{vp}.fieldRef.fieldPath", fp, ENV_FIELD_PATHS)
        rf = source.get("resourceFieldRef")
        if rf is not None:
            _resource_field_ref(errs, rf, f"{vp}.resourceFieldRef", volume=False)
        for ref in ("configMapKeyRef", "secretKeyRef"):
            if source.get(ref) is not None:
                key = _d(source[ref]).get("key")
                if not key:
                    errs.required(f"{vp}.{ref}.key")
                else:
                    errs.names(f"{vp}.{ref}.key", key, is_config_map_key)


_PROFILE_TYPES = ("Unconfined", "RuntimeDefault", "Localhost")


def _security_profiles(errs: _Errors, security: dict[str, Any], path: str) -> None:
    """AA4: Kubernetes' validateSeccompProfileField and validateAppArmorProfileField on a pod's or a
    container's security context (``path``)."""
    for field, what in (("seccompProfile", "seccomp"), ("appArmorProfile", "AppArmor")):
        profile = security.get(field)
        if profile is None:
            continue
        here = f"{path}.{field}"
        profile = _d(profile)
        kind, localhost = profile.get("type"), profile.get("localhostProfile")
        if not kind:
            errs.required(f"{here}.type", f"type is required when {field} is set")
        else:
            errs.enum(f"{here}.type", kind, _PROFILE_TYPES)
        if kind == "Localhost":
            if localhost is None or (isinstance(localhost, str) and not localhost.strip()):
                errs.required(f"{here}.localhostProfile", f"must be set when {what} type is Localhost")
            elif isinstance(localhost, str) and what == "AppArmor" and localhost != localhost.strip():
                errs.invalid(f"{here}.localhostProfile", localhost, "must not be padded with whitespace")
            elif isinstance(localhost, str) and what == "seccomp" and (localhost.startswith("/") or ".." in localhost.split("/")):
                errs.invalid(f"{here}.localhostProfile", localhost,
                             "must be a relative path" if localhost.startswith("/") else "must not contain '..'")
        elif kind in _PROFILE_TYPES and localhost is not None:
            errs.invalid(f"{here}.localhostProfile", localhost, f"can only be set when {what} type is Localhost")


def _container(errs: _Errors, c: Any, path: str, volumes: set[str], seen: set[str], init: bool,
               grace: Any = None) -> None:
    """``grace``: the pod's terminationGracePeriodSeconds, which bounds a sleep hook (LH4)."""
    c = _d(c)
    _security_profiles(errs, _d(c.get("securityContext")), f"{path}.securityContext")
    name = c.get("name")
    if not name:
        errs.required(f"{path}.name")
    else:
        errs.names(f"{path}.name", name, is_dns1123_label)
        if name in seen:
            errs.duplicate(f"{path}.name", name)
        seen.add(name)
    if not c.get("image"):
        errs.required(f"{path}.image")
    port_names: set[str] = set()
    for i, port in enumerate(_l(c.get("ports"))):
        port = _d(port)
        p = f"{path}.ports[{i}]"
        if port.get("containerPort") is None:
            errs.required(f"{p}.containerPort")
        errs.port(f"{p}.containerPort", port.get("containerPort"))
        if port.get("hostPort"):
            errs.port(f"{p}.hostPort", port.get("hostPort"))
        errs.enum(f"{p}.protocol", port.get("protocol"), PROTOCOLS)
        pname = port.get("name")
        if pname:
            errs.names(f"{p}.name", pname, is_port_name)
            if pname in port_names:
                errs.duplicate(f"{p}.name", pname)
            port_names.add(pname)
    _env(errs, c.get("env"), f"{path}.env")
    for i, src in enumerate(_l(c.get("envFrom"))):
        src = _d(src)
        refs = [r for r in ("configMapRef", "secretRef") if src.get(r) is not None]
        if len(refs) != 1:
            errs.invalid(f"{path}.envFrom[{i}]", "", "may not have more than one field specified at a time" if refs else "must specify one of: `configMapRef` or `secretRef`")
    mount_paths: set[str] = set()
    for i, mount in enumerate(_l(c.get("volumeMounts"))):
        mount = _d(mount)
        p = f"{path}.volumeMounts[{i}]"
        mname = mount.get("name")
        if not mname:
            errs.required(f"{p}.name")
        elif mname not in volumes:
            errs.not_found(f"{p}.name", mname)
        mpath = mount.get("mountPath")
        if not mpath:
            errs.required(f"{p}.mountPath")
        elif mpath in mount_paths:
            errs.invalid(f"{p}.mountPath", mpath, "must be unique")
        else:
            mount_paths.add(mpath)
        _relative_path(errs, f"{p}.subPath", mount.get("subPath"))
        if mount.get("subPath") and mount.get("subPathExpr"):
            errs.invalid(f"{p}.subPathExpr", mount.get("subPathExpr"), "subPathExpr and subPath are mutually exclusive")
        errs.enum(f"{p}.mountPropagation", mount.get("mountPropagation"), ("Bidirectional", "HostToContainer", "None"))
        if mount.get("mountPropagation") == "Bidirectional" and _d(c.get("securityContext")).get("privileged") is not True:
            # As Kubernetes: mounts a container makes would otherwise reach the host.
            errs.forbidden(f"{p}.mountPropagation", "Bidirectional mount propagation is available only to privileged containers")
    for i, dev in enumerate(_l(c.get("volumeDevices"))):
        dev = _d(dev)
        if dev.get("name") and dev.get("name") not in volumes:
            errs.not_found(f"{path}.volumeDevices[{i}].name", dev.get("name"))
        if not dev.get("devicePath"):
            errs.required(f"{path}.volumeDevices[{i}].devicePath")
    _resources(errs, c.get("resources"), f"{path}.resources")
    # SD1: a container's own restartPolicy is for init containers only, and only Always (a sidecar, which
    # runs beside the others and so may have probes and hooks); Kubernetes' words.
    if init:
        errs.enum(f"{path}.restartPolicy", c.get("restartPolicy"), ("Always",))
    elif c.get("restartPolicy") is not None:
        errs.forbidden(f"{path}.restartPolicy", "may not be set for non-init containers")
    regular_init = init and c.get("restartPolicy") != "Always"
    for probe, liveness_like in (("livenessProbe", True), ("readinessProbe", False), ("startupProbe", True)):
        if regular_init and c.get(probe) is not None:
            errs.forbidden(f"{path}.{probe}", "may not be set for init containers without restartPolicy=Always")
            continue
        _probe(errs, c.get(probe), f"{path}.{probe}", liveness_like)
    if regular_init and c.get("lifecycle") is not None:
        errs.forbidden(f"{path}.lifecycle", "may not be set for init containers without restartPolicy=Always")
    else:
        lifecycle = _d(c.get("lifecycle"))
        for hook in ("postStart", "preStop"):
            if lifecycle.get(hook) is not None:
                _lifecycle_handler(errs, _d(lifecycle[hook]), f"{path}.lifecycle.{hook}", grace)
    errs.enum(f"{path}.imagePullPolicy", c.get("imagePullPolicy"), PULL_POLICIES)
    errs.enum(f"{path}.terminationMessagePolicy", c.get("terminationMessagePolicy"), TERMINATION_MESSAGE_POLICIES)


# What an ephemeral container may not have (Kubernetes' validateEphemeralContainers): it runs once, for
# debugging, with no ports, probes, hooks or resources of its own.
_EPHEMERAL_FORBIDDEN = ("lifecycle", "livenessProbe", "ports", "readinessProbe", "resizePolicy", "resources",
                        "restartPolicy", "startupProbe")


def _ephemeral_container(errs: _Errors, c: dict[str, Any], path: str, volumes: set[str], seen: set[str],
                         targets: set[str]) -> None:
    _container(errs, {k: v for k, v in c.items() if k not in _EPHEMERAL_FORBIDDEN and k != "targetContainerName"},
               path, volumes, seen, init=False)
    for key in _EPHEMERAL_FORBIDDEN:
        if c.get(key) not in (None, [], {}):
            errs.forbidden(f"{path}.{key}", "cannot be set for an Ephemeral Container")
    target = c.get("targetContainerName")
    if target and target not in targets:
        errs.not_found(f"{path}.targetContainerName", target)
    for i, mount in enumerate(_l(c.get("volumeMounts"))):
        if _d(mount).get("subPath"):
            errs.forbidden(f"{path}.volumeMounts[{i}].subPath", "cannot be set for an Ephemeral Container")


def _pod_spec(errs: _Errors, spec: Any, path: str, restart_policies: tuple[str, ...] = RESTART_POLICIES,
              extra_volumes: frozenset[str] = frozenset()) -> None:
    spec = _d(spec)
    volumes = _pod_volumes(errs, spec.get("volumes"), f"{path}.volumes") | extra_volumes
    seen: set[str] = set()
    containers = _l(spec.get("containers"))
    if not containers:
        errs.required(f"{path}.containers")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    for i, c in enumerate(_l(spec.get("initContainers"))):
        _container(errs, c, f"{path}.initContainers[{i}]", volumes, seen, init=True, grace=grace)
    for i, c in enumerate(containers):
        _container(errs, c, f"{path}.containers[{i}]", volumes, seen, init=False, grace=grace)
    targets = {str(_d(c).get("name")) for c in _l(spec.get("initContainers")) + containers if _d(c).get("name")}
    for i, c in enumerate(_l(spec.get("ephemeralContainers"))):
        _ephemeral_container(errs, _d(c), f"{path}.ephemeralContainers[{i}]", volumes, seen, targets)
    errs.enum(f"{path}.restartPolicy", spec.get("restartPolicy"), restart_policies)
    errs.enum(f"{path}.dnsPolicy", spec.get("dnsPolicy"), DNS_POLICIES)
    errs.non_negative(f"{path}.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= 0:
        errs.invalid(f"{path}.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive")
    for key in ("hostname", "subdomain"):
        if spec.get(key):
            errs.names(f"{path}.{key}", spec.get(key), is_dns1123_label)
    if spec.get("nodeName"):
        errs.names(f"{path}.nodeName", spec.get("nodeName"), is_dns1123_subdomain)
    _labels(errs, f"{path}.nodeSelector", spec.get("nodeSelector"))
    gates: set[Any] = set()
    for i, gate in enumerate(_l(spec.get("schedulingGates"))):  # SG1
        name = _d(gate).get("name")
        errs.names(f"{path}.schedulingGates[{i}]", name or "", is_qualified_name)
        if name in gates:
            errs.duplicate(f"{path}.schedulingGates[{i}]", name)
        gates.add(name)
    security = _d(spec.get("securityContext"))
    if spec.get("shareProcessNamespace") is True and spec.get("hostPID") is True:
        # Kubernetes' internal API keeps the field in the pod's security context, and its path says so.
        errs.invalid(f"{path}.securityContext.shareProcessNamespace", True,
                     "ShareProcessNamespace and HostPID cannot both be enabled")
    errs.non_negative(f"{path}.securityContext.fsGroup", security.get("fsGroup"))
    _security_profiles(errs, security, f"{path}.securityContext")
    errs.enum(f"{path}.securityContext.fsGroupChangePolicy", security.get("fsGroupChangePolicy"), ("Always", "OnRootMismatch"))
    _tolerations(errs, spec.get("tolerations"), f"{path}.tolerations")
    affinity = _d(spec.get("affinity"))
    node_aff = _d(affinity.get("nodeAffinity"))
    required = node_aff.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        _node_selector(errs, f"{path}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution", required)
    for kind in ("podAffinity", "podAntiAffinity"):
        block = _d(affinity.get(kind))
        for i, term in enumerate(_l(block.get("requiredDuringSchedulingIgnoredDuringExecution"))):
            p = f"{path}.affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"
            _affinity_term(errs, _d(term), p)
        for i, wterm in enumerate(_l(block.get("preferredDuringSchedulingIgnoredDuringExecution"))):
            p = f"{path}.affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
            weight = _d(wterm).get("weight")
            if isinstance(weight, int) and not 1 <= weight <= 100:
                errs.invalid(f"{p}.weight", weight, "must be in the range 1-100")
            _affinity_term(errs, _d(_d(wterm).get("podAffinityTerm")), f"{p}.podAffinityTerm")


def _tolerations(errs: _Errors, tolerations: Any, path: str) -> None:
    for i, tol in enumerate(_l(tolerations)):
        tol = _d(tol)
        p = f"{path}[{i}]"
        errs.enum(f"{p}.operator", tol.get("operator"), TOLERATION_OPERATORS)
        if tol.get("operator") == "Exists" and tol.get("value"):
            errs.invalid(f"{p}.operator", tol.get("value"), "value must be empty when `operator` is 'Exists'")
        if not tol.get("key") and tol.get("operator") != "Exists":
            errs.invalid(f"{p}.operator", tol.get("operator") or "",
                         'operator must be Exists when `key` is empty, which means "match all values and all keys"')
        if tol.get("tolerationSeconds") is not None and tol.get("effect") != "NoExecute":
            errs.invalid(f"{p}.effect", tol.get("effect") or "", "effect must be 'NoExecute' when `tolerationSeconds` is set")
        if tol.get("effect"):
            errs.enum(f"{p}.effect", tol.get("effect"), TAINT_EFFECTS)
        if tol.get("key"):
            errs.names(f"{p}.key", tol.get("key"), is_qualified_name)


def _affinity_term(errs: _Errors, term: dict[str, Any], path: str) -> None:
    if not term.get("topologyKey"):
        errs.required(f"{path}.topologyKey", "can not be empty")
    else:
        errs.names(f"{path}.topologyKey", term.get("topologyKey"), is_qualified_name)
    if term.get("labelSelector") is not None:
        _label_selector(errs, f"{path}.labelSelector", term.get("labelSelector"))


def _pod_template(errs: _Errors, template: Any, path: str, selector_check: Callable[[dict[str, Any]], bool] | None,
                  restart_policies: tuple[str, ...], extra_volumes: frozenset[str] = frozenset()) -> None:
    if template is None:
        errs.required(path)
        return
    _pod_template_spec(errs, template, path, selector_check, restart_policies, extra_volumes)
    if _d(_d(template).get("spec")).get("activeDeadlineSeconds") is not None:
        errs.forbidden(f"{path}.spec.activeDeadlineSeconds", "activeDeadlineSeconds in ReplicaSet is not Supported")


def _pod_template_spec(errs: _Errors, template: Any, path: str,
                       selector_check: Callable[[dict[str, Any]], bool] | None, restart_policies: tuple[str, ...],
                       extra_volumes: frozenset[str] = frozenset()) -> None:
    """Kubernetes' ValidatePodTemplateSpec: labels, annotations, the pod spec, no ephemeral containers."""
    template = _d(template)
    meta = _d(template.get("metadata"))
    _labels(errs, f"{path}.metadata.labels", meta.get("labels"))
    _annotations(errs, f"{path}.metadata.annotations", meta.get("annotations"))
    labels = _d(meta.get("labels"))
    if selector_check is not None and not selector_check(labels):
        errs.invalid(f"{path}.metadata.labels", labels, "`selector` does not match template `labels`")
    _pod_spec(errs, template.get("spec"), f"{path}.spec", restart_policies, extra_volumes)
    if _l(_d(template.get("spec")).get("ephemeralContainers")):
        errs.forbidden(f"{path}.spec.ephemeralContainers", "ephemeral containers not allowed in pod template")


# --- persistent volumes and claims --------------------------------------------------------------------


def _access_modes(errs: _Errors, modes: Any, path: str, detail: str = "") -> None:
    modes = _l(modes)
    if not modes:
        errs.required(path, detail)
        return
    for mode in modes:
        if mode not in ACCESS_MODES:
            errs.unsupported(path, mode, ACCESS_MODES)
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        errs.forbidden(path, "may not use ReadWriteOncePod with other access modes")


def _pv(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    _access_modes(errs, spec.get("accessModes"), "spec.accessModes")
    capacity = _d(spec.get("capacity"))
    if not capacity:
        errs.required("spec.capacity")
    elif "storage" not in capacity or len(capacity) > 1:
        errs.unsupported("spec.capacity", capacity, ("storage",))
    for name, value in capacity.items():
        q = _quantity(value)
        if q is not None and q <= 0:
            errs.invalid(f"spec.capacity.{name}", value, "must be greater than zero")
    source = _volume_source(errs, spec, PV_VOLUME_SOURCES, "spec", "spec.")
    errs.enum("spec.persistentVolumeReclaimPolicy", spec.get("persistentVolumeReclaimPolicy"), PV_RECLAIM_POLICIES)
    if spec.get("persistentVolumeReclaimPolicy") == "Recycle" and source not in (None, "hostPath", "nfs"):
        errs.unsupported("spec.persistentVolumeReclaimPolicy", "Recycle", ("Delete", "Retain"))
    if spec.get("storageClassName"):
        errs.names("spec.storageClassName", spec.get("storageClassName"), is_dns1123_subdomain)
    errs.enum("spec.volumeMode", spec.get("volumeMode"), VOLUME_MODES)
    vac = spec.get("volumeAttributesClassName")
    if vac is not None:  # VAC2: a CSI volume's only
        if vac == "":
            errs.required("spec.volumeAttributesClassName", "an empty string is disallowed")
        else:
            errs.names("spec.volumeAttributesClassName", vac, is_dns1123_subdomain)
        if spec.get("csi") is None:
            errs.required("spec.csi", "has to be specified when using volumeAttributesClassName")
    affinity = spec.get("nodeAffinity")
    if affinity is not None:
        required = _d(affinity).get("required")
        if required is None:
            errs.required("spec.nodeAffinity.required", "must specify required node constraints")
        else:
            _node_selector(errs, "spec.nodeAffinity.required", required)
    elif source == "local":
        errs.required("spec.nodeAffinity", "Local volume requires node affinity")


def _pv_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    ns, os_ = _d(new.get("spec")), _d(old.get("spec"))
    if {k: ns.get(k) for k in PV_VOLUME_SOURCES} != {k: os_.get(k) for k in PV_VOLUME_SOURCES}:
        errs.forbidden("spec.persistentvolumesource", "spec.persistentvolumesource is immutable after creation")
    errs.immutable("spec.volumeMode", ns.get("volumeMode"), os_.get("volumeMode"))
    if os_.get("nodeAffinity") is not None:
        errs.immutable("spec.nodeAffinity", ns.get("nodeAffinity"), os_.get("nodeAffinity"))
    if os_.get("volumeAttributesClassName") is not None and ns.get("volumeAttributesClassName") is None:
        errs.forbidden("spec.volumeAttributesClassName", "update from non-nil value to nil is forbidden")


def _pvc_spec(errs: _Errors, spec: Any, path: str) -> None:
    spec = _d(spec)
    _access_modes(errs, spec.get("accessModes"), f"{path}.accessModes", "at least 1 access mode is required")
    if spec.get("selector") is not None:
        _label_selector(errs, f"{path}.selector", spec.get("selector"))
    requests = _d(_d(spec.get("resources")).get("requests"))
    storage_path = f"{path}.resources.requests.storage"
    if "storage" not in requests:
        errs.required(storage_path)
    else:
        q = _quantity(requests["storage"])
        if q is not None and q <= 0:  # Q3
            errs.invalid(storage_path, requests["storage"], "must be greater than zero")
    if spec.get("storageClassName"):
        errs.names(f"{path}.storageClassName", spec.get("storageClassName"), is_dns1123_subdomain)
    errs.enum(f"{path}.volumeMode", spec.get("volumeMode"), VOLUME_MODES)
    if spec.get("volumeName"):
        errs.names(f"{path}.volumeName", spec.get("volumeName"), is_dns1123_subdomain)
    if spec.get("volumeAttributesClassName"):
        errs.names(f"{path}.volumeAttributesClassName", spec.get("volumeAttributesClassName"), is_dns1123_subdomain)
    _data_sources(errs, spec, path)


# Kinds of the core group a claim may name as its data source; other groups' kinds (a VolumeSnapshot, a
# populator's kind) are the populators' business (Kubernetes' supportedDataSourceAPIGroupKinds).
DATA_SOURCE_CORE_KINDS = ("PersistentVolumeClaim",)


def _data_source(errs: _Errors, ref: dict[str, Any], path: str) -> None:
    """Kubernetes' validateDataSource / validateDataSourceRef."""
    if not ref.get("name"):
        errs.required(f"{path}.name")
    if not ref.get("kind"):
        errs.required(f"{path}.kind")
    group = ref.get("apiGroup") or ""
    if not group:
        if ref.get("kind") not in DATA_SOURCE_CORE_KINDS:
            errs.unsupported(path, ref.get("kind") or "", DATA_SOURCE_CORE_KINDS)
    else:
        errs.names(f"{path}.apiGroup", group, is_dns1123_subdomain)
    namespace = ref.get("namespace")
    if namespace:
        errs.names(f"{path}.namespace", namespace, is_dns1123_label)


def _data_sources(errs: _Errors, spec: dict[str, Any], path: str) -> None:
    """DS1-DS3: each reference well formed; both given: equal, unless dataSourceRef names another namespace,
    where dataSource must be absent (ValidatePersistentVolumeClaimSpec)."""
    source, ref = spec.get("dataSource"), spec.get("dataSourceRef")
    if source is not None:
        _data_source(errs, _d(source), f"{path}.dataSource")
    if ref is not None:
        _data_source(errs, _d(ref), f"{path}.dataSourceRef")
    if ref is not None and _d(ref).get("namespace"):
        if source is not None:
            errs.invalid(path, f"{path}.dataSource", "may not be specified when dataSourceRef.namespace is specified")
    elif source is not None and ref is not None:
        s, r = _d(source), _d(ref)
        if (s.get("apiGroup"), s.get("kind"), s.get("name")) != (r.get("apiGroup"), r.get("kind"), r.get("name")):
            errs.invalid(path, f"{path}.dataSource", "must match dataSourceRef")


def _pvc(errs: _Errors, obj: dict[str, Any]) -> None:
    _pvc_spec(errs, obj.get("spec"), "spec")


def _pvc_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    ns, os_ = _d(new.get("spec")), _d(old.get("spec"))
    bound = _d(old.get("status")).get("phase") == "Bound" or _d(new.get("status")).get("phase") == "Bound"
    new_cmp, old_cmp = dict(ns), dict(os_)
    # DS4: a claim stored before dataSource and dataSourceRef were mirrored compares as if it had been.
    normalize_data_sources(old_cmp)
    # The binder fills volumeName once; P3 may give a class to a claim that had none.
    if not os_.get("volumeName"):
        new_cmp.pop("volumeName", None)
    if os_.get("storageClassName") is None:
        new_cmp.pop("storageClassName", None)
        old_cmp.pop("storageClassName", None)
    if bound:  # P4: a bound claim may change its requests (growth is checked below) and its VAC (VAC4)
        for spec in (new_cmp, old_cmp):
            resources = dict(_d(spec.get("resources")))
            resources.pop("requests", None)
            spec["resources"] = resources
            spec.pop("volumeAttributesClassName", None)
    if new_cmp != old_cmp:
        errs.forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims")
    new_size = _quantity(_d(_d(ns.get("resources")).get("requests")).get("storage"))
    old_size = _quantity(_d(_d(os_.get("resources")).get("requests")).get("storage"))
    if new_size is not None and old_size is not None and new_size < old_size:
        errs.forbidden("spec.resources.requests.storage", "field can not be less than previous value")
    errs.immutable("spec.volumeMode", ns.get("volumeMode"), os_.get("volumeMode"))
    # VAC4: once a class is applied the claim keeps one; it may change, not go.
    if (ns.get("volumeAttributesClassName") != os_.get("volumeAttributesClassName")
            and isinstance(_d(old.get("status")).get("currentVolumeAttributesClassName"), str)):
        if ns.get("volumeAttributesClassName") is None:
            errs.forbidden("spec.volumeAttributesClassName",
                           "update to nil is forbidden when status.currentVolumeAttributesClassName is not nil")
        elif ns.get("volumeAttributesClassName") == "":
            errs.forbidden("spec.volumeAttributesClassName",
                           "update to empty string is forbidden when status.currentVolumeAttributesClassName is not nil")


# --- storage classes and attachments --------------------------------------------------------------


def _storage_class(errs: _Errors, obj: dict[str, Any]) -> None:
    _driver_name(errs, obj.get("provisioner"), "provisioner")
    params = _d(obj.get("parameters"))
    _class_parameters(errs, params, "parameters", allow_empty=True)
    _bench_parameters(errs, obj, params)
    errs.enum("reclaimPolicy", obj.get("reclaimPolicy"), SC_RECLAIM_POLICIES)
    errs.enum("volumeBindingMode", obj.get("volumeBindingMode"), BINDING_MODES)
    for i, term in enumerate(_l(obj.get("allowedTopologies"))):
        exprs = _l(_d(term).get("matchLabelExpressions"))
        if not exprs:
            errs.required(f"allowedTopologies[{i}].matchLabelExpressions", "must have at least one label expression")
        for j, expr in enumerate(exprs):
            p = f"allowedTopologies[{i}].matchLabelExpressions[{j}]"
            errs.names(f"{p}.key", _d(expr).get("key"), is_qualified_name)
            if not _l(_d(expr).get("values")):
                errs.required(f"{p}.values", "must specify as least one value")


def _driver_name(errs: _Errors, name: Any, path: str) -> None:
    """Kubernetes' validateProvisioner (a StorageClass's provisioner, a VolumeAttributesClass's driverName)."""
    if not name:
        errs.required(path)
    elif isinstance(name, str):
        if len(name) > 253:
            errs.too_long(path, 253)
        for msg in is_qualified_name(name.lower()):
            errs.invalid(path, name, msg)


# Kubernetes' maxProvisionerParameterLen and maxProvisionerParameterSize.
_MAX_CLASS_PARAMETERS = 512
_MAX_CLASS_PARAMETER_BYTES = 256 << 10


def _class_parameters(errs: _Errors, params: dict[str, Any], path: str, *, allow_empty: bool) -> None:
    """Kubernetes' validateParameters: at most 512 keys of at most 256 KiB together, none empty."""
    if len(params) > _MAX_CLASS_PARAMETERS:
        errs.too_long(path, _MAX_CLASS_PARAMETERS)
        return
    size = 0
    for key, value in params.items():
        if not key:
            errs.invalid(path, key, "field can not be empty.")
        size += len(str(key).encode()) + len(str(value).encode())
    if size > _MAX_CLASS_PARAMETER_BYTES:
        errs.too_long(path, _MAX_CLASS_PARAMETER_BYTES)
    if not allow_empty and not params:
        errs.required(path, "must contain at least one key/value pair")


def _volume_attributes_class(errs: _Errors, obj: dict[str, Any]) -> None:
    """VAC1: Kubernetes' ValidateVolumeAttributesClass."""
    _driver_name(errs, obj.get("driverName"), "driverName")
    _class_parameters(errs, _d(obj.get("parameters")), "parameters", allow_empty=False)


def _volume_attributes_class_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    if new.get("driverName") != old.get("driverName"):
        errs.forbidden("driverName", "updates to driverName are forbidden.")
    if (new.get("parameters") or {}) != (old.get("parameters") or {}):
        errs.forbidden("parameters", "updates to parameters are forbidden.")


def _bench_parameters(errs: _Errors, obj: dict[str, Any], params: dict[str, Any]) -> None:
    """BP5: performance-placement parameters are checked on create, naming the parameter; they act only when
    the scheduler picks the node before provisioning (WaitForFirstConsumer), so Immediate is refused."""
    try:
        requirements = parse_requirements(str(_d(obj.get("metadata")).get("name", "")), params)
    except BenchParameterError as exc:
        errs.invalid(f"parameters.{exc.parameter}", exc.value, exc.reason)
        return
    if requirements is not None and obj.get("volumeBindingMode", "Immediate") != "WaitForFirstConsumer":
        first = requirements.items[0].parameter
        errs.invalid(f"parameters.{first}", str(params[first]),
                     "performance placement needs volumeBindingMode: WaitForFirstConsumer (an Immediate claim is "
                     "provisioned before a pod picks its node)")


def _storage_class_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    if (new.get("parameters") or {}) != (old.get("parameters") or {}):
        errs.forbidden("parameters", "updates to parameters are forbidden.")
    if new.get("provisioner") != old.get("provisioner"):
        errs.forbidden("provisioner", "updates to provisioner are forbidden.")
    if new.get("reclaimPolicy") != old.get("reclaimPolicy"):
        errs.forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden.")
    errs.immutable("volumeBindingMode", new.get("volumeBindingMode"), old.get("volumeBindingMode"))


_FS_GROUP_POLICIES = ("ReadWriteOnceWithFSType", "File", "None")
_LIFECYCLE_MODES = ("Persistent", "Ephemeral")


def _csi_driver(errs: _Errors, obj: dict[str, Any]) -> None:
    """CS12: the spec fields Kubernetes validates (values of fsGroupPolicy and volumeLifecycleModes)."""
    spec = _d(obj.get("spec"))
    policy = spec.get("fsGroupPolicy")
    if policy is not None and policy not in _FS_GROUP_POLICIES:
        errs.unsupported("spec.fsGroupPolicy", policy, _FS_GROUP_POLICIES)
    for i, mode in enumerate(spec.get("volumeLifecycleModes") or []):
        if mode not in _LIFECYCLE_MODES:
            errs.unsupported(f"spec.volumeLifecycleModes[{i}]", mode, _LIFECYCLE_MODES)
    # CS21: Kubernetes' validateTokenRequests and validateServiceAccountTokenInSecrets.
    audiences: set[str] = set()
    requests = _l(spec.get("tokenRequests"))
    for i, request in enumerate(requests):
        request = _d(request)
        audience = str(request.get("audience") or "")
        if audience in audiences:
            errs.duplicate(f"spec.tokenRequests[{i}].audience", audience)
            continue
        audiences.add(audience)
        seconds = request.get("expirationSeconds")
        if isinstance(seconds, int) and seconds < 600:
            errs.invalid(f"spec.tokenRequests[{i}].expirationSeconds", seconds,
                         "may not specify a duration less than 10 minutes")
        elif isinstance(seconds, int) and seconds > 1 << 32:
            errs.invalid(f"spec.tokenRequests[{i}].expirationSeconds", seconds,
                         "may not specify a duration larger than 2^32 seconds")
    if spec.get("serviceAccountTokenInSecrets") is not None and not requests:
        errs.invalid("spec.serviceAccountTokenInSecrets", spec.get("serviceAccountTokenInSecrets"),
                     "serviceAccountTokenInSecrets is set but no tokenRequests are specified")


def _csi_node(errs: _Errors, obj: dict[str, Any]) -> None:
    seen: set[str] = set()
    for i, drv in enumerate(_d(obj.get("spec")).get("drivers") or []):
        drv = _d(drv)
        if not drv.get("name"):
            errs.required(f"spec.drivers[{i}].name")
        elif drv["name"] in seen:
            errs.duplicate(f"spec.drivers[{i}].name", drv["name"])
        seen.add(str(drv.get("name")))
        if not drv.get("nodeID"):
            errs.required(f"spec.drivers[{i}].nodeID")
        count = _d(drv.get("allocatable")).get("count")
        if count is not None and (not isinstance(count, int) or count < 0):
            errs.invalid(f"spec.drivers[{i}].allocatable.count", count, "must be greater than or equal to 0")


def _csi_storage_capacity(errs: _Errors, obj: dict[str, Any]) -> None:
    """SCAP1: Kubernetes' ValidateCSIStorageCapacity."""
    if obj.get("nodeTopology") is not None:
        _label_selector(errs, "nodeTopology", obj.get("nodeTopology"))
    name = obj.get("storageClassName")
    errs.names("storageClassName", name if isinstance(name, str) else "", is_dns1123_subdomain)
    capacity = _quantity(obj.get("capacity")) if obj.get("capacity") is not None else None
    if capacity is not None and capacity < 0:
        errs.invalid("capacity", obj.get("capacity"), "must be greater than or equal to 0")


def _csi_storage_capacity_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    # The inputs of GetCapacity are immutable; the figures are what changes.
    errs.immutable("nodeTopology", new.get("nodeTopology"), old.get("nodeTopology"))
    errs.immutable("storageClassName", new.get("storageClassName"), old.get("storageClassName"))


def _csi_driver_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    # attachRequired and volumeLifecycleModes are immutable (Kubernetes' ValidateCSIDriverUpdate; fsGroupPolicy
    # has been mutable since Kubernetes 1.29).
    old_spec, new_spec = _d(old.get("spec")), _d(new.get("spec"))
    for key in ("attachRequired", "volumeLifecycleModes"):
        # A driver stored before its defaults were filled in has none: it counts as the default.
        before, after = (side.get(key, CSI_DRIVER_DEFAULTS[key]) for side in (old_spec, new_spec))
        if before != after:
            errs.invalid(f"spec.{key}", new_spec.get(key), "field is immutable")


def _volume_attachment(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    if not spec.get("attacher"):
        errs.required("spec.attacher")
    else:
        errs.names("spec.attacher", spec.get("attacher"), lambda v: is_qualified_name(v.lower()))
    if not spec.get("nodeName"):
        errs.required("spec.nodeName")
    source = _d(spec.get("source"))
    has_pv, has_inline = source.get("persistentVolumeName") is not None, source.get("inlineVolumeSpec") is not None
    if has_pv == has_inline:
        errs.required("spec.source", "must specify exactly one of inlineVolumeSpec and persistentVolumeName")
    elif has_pv and not source.get("persistentVolumeName"):
        errs.required("spec.source.persistentVolumeName", "must specify non empty persistentVolumeName")


def _spec_immutable(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    if new.get("spec") != old.get("spec"):
        errs.invalid("spec", new.get("spec"), "field is immutable")


# --- snapshots (the external-snapshotter's CRDs) and ReferenceGrant -------------------------------
# These kinds are CustomResourceDefinitions in Kubernetes: their checks are the CRDs' OpenAPI schemas
# (required, enum, pattern) and x-kubernetes-validations (CEL) rules, with the API server's wording. A CEL
# rule that fails is reported as ``<path>: Invalid value: "<type>": <the rule's message>``.

SNAPSHOT_DELETION_POLICIES = ("Delete", "Retain")
SOURCE_VOLUME_MODES = VOLUME_MODES
# ReferenceGrant (gateway-api v1beta1): its field patterns and lengths.
_GATEWAY_GROUP = re.compile(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GATEWAY_KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_GATEWAY_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
REFERENCE_GRANT_MAX_ITEMS = 16


def _cel(errs: _Errors, path: str, type_name: str, message: str) -> None:
    """A failed x-kubernetes-validations rule, as the API server words it."""
    errs.invalid(path, type_name, message)


def _schema_string(errs: _Errors, path: str, value: Any, *, pattern: re.Pattern[str] | None = None,
                   min_length: int = 0, max_length: int | None = None) -> None:
    """An OpenAPI string's minLength, maxLength and pattern, in the API server's words."""
    if not isinstance(value, str):
        return
    if max_length is not None and len(value) > max_length:
        errs.items.append(FieldError(path, "Too long", f"may not be longer than {max_length}", value, True))
    if len(value) < min_length:
        errs.invalid(path, value, f"{path} in body should be at least {min_length} chars long")
    if pattern is not None and not pattern.match(value):
        errs.invalid(path, value, f"{path} in body should match '{pattern.pattern}'")


def _schema_items(errs: _Errors, path: str, items: Any, min_items: int, max_items: int) -> None:
    if not isinstance(items, list):
        return
    if len(items) < min_items:
        errs.invalid(path, len(items), f"{path} in body should have at least {min_items} items")
    errs.too_many(path, items, max_items)


def _exactly_one(errs: _Errors, path: str, holder: dict[str, Any], a: str, b: str, message: str) -> None:
    # CEL's has() is true for a field that is present, even with an empty string.
    if (a in holder) == (b in holder):
        _cel(errs, path, "object", message)


def _volume_snapshot(errs: _Errors, obj: dict[str, Any]) -> None:
    """VS1-VS3: spec and spec.source required; exactly one source; a class name, when set, is not empty."""
    if obj.get("spec") is None:
        errs.required("spec")
        return
    spec = _d(obj.get("spec"))
    if spec.get("source") is None:
        errs.required("spec.source")
    else:
        _exactly_one(errs, "spec.source", _d(spec.get("source")), "volumeSnapshotContentName",
                     "persistentVolumeClaimName",
                     "exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set")
    if spec.get("volumeSnapshotClassName") == "":
        _cel(errs, "spec.volumeSnapshotClassName", "string",
             "volumeSnapshotClassName must not be the empty string when set")


def _immutable_once_set(errs: _Errors, path: str, new: dict[str, Any], old: dict[str, Any], key: str,
                        immutable_message: str, holder_type: str = "object") -> None:
    """The CRDs' pair of rules for a field: ``self == oldSelf`` on it, ``!has(oldSelf.x) || has(self.x)`` above it."""
    if key in old and key not in new:
        _cel(errs, path, holder_type, f"{key} is required once set")
    elif key in old and new.get(key) != old.get(key):
        _cel(errs, f"{path}.{key}", "string", immutable_message)


def _volume_snapshot_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    """VS4: the source's names are immutable and cannot be removed."""
    ns, os_ = _d(_d(new.get("spec")).get("source")), _d(_d(old.get("spec")).get("source"))
    for key in ("persistentVolumeClaimName", "volumeSnapshotContentName"):
        _immutable_once_set(errs, "spec.source", ns, os_, key, f"{key} is immutable")


def _volume_snapshot_content(errs: _Errors, obj: dict[str, Any]) -> None:
    """VS5-VS7: deletionPolicy, driver, source, volumeSnapshotRef required; one handle; ref name+namespace."""
    if obj.get("spec") is None:
        errs.required("spec")
        return
    spec = _d(obj.get("spec"))
    for key in ("deletionPolicy", "driver", "source", "volumeSnapshotRef"):
        if spec.get(key) is None:
            errs.required(f"spec.{key}")
    errs.enum("spec.deletionPolicy", spec.get("deletionPolicy"), SNAPSHOT_DELETION_POLICIES)
    if spec.get("source") is not None:
        _exactly_one(errs, "spec.source", _d(spec.get("source")), "volumeHandle", "snapshotHandle",
                     "exactly one of volumeHandle and snapshotHandle must be set")
    ref = spec.get("volumeSnapshotRef")
    if ref is not None and not ("name" in _d(ref) and "namespace" in _d(ref)):
        _cel(errs, "spec.volumeSnapshotRef", "object",
             "both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set")


def _volume_snapshot_content_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    """VS8: the source handles and sourceVolumeMode are immutable and cannot be removed once set."""
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    ns, os_ = _d(nspec.get("source")), _d(ospec.get("source"))
    _immutable_once_set(errs, "spec.source", ns, os_, "volumeHandle", "Spec.Source.VolumeHandle is immutable")
    _immutable_once_set(errs, "spec.source", ns, os_, "snapshotHandle", "Spec.Source.SnapshotHandle is immutable")
    _immutable_once_set(errs, "spec", nspec, ospec, "sourceVolumeMode", "Spec.sourceVolumeMode is immutable")


def _volume_snapshot_class(errs: _Errors, obj: dict[str, Any]) -> None:
    """VS9: driver and deletionPolicy required; deletionPolicy Delete or Retain."""
    for key in ("deletionPolicy", "driver"):
        if obj.get(key) is None:
            errs.required(key)
    errs.enum("deletionPolicy", obj.get("deletionPolicy"), SNAPSHOT_DELETION_POLICIES)


def _reference_grant(errs: _Errors, obj: dict[str, Any]) -> None:
    """DS5: gateway-api's ReferenceGrant schema: from and to, 1 to 16 entries each, with its name patterns."""
    if obj.get("spec") is None:
        return  # the CRD does not require a spec; a grant without one allows nothing
    spec = _d(obj.get("spec"))
    for key in ("from", "to"):
        if spec.get(key) is None:
            errs.required(f"spec.{key}")
        _schema_items(errs, f"spec.{key}", spec.get(key), 1, REFERENCE_GRANT_MAX_ITEMS)
    for i, entry in enumerate(_l(spec.get("from"))):
        entry, p = _d(entry), f"spec.from[{i}]"
        for key in ("group", "kind", "namespace"):
            if entry.get(key) is None:
                errs.required(f"{p}.{key}")
        _schema_string(errs, f"{p}.group", entry.get("group"), pattern=_GATEWAY_GROUP, max_length=253)
        _schema_string(errs, f"{p}.kind", entry.get("kind"), pattern=_GATEWAY_KIND, min_length=1, max_length=63)
        _schema_string(errs, f"{p}.namespace", entry.get("namespace"), pattern=_GATEWAY_NAMESPACE, min_length=1,
                       max_length=63)
    for i, entry in enumerate(_l(spec.get("to"))):
        entry, p = _d(entry), f"spec.to[{i}]"
        for key in ("group", "kind"):
            if entry.get(key) is None:
                errs.required(f"{p}.{key}")
        _schema_string(errs, f"{p}.group", entry.get("group"), pattern=_GATEWAY_GROUP, max_length=253)
        _schema_string(errs, f"{p}.kind", entry.get("kind"), pattern=_GATEWAY_KIND, min_length=1, max_length=63)
        _schema_string(errs, f"{p}.name", entry.get("name"), min_length=1, max_length=253)


def _snapshot_status(errs: _Errors, info: ResourceInfo, status: dict[str, Any]) -> None:
    """VS10: the status schemas: a VolumeSnapshot's restoreSize is a quantity, a content's a byte count >= 0."""
    size = status.get("restoreSize")
    if info.kind == "VolumeSnapshot" and isinstance(size, str):
        try:
            parse_quantity(size)
        except (ValueError, ArithmeticError):
            errs.invalid("status.restoreSize", size, "status.restoreSize in body should match "
                         "'^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+"
                         "(\\.[0-9]*)?)|(\\.[0-9]+))))?$'")
    if info.kind == "VolumeSnapshotContent" and isinstance(size, int) and size < 0:
        errs.invalid("status.restoreSize", size, "status.restoreSize in body should be greater than or equal to 0")


# --- workloads -----------------------------------------------------------------------------------


# --- networking.k8s.io: Ingress, IngressClass (IN1–IN6) ----------------------------------------

_PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
_INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")
_HTTP_PATH_FMT = "[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+"
_HTTP_PATH = re.compile(_HTTP_PATH_FMT)
_INGRESS_CLASS_CONTROLLER_MAX = 250


_IP_EXAMPLE = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# --- networking.k8s.io: NetworkPolicy (NP1–NP3) -----------------------------------------------------------

_POLICY_TYPES = ("Ingress", "Egress")
_CIDR_EXAMPLE = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def _cidr(errs: _Errors, path: str, value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """apimachinery's parseCIDR with strict validation: leading zeros, IPv4-mapped addresses and host bits
    beyond the prefix are refused."""
    if not isinstance(value, str):
        return None
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        address, _, length = value.partition("/")
        loose = ".".join(str(int(o)) for o in address.split(".")) if _LEADING_ZERO_OCTET.search(address) and \
            all(o.isdigit() for o in address.split(".")) else None
        if loose is not None and length.isdigit():
            errs.invalid(path, value, "must not have leading 0s in IP or prefix length")
            return None
        errs.invalid(path, value, _CIDR_EXAMPLE)
        return None
    address, _, length = value.partition("/")
    if length != str(int(length)):
        errs.invalid(path, value, "must not have leading 0s in IP or prefix length")
    elif isinstance(network, ipaddress.IPv6Network) and ipaddress.ip_address(address).ipv4_mapped is not None:
        errs.invalid(path, value, "must not have an IPv4-mapped IPv6 address")
    elif ipaddress.ip_address(address) != network.network_address:
        errs.invalid(path, value, "must not have bits set beyond the prefix length")
    return network


def _network_policy_port(errs: _Errors, path: str, port: dict[str, Any]) -> None:
    """Kubernetes' ValidateNetworkPolicyPort: a number (with an endPort not below it) or a port name."""
    if port.get("protocol") is not None:
        errs.enum(f"{path}.protocol", port.get("protocol"), ("TCP", "UDP", "SCTP"))
    number, end = port.get("port"), port.get("endPort")
    if isinstance(number, int) and not isinstance(number, bool):
        errs.port(f"{path}.port", number)
        if isinstance(end, int):
            if end < number:
                errs.invalid(f"{path}.endPort", end, "must be greater than or equal to `port`")
            errs.port(f"{path}.endPort", end)
    elif isinstance(number, str):
        if end is not None:
            errs.invalid(f"{path}.endPort", end, "may not be specified when `port` is non-numeric")
        errs.names(f"{path}.port", number, is_port_name)
    elif end is not None:
        errs.invalid(f"{path}.endPort", end, "may not be specified when `port` is not specified")


def _network_policy_peer(errs: _Errors, path: str, peer: dict[str, Any]) -> None:
    """Kubernetes' ValidateNetworkPolicyPeer: a pod and/or namespace selector, or an IP block alone."""
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            _label_selector(errs, f"{path}.{key}", peer[key])
    peers = sum(peer.get(k) is not None for k in ("podSelector", "namespaceSelector", "ipBlock"))
    block = peer.get("ipBlock")
    if isinstance(block, dict):
        at = f"{path}.ipBlock"
        if not block.get("cidr"):
            errs.required(f"{at}.cidr")
        elif (network := _cidr(errs, f"{at}.cidr", block["cidr"])) is not None:
            for i, text in enumerate(_l(block.get("except"))):
                excluded = _cidr(errs, f"{at}.except[{i}]", text)
                if excluded is not None and (excluded.version != network.version or not excluded.subnet_of(network)  # type: ignore[arg-type]
                                             or excluded.prefixlen <= network.prefixlen):
                    errs.invalid(f"{at}.except[{i}]", text, "must be a strict subset of `cidr`")
    if peers == 0:
        errs.required(path, "must specify a peer")
    elif peers > 1 and block is not None:
        errs.forbidden(path, "may not specify both ipBlock and another peer")


def _network_policy(errs: _Errors, obj: dict[str, Any]) -> None:
    """Kubernetes' ValidateNetworkPolicySpec (NP1)."""
    spec = _d(obj.get("spec"))
    _label_selector(errs, "spec.podSelector", spec.get("podSelector"))
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(_l(spec.get(direction))):
            rule, at = _d(rule), f"spec.{direction}[{i}]"
            for j, port in enumerate(_l(rule.get("ports"))):
                _network_policy_port(errs, f"{at}.ports[{j}]", _d(port))
            for j, peer in enumerate(_l(rule.get(peers))):
                _network_policy_peer(errs, f"{at}.{peers}[{j}]", _d(peer))
    types = _l(spec.get("policyTypes"))
    if len(types) > 2:
        errs.invalid("spec.policyTypes", types, "may not specify more than two policyTypes")
        return
    for i, kind in enumerate(types):
        errs.enum(f"spec.policyTypes[{i}]", kind, _POLICY_TYPES)


# --- discovery.k8s.io: EndpointSlice (EPS1–EPS5) ----------------------------------------------------

_ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
_LEADING_ZERO_OCTET = re.compile(r"(^|\.)0[0-9]")


def _parsed_ip(errs: _Errors, path: str, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """apimachinery's parseIP with strict validation: a leading 0 in an IPv4 octet (which C libraries read
    as octal) and an IPv4-mapped IPv6 address are refused."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        if "." in value and ":" not in value and _LEADING_ZERO_OCTET.search(value):
            try:
                ipaddress.ip_address(".".join(str(int(octet)) for octet in value.split(".")))
            except ValueError:
                pass
            else:
                errs.invalid(path, value, "must not have leading 0s")
                return None
        errs.invalid(path, value, _IP_EXAMPLE)
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        errs.invalid(path, value, "must not be an IPv4-mapped IPv6 address")
        return None
    return ip


def _endpoint_ip(errs: _Errors, path: str, value: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    """Kubernetes' ValidateEndpointIP, but for loopback addresses: an endpoint is never an address no other
    host can reach, except that Stowage's pods on a single host have loopback ones (their Endpoints hold
    them too), so a slice of them is kept (EPS1)."""
    if ip.is_unspecified:
        errs.invalid(path, value, f"may not be unspecified ({value})")
    if ip.is_link_local:
        errs.invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    link_local_multicast = (ip in ipaddress.ip_network("224.0.0.0/24") if ip.version == 4
                            else ip.packed[0] == 0xFF and ip.packed[1] & 0x0F == 0x02)
    if link_local_multicast:
        errs.invalid(path, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")


def _fqdn(errs: _Errors, path: str, value: str) -> None:
    """apimachinery's IsFullyQualifiedDomainName: a subdomain of at least two labels (a final dot allowed)."""
    if not value:
        errs.required(path)
        return
    name = value[:-1] if value.endswith(".") else value
    if messages := is_dns1123_subdomain(name):
        errs.invalid(path, name, ",".join(messages))
    elif len(name.split(".")) < 2:
        errs.invalid(path, name, "should be a domain with at least two segments separated by dots")
    else:
        for label in name.split("."):
            if messages := is_dns1123_label(label):
                errs.invalid(path, label, ",".join(messages))
                return


def _endpoint_slice(errs: _Errors, obj: dict[str, Any]) -> None:
    """Kubernetes' ValidateEndpointSlice: a known address type, at most 1000 endpoints of 1–100 addresses of
    that type, port names unique DNS labels with a protocol, hints and node names that are names."""
    address_type = obj.get("addressType")
    if not address_type:
        errs.required("addressType")
    else:
        errs.enum("addressType", address_type, _ADDRESS_TYPES)
    ports = _l(obj.get("ports"))
    if not errs.too_many("ports", ports, 20000):
        seen: list[str] = []
        for i, port in enumerate(ports):
            port, path = _d(port), f"ports[{i}]"
            name = port.get("name") if isinstance(port.get("name"), str) else ""
            if name:
                errs.names(f"{path}.name", name, is_dns1123_label)
            if name in seen:
                errs.duplicate(f"{path}.name", name)
            else:
                seen.append(name)
            if port.get("protocol") is None:
                errs.required(f"{path}.protocol")
            else:
                errs.enum(f"{path}.protocol", port.get("protocol"), PROTOCOLS)
            if port.get("appProtocol") is not None:
                errs.names(f"{path}.appProtocol", port.get("appProtocol"), is_qualified_name)
    endpoints = _l(obj.get("endpoints"))
    if errs.too_many("endpoints", endpoints, 1000):
        return
    for i, endpoint in enumerate(endpoints):
        endpoint, path = _d(endpoint), f"endpoints[{i}]"
        addresses = _l(endpoint.get("addresses"))
        if not addresses:
            errs.required(f"{path}.addresses", "must contain at least 1 address")
        else:
            errs.too_many(f"{path}.addresses", addresses, 100)
        for j, address in enumerate(addresses):
            if not isinstance(address, str):
                continue
            at = f"{path}.addresses[{j}]"
            if address_type == "FQDN":
                _fqdn(errs, at, address)
            elif address_type in ("IPv4", "IPv6"):
                ip = _parsed_ip(errs, at, address)
                if ip is None:
                    continue
                if address_type == "IPv6" and str(ip) != address:
                    errs.invalid(at, address, f'must be in canonical form ("{ip}")')
                if ip.version != (4 if address_type == "IPv4" else 6):
                    errs.invalid(f"{path}.addresses", address, f"must be an {address_type} address")
                _endpoint_ip(errs, at, address, ip)
        if isinstance(endpoint.get("nodeName"), str):
            errs.names(f"{path}.nodeName", endpoint["nodeName"], is_dns1123_subdomain)
        topology = _d(endpoint.get("deprecatedTopology"))
        errs.too_many(f"{path}.deprecatedTopology", list(topology), 16)
        _labels(errs, f"{path}.deprecatedTopology", topology)
        if isinstance(endpoint.get("hostname"), str):
            errs.names(f"{path}.hostname", endpoint["hostname"], is_dns1123_label)
        hints = _d(endpoint.get("hints"))
        for key, check in (("forZones", is_valid_label_value), ("forNodes", is_dns1123_subdomain)):
            entries = _l(hints.get(key))
            if errs.too_many(f"{path}.hints.{key}", entries, 8):
                break
            names: list[str] = []
            for k, entry in enumerate(entries):
                name, at = _d(entry).get("name"), f"{path}.hints.{key}[{k}].name"
                if name in names:
                    errs.duplicate(at, name)
                elif isinstance(name, str):
                    names.append(name)
                if isinstance(name, str):
                    errs.names(at, name, check)


def _endpoint_slice_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    errs.immutable("addressType", new.get("addressType"), old.get("addressType"))


# --- scheduling.k8s.io: PriorityClass (PC1) ------------------------------------------------------------

def _priority_class(errs: _Errors, obj: dict[str, Any]) -> None:
    """Kubernetes' ValidatePriorityClass: ``system-`` names are the system classes' own, a user's class at
    most 1000000000, a known preemption policy."""
    name = str(_d(obj.get("metadata")).get("name") or "")
    value = obj.get("value") if isinstance(obj.get("value"), int) else 0
    if name.startswith(SYSTEM_PREFIX):
        if (why := system_class_error(name, value, obj.get("globalDefault"))) is not None:
            errs.forbidden("metadata.name", "priority class names with 'system-' prefix are reserved for system "
                                            f"use only. error: {why}")
    elif value > HIGHEST_USER_DEFINABLE_PRIORITY:
        errs.forbidden("value", f"maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}")
    policy = obj.get("preemptionPolicy")
    if policy == "":
        errs.required("preemptionPolicy")
    elif policy is not None:
        errs.enum("preemptionPolicy", policy, PREEMPTION_POLICIES)


def _priority_class_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    if new.get("value") != old.get("value"):
        errs.forbidden("value", "may not be changed in an update.")
    errs.immutable("preemptionPolicy", new.get("preemptionPolicy"), old.get("preemptionPolicy"))


def _ingress(errs: _Errors, obj: dict[str, Any]) -> None:
    """Kubernetes' ValidateIngressSpec (IN2): a default backend or rules, each path typed and each backend a
    Service port or a resource, hosts DNS names (a leading ``*.`` allowed), TLS secrets' names."""
    spec = _d(obj.get("spec"))
    rules = _l(spec.get("rules"))
    if not rules and spec.get("defaultBackend") is None:
        errs.invalid("spec", None, "either `defaultBackend` or `rules` must be specified")
    if spec.get("defaultBackend") is not None:
        _ingress_backend(errs, _d(spec["defaultBackend"]), "spec.defaultBackend")
    for i, rule in enumerate(rules):
        rule, path = _d(rule), f"spec.rules[{i}]"
        host = rule.get("host")
        if isinstance(host, str) and host:
            if _is_ip(host):
                errs.invalid(f"{path}.host", host, "must be a DNS name, not an IP address")
            errs.names(f"{path}.host", host, is_wildcard_dns1123_subdomain if "*" in host else is_dns1123_subdomain)
        http = rule.get("http")
        if http is None:
            continue
        paths = _l(_d(http).get("paths"))
        if not paths:
            errs.required(f"{path}.http.paths")
        for j, item in enumerate(paths):
            _ingress_path(errs, _d(item), f"{path}.http.paths[{j}]")
    for i, tls in enumerate(_l(spec.get("tls"))):
        tls = _d(tls)
        for j, host in enumerate(_l(tls.get("hosts"))):
            if isinstance(host, str):
                errs.names(f"spec.tls[{i}].hosts[{j}]", host,
                           is_wildcard_dns1123_subdomain if "*" in host else is_dns1123_subdomain)
        if tls.get("secretName"):
            errs.names(f"spec.tls[{i}].secretName", tls["secretName"], is_dns1123_subdomain)
    if spec.get("ingressClassName") is not None:
        errs.names("spec.ingressClassName", spec["ingressClassName"], is_dns1123_subdomain)


def _ingress_create(errs: _Errors, obj: dict[str, Any]) -> None:
    """IN3: on create, the class annotation of old and ``ingressClassName`` may not disagree."""
    annotation = _d(_d(obj.get("metadata")).get("annotations")).get(INGRESS_CLASS_ANNOTATION)
    name = _d(obj.get("spec")).get("ingressClassName")
    if annotation is not None and name is not None and annotation != name:
        errs.invalid(f"annotations.{INGRESS_CLASS_ANNOTATION}", annotation,
                     "must match `ingressClassName` when both are specified")


def _ingress_path(errs: _Errors, item: dict[str, Any], path: str) -> None:
    kind, value = item.get("pathType"), item.get("path")
    text = value if isinstance(value, str) else ""
    if kind is None:
        errs.required(f"{path}.pathType", "pathType must be specified")
        return
    if kind in ("Exact", "Prefix"):
        if not text.startswith("/"):
            errs.invalid(f"{path}.path", text, "must be an absolute path")
        for sequence in _INVALID_PATH_SEQUENCES:
            if sequence in text:
                errs.invalid(f"{path}.path", text, f"must not contain '{sequence}'")
        for suffix in _INVALID_PATH_SUFFIXES:
            if text.endswith(suffix):
                errs.invalid(f"{path}.path", text, f"cannot end with '{suffix}'")
    elif kind == "ImplementationSpecific":
        if text and not text.startswith("/"):
            errs.invalid(f"{path}.path", text, "must be an absolute path")
    else:
        errs.unsupported(f"{path}.pathType", kind, _PATH_TYPES)
    _ingress_backend(errs, _d(item.get("backend")), f"{path}.backend")


def _ingress_backend(errs: _Errors, backend: dict[str, Any], path: str) -> None:
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        errs.invalid(path, "", "cannot set both resource and service backends")
    elif resource is not None:
        _typed_local_reference(errs, _d(resource), f"{path}.resource")
    elif service is not None:
        service = _d(service)
        if not service.get("name"):
            errs.required(f"{path}.service.name")
        else:
            errs.names(f"{path}.service.name", service["name"], is_dns1123_label)
        port = _d(service.get("port"))
        name, number = port.get("name") or "", port.get("number") or 0
        if name and number:
            errs.invalid(path, "", "cannot set both port name & port number")
        elif name:
            errs.names(f"{path}.service.port.name", name, is_port_name)
        elif number:
            errs.port(f"{path}.service.port.number", number)
        else:
            errs.required(path, "port name or number is required")
    else:
        errs.invalid(path, "", "resource or service backend is required")


def _ingress_status(errs: _Errors, status: dict[str, Any]) -> None:
    """IN5: what an ingress controller reports: each address an IP or a DNS name that is not an IP."""
    for i, entry in enumerate(_l(_d(status.get("loadBalancer")).get("ingress"))):
        entry, path = _d(entry), f"status.loadBalancer.ingress[{i}]"
        ip, hostname = entry.get("ip"), entry.get("hostname")
        if isinstance(ip, str) and ip and not _is_ip(ip):
            errs.invalid(f"{path}.ip", ip, _IP_EXAMPLE)
        if isinstance(hostname, str) and hostname:
            errs.names(f"{path}.hostname", hostname, is_dns1123_subdomain)
            if _is_ip(hostname):
                errs.invalid(f"{path}.hostname", hostname, "must be a DNS name, not an IP address")


def _typed_local_reference(errs: _Errors, ref: dict[str, Any], path: str) -> None:
    """An Ingress's resource backend or an IngressClass's parameters: an optional API group, a kind and a name."""
    if ref.get("apiGroup") is not None:
        errs.names(f"{path}.apiGroup", ref["apiGroup"], is_dns1123_subdomain)
    for key in ("kind", "name"):
        if not ref.get(key):
            errs.required(f"{path}.{key}")
        else:
            errs.names(f"{path}.{key}", ref[key], is_path_segment_name)


def _ingress_class(errs: _Errors, obj: dict[str, Any]) -> None:
    """Kubernetes' ValidateIngressClass (IN4): a domain-prefixed controller name and a parameters reference."""
    spec = _d(obj.get("spec"))
    controller = spec.get("controller")
    text = controller if isinstance(controller, str) else ""
    if len(text) > _INGRESS_CLASS_CONTROLLER_MAX:
        errs.too_long("spec.controller", _INGRESS_CLASS_CONTROLLER_MAX)
    host, _, rest = text.partition("/")
    if not text:
        errs.required("spec.controller")
    elif not host or not rest:
        errs.invalid("spec.controller", text, 'must be a domain-prefixed path (such as "acme.io/foo")')
    else:
        errs.names("spec.controller", host, is_dns1123_subdomain)
        if not _HTTP_PATH.fullmatch(rest):
            errs.invalid("spec.controller", rest, regex_error("Invalid path", _HTTP_PATH_FMT))
    if spec.get("parameters") is None:
        return
    params, path = _d(spec["parameters"]), "spec.parameters"
    _typed_local_reference(errs, params, path)
    scope = params.get("scope")
    if scope is None:
        errs.required(f"{path}.scope")
    elif scope not in ("Cluster", "Namespace"):
        errs.unsupported(f"{path}.scope", scope, ("Cluster", "Namespace"))
    elif scope == "Namespace" and params.get("namespace") is None:
        errs.required(f"{path}.namespace", "`parameters.scope` is set to 'Namespace'")
    elif scope == "Namespace":
        errs.names(f"{path}.namespace", params["namespace"], is_dns1123_label)
    elif params.get("namespace") is not None:
        errs.forbidden(f"{path}.namespace", "`parameters.scope` is set to 'Cluster'")


def _ingress_class_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    errs.immutable("spec.controller", _d(new.get("spec")).get("controller"), _d(old.get("spec")).get("controller"))


def _workload_selector(errs: _Errors, spec: dict[str, Any], what: str) -> Callable[[dict[str, Any]], bool] | None:
    selector = spec.get("selector")
    if selector is None:
        errs.required("spec.selector")
        return None
    before = len(errs.items)
    _label_selector(errs, "spec.selector", selector)
    sel = _d(selector)
    if not sel.get("matchLabels") and not sel.get("matchExpressions"):
        errs.invalid("spec.selector", selector, f"empty selector is invalid for {what}")
        return None
    # A selector of the wrong shape is reported by the schema check; matching the template
    # against it would only add a confusing second error (or fail outright on a non-dict).
    # The list's type is checked before its items are walked (matchExpressions: true is not iterable).
    expressions = sel.get("matchExpressions") or []
    well_formed = (isinstance(sel.get("matchLabels") or {}, dict) and isinstance(expressions, list)
                   and all(isinstance(e, dict) for e in expressions))
    if len(errs.items) > before or not well_formed:
        return None
    return lambda labels: _selector_matches(sel, labels)


def _statefulset(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    errs.non_negative("spec.replicas", spec.get("replicas"))
    errs.non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    errs.non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    policy = spec.get("podManagementPolicy")
    if policy is not None and policy not in ("OrderedReady", "Parallel"):
        errs.invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'")
    strategy = spec.get("updateStrategy")
    if strategy is not None:
        strategy = _d(strategy)
        stype = strategy.get("type")
        rolling = strategy.get("rollingUpdate")
        if not stype:
            errs.required("spec.updateStrategy")
        elif stype == "OnDelete":
            if rolling is not None:
                errs.invalid("spec.updateStrategy.rollingUpdate", rolling, "only allowed for updateStrategy 'RollingUpdate'")
        elif stype == "RollingUpdate":
            rolling = _d(rolling)
            errs.non_negative("spec.updateStrategy.rollingUpdate.partition", rolling.get("partition"))
            _max_unavailable(errs, rolling.get("maxUnavailable"), "spec.updateStrategy.rollingUpdate.maxUnavailable")
        else:
            errs.invalid("spec.updateStrategy", strategy, "must be 'RollingUpdate' or 'OnDelete'")
    retention = _d(spec.get("persistentVolumeClaimRetentionPolicy"))
    for key in ("whenDeleted", "whenScaled"):
        errs.enum(f"spec.persistentVolumeClaimRetentionPolicy.{key}", retention.get(key), RETENTION_POLICIES)
    errs.non_negative("spec.ordinals.start", _d(spec.get("ordinals")).get("start"))
    if spec.get("serviceName"):
        errs.names("spec.serviceName", spec.get("serviceName"), is_dns1123_label)
    for i, claim in enumerate(_l(spec.get("volumeClaimTemplates"))):
        claim = _d(claim)
        _object_meta(errs, claim.get("metadata"), None, f"spec.volumeClaimTemplates[{i}].metadata")
        _pvc_spec(errs, claim.get("spec"), f"spec.volumeClaimTemplates[{i}].spec")
    check = _workload_selector(errs, spec, "statefulset")
    # Members mount their claims by template name, so those count as volumes of the pod template.
    claim_names = frozenset(
        str(_d(_d(c).get("metadata")).get("name")) for c in _l(spec.get("volumeClaimTemplates"))
    )
    _pod_template(errs, spec.get("template"), "spec.template", check, ("Always",), claim_names)


def _max_unavailable(errs: _Errors, value: Any, path: str) -> None:
    if isinstance(value, int) and value < 1:
        errs.invalid(path, value, "must be greater than 0")
    elif isinstance(value, str) and not re.fullmatch(r"[0-9]+%", value):
        errs.invalid(path, value, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")


_STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds")


def _statefulset_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    ns = {k: v for k, v in _d(new.get("spec")).items() if k not in _STS_MUTABLE}
    os_ = {k: v for k, v in _d(old.get("spec")).items() if k not in _STS_MUTABLE}
    if ns != os_:  # S6
        errs.forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', "
            "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        )


def _daemonset(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    errs.non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    errs.non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    strategy = spec.get("updateStrategy")
    if strategy is not None:
        stype = _d(strategy).get("type")
        if not stype:
            errs.required("spec.updateStrategy.type")
        else:
            errs.enum("spec.updateStrategy.type", stype, ("OnDelete", "RollingUpdate"))
    check = _workload_selector(errs, spec, "daemonset")
    _pod_template(errs, spec.get("template"), "spec.template", check, ("Always",))


def _replicaset(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    errs.non_negative("spec.replicas", spec.get("replicas"))
    errs.non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    check = _workload_selector(errs, spec, "deployment")
    _pod_template(errs, spec.get("template"), "spec.template", check, ("Always",))


_JOB_RESTART_POLICIES = ("OnFailure", "Never")
_MAX_INDEXED_PARALLELISM = 100_000


def _job(errs: _Errors, obj: dict[str, Any]) -> None:
    """Kubernetes' ValidateJob (J1–J3); on create the generated selector is checked against the labels the
    store will give it (J2)."""
    meta, spec = _d(obj.get("metadata")), _d(obj.get("spec"))
    check: Callable[[dict[str, Any]], bool] | None = None
    if spec.get("manualSelector") is True:
        check = _workload_selector(errs, spec, "job")
    else:
        _job_generated_selector(errs, meta, spec)
    _job_spec(errs, spec, "spec", meta.get("name"), check)


def _job_spec(errs: _Errors, spec: dict[str, Any], path: str, name: Any,
              check: Callable[[dict[str, Any]], bool] | None) -> None:
    """What a Job's spec and a CronJob's job template share (J3, CJ3)."""
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished",
                "backoffLimitPerIndex", "maxFailedIndexes"):
        errs.non_negative(f"{path}.{key}", spec.get(key))
    if spec.get("maxFailedIndexes") is not None and spec.get("backoffLimitPerIndex") is None:
        errs.required(f"{path}.backoffLimitPerIndex", "when maxFailedIndexes is specified")
    mode = spec.get("completionMode")
    errs.enum(f"{path}.completionMode", mode, ("NonIndexed", "Indexed"))
    completions = spec.get("completions")
    if mode == "Indexed":
        if completions is None:
            errs.required(f"{path}.completions", "when completion mode is Indexed")
        parallelism = spec.get("parallelism")
        if isinstance(parallelism, int) and parallelism > _MAX_INDEXED_PARALLELISM:
            errs.invalid(f"{path}.parallelism", parallelism,
                         f"must be less than or equal to {_MAX_INDEXED_PARALLELISM} when completion mode is Indexed")
        if isinstance(name, str) and name and isinstance(completions, int) and completions > 0:
            hostname = f"{name}-{completions - 1}"
            if is_dns1123_label(hostname):
                errs.invalid("metadata.name", name, f"will not able to create pod with invalid DNS label: {hostname}")
    else:
        for key in ("backoffLimitPerIndex", "maxFailedIndexes"):
            if spec.get(key) is not None:
                errs.invalid(f"{path}.{key}", spec[key], "requires indexed completion mode")
        if spec.get("successPolicy") is not None:
            errs.invalid(f"{path}.successPolicy", spec["successPolicy"], "requires indexed completion mode")
    if spec.get("podFailurePolicy") is not None:
        _pod_failure_policy(errs, spec, f"{path}.podFailurePolicy")
    if spec.get("successPolicy") is not None and mode == "Indexed":
        _success_policy(errs, spec, f"{path}.successPolicy")
    errs.enum(f"{path}.podReplacementPolicy", spec.get("podReplacementPolicy"), ("TerminatingOrFailed", "Failed"))
    if spec.get("podFailurePolicy") is not None and spec.get("podReplacementPolicy") not in (None, "Failed"):
        errs.unsupported(f"{path}.podReplacementPolicy", spec["podReplacementPolicy"], ("Failed",))
    template = spec.get("template")
    _pod_template(errs, template, f"{path}.template", check, RESTART_POLICIES)
    policy = _d(_d(template).get("spec")).get("restartPolicy")
    if template is not None:
        if policy in (None, "", "Always"):
            errs.required(f"{path}.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"')
        elif policy in _JOB_RESTART_POLICIES and spec.get("podFailurePolicy") is not None and policy != "Never":
            errs.invalid(f"{path}.template.spec.restartPolicy", policy,
                         'only "Never" is supported when podFailurePolicy is specified')


def _pod_failure_policy(errs: _Errors, spec: dict[str, Any], path: str) -> None:
    """J13, Kubernetes' validatePodFailurePolicy."""
    rules = _l(_d(spec.get("podFailurePolicy")).get("rules"))
    errs.too_many(f"{path}.rules", rules, 20)
    pod_spec = _d(_d(spec.get("template")).get("spec"))
    names = {_d(c).get("name") for key in ("containers", "initContainers") for c in _l(pod_spec.get(key))}
    for i, rule in enumerate(rules):
        rule, rpath = _d(rule), f"{path}.rules[{i}]"
        action = rule.get("action")
        if not action:
            errs.required(f"{rpath}.action", f"valid values: {_go_list(batch.POD_FAILURE_ACTIONS)}")
        elif action == "FailIndex":
            if spec.get("backoffLimitPerIndex") is None:
                errs.invalid(f"{rpath}.action", action, "requires the backoffLimitPerIndex to be set")
        elif action not in batch.POD_FAILURE_ACTIONS:
            errs.unsupported(f"{rpath}.action", action, batch.POD_FAILURE_ACTIONS)
        exit_codes, conditions = rule.get("onExitCodes"), _l(rule.get("onPodConditions"))
        if exit_codes is not None:
            _on_exit_codes(errs, _d(exit_codes), f"{rpath}.onExitCodes", names)
        for j, pattern in enumerate(conditions[:20]):
            ppath, pattern = f"{rpath}.onPodConditions[{j}]", _d(pattern)
            errs.names(f"{ppath}.type", pattern.get("type"), is_qualified_name)
            status = pattern.get("status")
            if not status:
                errs.required(f"{ppath}.status", 'valid values: ["False" "True" "Unknown"]')
            else:
                errs.enum(f"{ppath}.status", status, ("False", "True", "Unknown"))
        errs.too_many(f"{rpath}.onPodConditions", conditions, 20)
        if exit_codes is not None and conditions:
            errs.items.append(FieldError(rpath, "Invalid value",
                                         "specifying both OnExitCodes and OnPodConditions is not supported"))
        if exit_codes is None and not conditions:
            errs.items.append(FieldError(rpath, "Invalid value",
                                         "specifying one of OnExitCodes and OnPodConditions is required"))


def _go_list(values: Iterable[str]) -> str:
    """A Go ``%q`` of a []string: ``["a" "b"]``."""
    return "[" + " ".join(f'"{v}"' for v in values) + "]"


def _on_exit_codes(errs: _Errors, requirement: dict[str, Any], path: str, names: set[Any]) -> None:
    operator = requirement.get("operator")
    if not operator:
        errs.required(f"{path}.operator", 'valid values: ["In" "NotIn"]')
    else:
        errs.enum(f"{path}.operator", operator, ("In", "NotIn"))
    name = requirement.get("containerName")
    if name is not None and name not in names:
        errs.invalid(f"{path}.containerName", name, "must be one of the container or initContainer names in the pod template")
    values = _l(requirement.get("values"))
    if not values:
        errs.invalid(f"{path}.values", values, "at least one value is required")
    else:
        errs.too_many(f"{path}.values", values, 255)
    seen: set[Any] = set()
    for j, value in enumerate(values):
        if operator == "In" and value == 0:
            errs.invalid(f"{path}.values[{j}]", value, "must not be 0 for the In operator")
        if value in seen:
            errs.duplicate(f"{path}.values[{j}]", value)
        seen.add(value)
    if any(isinstance(a, int) and isinstance(b, int) and a > b for a, b in zip(values, values[1:])):
        errs.invalid(f"{path}.values", values, "must be ordered")


def _success_policy(errs: _Errors, spec: dict[str, Any], path: str) -> None:
    """J14, Kubernetes' validateSuccessPolicy (Indexed jobs only)."""
    rules = _l(_d(spec.get("successPolicy")).get("rules"))
    completions = spec.get("completions") if isinstance(spec.get("completions"), int) else 0
    if not rules:
        errs.required(f"{path}.rules", "at least one rules must be specified when the successPolicy is specified")
    errs.too_many(f"{path}.rules", rules, 20)
    for i, rule in enumerate(rules):
        rule, rpath = _d(rule), f"{path}.rules[{i}]"
        indexes, count = rule.get("succeededIndexes"), rule.get("succeededCount")
        if indexes is None and count is None:
            errs.required(rpath, "at least one of succeededCount or succeededIndexes must be specified")
        total = 0
        if isinstance(indexes, str):
            problem = _indexes_problem(indexes, completions)
            if problem:
                errs.invalid(f"{rpath}.succeededIndexes", indexes, f"error parsing succeededIndexes: {problem}")
            else:
                total = len(batch.parse_indexes(indexes))
        if isinstance(count, int):
            errs.non_negative(f"{rpath}.succeededCount", count)
            if count > completions:
                errs.invalid(f"{rpath}.succeededCount", count,
                             f"must be less than or equal to {completions} (the number of specified completions)")
            if indexes is not None and count > total:
                errs.invalid(f"{rpath}.succeededCount", count, f"must be less than or equal to {total} (the number "
                             "of indexes in the specified succeededIndexes field)")


def _indexes_problem(text: str, completions: int) -> str | None:
    """What is wrong with an interval list such as ``0,2-4`` (Kubernetes' validateIndexesFormat), or None."""
    last = -1
    for part in text.split(","):
        low, dash, high = part.partition("-")
        try:
            start, end = int(low), int(high) if dash else int(low)
        except ValueError:
            return f"cannot convert string to integer for index: {part!r}"
        if start < 0 or end >= completions:
            return f"too large index: {end if end >= completions else start}"
        if start > end:
            return f"non-increasing order, previous: {start}, current: {end}"
        if start <= last:
            return f"overlapping or non-increasing order, previous: {last}, current: {start}"
        last = end
    return None


def _job_generated_selector(errs: _Errors, meta: dict[str, Any], spec: dict[str, Any]) -> None:
    """J2: without ``manualSelector`` the pods carry the job's name and uid, and the selector must select them."""
    name, uid = meta.get("name"), meta.get("uid")
    labels = _d(_d(_d(spec.get("template")).get("metadata")).get("labels"))
    lpath = "spec.template.metadata.labels"
    for key in (batch.LEGACY_JOB_NAME_LABEL, batch.JOB_NAME_LABEL):
        if key in labels and name and labels[key] != name:
            errs.invalid(f"{lpath}[{key}]", labels[key], f"must be '{name}'")
    for key in (batch.LEGACY_CONTROLLER_UID_LABEL, batch.CONTROLLER_UID_LABEL):
        if key in labels and labels[key] != uid:
            errs.invalid(f"{lpath}[{key}]", labels[key], f"must be '{uid}'" if uid else "must be the job's uid, "
                         "which the server assigns at creation: leave it out")
    selector = spec.get("selector")
    if selector is None:
        return
    before = len(errs.items)
    _label_selector(errs, "spec.selector", selector)
    if len(errs.items) > before:
        return
    # A stand-in uid on create: no selector written before the job existed can name its uid.
    own = uid or "00000000-0000-0000-0000-000000000000-unassigned"
    expected = {batch.LEGACY_CONTROLLER_UID_LABEL: own, batch.CONTROLLER_UID_LABEL: own,
                batch.LEGACY_JOB_NAME_LABEL: name or "", batch.JOB_NAME_LABEL: name or ""}
    try:
        matches = _selector_matches(_d(selector), expected)
    except (AttributeError, TypeError):
        return  # a selector of the wrong shape is the schema check's report
    if not matches:
        errs.invalid("spec.selector", selector, "`selector` not auto-generated")


def _job_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    """J3: what decides which pods a job runs cannot change, except a suspended job's scheduling directives."""
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    for key in ("selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex", "manualSelector"):
        errs.immutable(f"spec.{key}", nspec.get(key), ospec.get(key))
    elastic = (nspec.get("completionMode") == "Indexed" and nspec.get("completions") == nspec.get("parallelism")
               and ospec.get("completions") == ospec.get("parallelism"))
    if not elastic:
        errs.immutable("spec.completions", nspec.get("completions"), ospec.get("completions"))

    def fixed_part(template: Any) -> Any:
        template = copy.deepcopy(_d(template))
        if ospec.get("suspend") is True and not _d(old.get("status")).get("startTime"):
            for key in ("nodeSelector", "affinity", "tolerations", "schedulingGates"):
                _d(template.get("spec")).pop(key, None)
            for key in ("labels", "annotations"):
                _d(template.get("metadata")).pop(key, None)
        return template

    if fixed_part(nspec.get("template")) != fixed_part(ospec.get("template")):
        errs.invalid("spec.template", nspec.get("template"), "field is immutable")


def _cronjob(errs: _Errors, obj: dict[str, Any]) -> None:
    """Kubernetes' ValidateCronJob (CJ2, CJ3)."""
    meta, spec = _d(obj.get("metadata")), _d(obj.get("spec"))
    name = meta.get("name")
    if isinstance(name, str) and len(name) > 52:
        # The jobs it makes are named <name>-<minutes since the epoch>, 11 more characters, at most 63.
        errs.invalid("metadata.name", name, "must be no more than 52 characters")
    schedule = spec.get("schedule")
    if not schedule:
        errs.required("spec.schedule")
    elif isinstance(schedule, str):
        try:
            cron_expression(schedule, every=True)
        except ValueError as exc:
            errs.invalid("spec.schedule", schedule, str(exc))
        if "TZ" in schedule:
            errs.invalid("spec.schedule", schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    errs.non_negative("spec.startingDeadlineSeconds", spec.get("startingDeadlineSeconds"))
    time_zone = spec.get("timeZone")
    if isinstance(time_zone, str):
        if not time_zone:
            errs.invalid("spec.timeZone", time_zone, "timeZone must be nil or non-empty string")
        elif time_zone.lower() == "local":
            errs.invalid("spec.timeZone", time_zone,
                         "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones")
        else:
            try:
                zone(time_zone)
            except ValueError:
                errs.invalid("spec.timeZone", time_zone, f"unknown time zone {time_zone}")
    policy = spec.get("concurrencyPolicy")
    if policy in (None, ""):
        errs.required("spec.concurrencyPolicy")
    else:
        errs.enum("spec.concurrencyPolicy", policy, ("Allow", "Forbid", "Replace"))
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        errs.non_negative(f"spec.{key}", spec.get(key))
    template = spec.get("jobTemplate")
    if template is None:
        errs.required("spec.jobTemplate")
        return
    tmeta = _d(_d(template).get("metadata"))
    _labels(errs, "spec.jobTemplate.metadata.labels", tmeta.get("labels"))
    _annotations(errs, "spec.jobTemplate.metadata.annotations", tmeta.get("annotations"))
    job_spec = _d(_d(template).get("spec"))
    # CJ3: each job it makes gets a selector of its own uid (J2).
    if job_spec.get("selector") is not None:
        errs.invalid("spec.jobTemplate.spec.selector", job_spec["selector"], "`selector` will be auto-generated")
    if job_spec.get("manualSelector") is True:
        errs.unsupported("spec.jobTemplate.spec.manualSelector", True, ("nil", "false"))
    _job_spec(errs, job_spec, "spec.jobTemplate.spec", None, None)


def _int_or_percent(errs: _Errors, value: Any, path: str) -> None:
    if isinstance(value, bool) or (not isinstance(value, (int, str)) and value is not None):
        errs.invalid(path, value, "must be an integer or a percentage")
    elif isinstance(value, int) and value < 0:
        errs.invalid(path, value, "must be greater than or equal to 0")
    elif isinstance(value, str):
        if not re.fullmatch(r"[0-9]+%", value):
            errs.invalid(path, value, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
        elif int(value[:-1]) > 100:
            errs.invalid(path, value, "must not be greater than 100%")


def _is_zero(value: Any) -> bool:
    return value in (0, "0%") or value is None


def _deployment(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    errs.non_negative("spec.replicas", spec.get("replicas"))
    errs.non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    errs.non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    deadline = spec.get("progressDeadlineSeconds")
    errs.non_negative("spec.progressDeadlineSeconds", deadline)
    if isinstance(deadline, int) and isinstance(spec.get("minReadySeconds"), int) and deadline <= spec["minReadySeconds"]:
        errs.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")
    strategy = _d(spec.get("strategy"))
    stype = strategy.get("type")
    rolling = strategy.get("rollingUpdate")
    if stype == "Recreate":
        if rolling is not None:
            errs.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
    elif stype == "RollingUpdate":
        rolling = _d(rolling)
        surge, unavailable = rolling.get("maxSurge"), rolling.get("maxUnavailable")
        _int_or_percent(errs, surge, "spec.strategy.rollingUpdate.maxSurge")
        _int_or_percent(errs, unavailable, "spec.strategy.rollingUpdate.maxUnavailable")
        if _is_zero(surge) and _is_zero(unavailable):
            errs.invalid("spec.strategy.rollingUpdate.maxUnavailable", unavailable,
                         "may not be 0 when `maxSurge` is 0")
    elif stype is None:
        errs.required("spec.strategy.type")
    else:
        errs.unsupported("spec.strategy.type", stype, ("Recreate", "RollingUpdate"))
    check = _workload_selector(errs, spec, "deployment")
    _pod_template(errs, spec.get("template"), "spec.template", check, ("Always",))


def _lease(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, int) and duration <= 0:
        errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    errs.non_negative("spec.leaseTransitions", spec.get("leaseTransitions"))


def _pod_disruption_budget(errs: _Errors, obj: dict[str, Any]) -> None:
    """E16, Kubernetes' ValidatePodDisruptionBudgetSpec: at most one of minAvailable and maxUnavailable, each a
    non-negative integer or a percentage up to 100%."""
    spec = _d(obj.get("spec"))
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        errs.items.append(FieldError("spec", "Invalid value", "minAvailable and maxUnavailable cannot be both set"))
    for key in ("minAvailable", "maxUnavailable"):
        if spec.get(key) is not None:
            _int_or_percent(errs, spec[key], f"spec.{key}")
    _label_selector(errs, "spec.selector", spec.get("selector"))
    errs.enum("spec.unhealthyPodEvictionPolicy", spec.get("unhealthyPodEvictionPolicy"), UNHEALTHY_POD_EVICTION_POLICIES)


# --- autoscaling/v2 HorizontalPodAutoscaler (HPA2) ----------------------------------------------------

HPA_METRIC_SOURCE_TYPES = ("ContainerResource", "External", "Object", "Pods", "Resource")
HPA_METRIC_TARGET_TYPES = ("Utilization", "Value", "AverageValue")
HPA_SELECT_POLICIES = ("Disabled", "Max", "Min")
HPA_SCALING_POLICY_TYPES = ("Percent", "Pods")
_HPA_MAX_STABILIZATION_WINDOW_SECONDS = 3600
_HPA_MAX_PERIOD_SECONDS = 1800


def _int32(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cross_version_reference(errs: _Errors, ref: Any, path: str) -> None:
    """Kubernetes' ValidateCrossVersionObjectReference: kind and name required, each a valid path segment."""
    ref = _d(ref)
    for key in ("kind", "name"):
        if not ref.get(key):
            errs.required(f"{path}.{key}")
        else:
            errs.names(f"{path}.{key}", ref[key], is_path_segment_name)


def _metric_identifier(errs: _Errors, metric: Any, path: str) -> None:
    name = _d(metric).get("name")
    if not name:
        errs.required(f"{path}.name", "must specify a metric name")
    else:
        errs.names(f"{path}.name", name, is_path_segment_name)


def _metric_target(errs: _Errors, target: dict[str, Any], path: str) -> None:
    kind = target.get("type")
    if not kind:
        errs.required(f"{path}.type", "must specify a metric target type")
    if kind not in HPA_METRIC_TARGET_TYPES:
        errs.invalid(f"{path}.type", kind or "", "must be either Utilization, Value, or AverageValue")
    for key in ("value", "averageValue"):
        q = _quantity(target.get(key)) if target.get(key) is not None else None
        if q is not None and q <= 0:
            errs.invalid(f"{path}.{key}", target[key], "must be positive")
    utilization = _int32(target.get("averageUtilization"))
    if utilization is not None and utilization < 1:
        errs.invalid(f"{path}.averageUtilization", utilization, "must be greater than 0")


def _utilization_or_average(errs: _Errors, target: dict[str, Any], path: str) -> None:
    """A (container) resource metric's target: a utilization or an average value, not both."""
    if target.get("averageUtilization") is None and target.get("averageValue") is None:
        errs.required(f"{path}.averageUtilization", "must set either a target raw value or a target utilization")
    if target.get("averageUtilization") is not None and target.get("averageValue") is not None:
        errs.forbidden(f"{path}.averageValue", "may not set both a target raw value and a target utilization")


def _metric_source(errs: _Errors, member: str, source: dict[str, Any], path: str) -> None:
    target = _d(source.get("target"))
    if member in ("resource", "containerResource"):
        if not source.get("name"):
            errs.required(f"{path}.name", "must specify a resource name")
        if member == "containerResource":
            if not source.get("container"):
                errs.required(f"{path}.container", "must specify a container")
            else:
                errs.names(f"{path}.container", source["container"], is_dns1123_label)
        _metric_target(errs, target, f"{path}.target")
        _utilization_or_average(errs, target, f"{path}.target")
        return
    if member == "object":
        _cross_version_reference(errs, source.get("describedObject"), f"{path}.describedObject")
    _metric_identifier(errs, source.get("metric"), f"{path}.metric")
    _metric_target(errs, target, f"{path}.target")
    value, average = target.get("value"), target.get("averageValue")
    if member == "pods" and average is None:
        errs.required(f"{path}.target.averageValue", "must specify a positive target averageValue")
    elif member == "object" and value is None and average is None:
        errs.required(f"{path}.target.averageValue", "must set either a target value or averageValue")
    elif member == "external":
        if value is None and average is None:
            errs.required(f"{path}.target.averageValue",
                          "must set either a target value for metric or a per-pod target")
        if value is not None and average is not None:
            errs.forbidden(f"{path}.target.value", "may not set both a target value for metric and a per-pod target")


def _metric_spec(errs: _Errors, metric: Any, path: str) -> None:
    """Kubernetes' validateMetricSpec: a known type, its member set (only the first member present is checked
    further, as there) and no other member."""
    metric = _d(metric)
    kind = metric.get("type")
    if not kind:
        errs.required(f"{path}.type", "must specify a metric source type")
    if kind not in HPA_METRIC_SOURCE_TYPES:
        errs.unsupported(f"{path}.type", kind or "", HPA_METRIC_SOURCE_TYPES)
    present = [m for m in METRIC_SOURCE_MEMBERS.values() if metric.get(m) is not None]
    if present:
        _metric_source(errs, present[0], _d(metric[present[0]]), f"{path}.{present[0]}")
    expected = METRIC_SOURCE_MEMBERS.get(kind) if isinstance(kind, str) else None
    if expected is not None and expected not in present:
        errs.required(f"{path}.{expected}", "must populate information for the given metric source")
    if len(present) != 1:
        for member in sorted(m for m in present if m != expected):
            errs.forbidden(f"{path}.{member}", "must populate the given metric source only")


def _scaling_rules(errs: _Errors, rules: Any, path: str) -> None:
    """Kubernetes' validateScalingRules and validateScalingPolicy."""
    if rules is None:
        return
    rules = _d(rules)
    window = _int32(rules.get("stabilizationWindowSeconds"))
    if window is not None and window < 0:
        errs.invalid(f"{path}.stabilizationWindowSeconds", window, "must be greater than or equal to zero")
    if window is not None and window > _HPA_MAX_STABILIZATION_WINDOW_SECONDS:
        errs.invalid(f"{path}.stabilizationWindowSeconds", window,
                     f"must be less than or equal to {_HPA_MAX_STABILIZATION_WINDOW_SECONDS}")
    errs.enum(f"{path}.selectPolicy", rules.get("selectPolicy"), HPA_SELECT_POLICIES)
    policies = _l(rules.get("policies"))
    if not policies:
        errs.required(f"{path}.policies", "must specify at least one Policy")
    for i, policy in enumerate(policies):
        policy, p = _d(policy), f"{path}.policies[{i}]"
        if policy.get("type") not in HPA_SCALING_POLICY_TYPES:
            errs.unsupported(f"{p}.type", policy.get("type") or "", HPA_SCALING_POLICY_TYPES)
        value, period = _int32(policy.get("value")) or 0, _int32(policy.get("periodSeconds")) or 0
        if value <= 0:
            errs.invalid(f"{p}.value", value, "must be greater than zero")
        if period <= 0:
            errs.invalid(f"{p}.periodSeconds", period, "must be greater than zero")
        if period > _HPA_MAX_PERIOD_SECONDS:
            errs.invalid(f"{p}.periodSeconds", period, f"must be less than or equal to {_HPA_MAX_PERIOD_SECONDS}")
    tolerance = _quantity(rules["tolerance"]) if rules.get("tolerance") is not None else None
    if tolerance is not None and tolerance < 0:
        errs.invalid(f"{path}.tolerance", rules["tolerance"], "must be greater than or equal to zero")


def _horizontal_pod_autoscaler(errs: _Errors, obj: dict[str, Any]) -> None:
    """HPA2: Kubernetes' ValidateHorizontalPodAutoscaler. minReplicas 0 needs the alpha HPAScaleToZero gate,
    which Stowage does not have: it is refused."""
    spec = _d(obj.get("spec"))
    min_replicas = _int32(spec.get("minReplicas"))
    max_replicas = _int32(spec.get("maxReplicas")) or 0  # Go's zero value when absent
    if min_replicas is not None and min_replicas < 1:
        errs.invalid("spec.minReplicas", min_replicas, "must be greater than or equal to 1")
    if max_replicas < 1:
        errs.invalid("spec.maxReplicas", max_replicas, "must be greater than 0")
    if min_replicas is not None and max_replicas < min_replicas:
        errs.invalid("spec.maxReplicas", max_replicas, "must be greater than or equal to `minReplicas`")
    _cross_version_reference(errs, spec.get("scaleTargetRef"), "spec.scaleTargetRef")
    for i, metric in enumerate(_l(spec.get("metrics"))):
        _metric_spec(errs, metric, f"spec.metrics[{i}]")
    behavior = spec.get("behavior")
    if behavior is not None:
        _scaling_rules(errs, _d(behavior).get("scaleUp"), "spec.behavior.scaleUp")
        _scaling_rules(errs, _d(behavior).get("scaleDown"), "spec.behavior.scaleDown")


def _replication_controller(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    errs.non_negative("spec.replicas", spec.get("replicas"))
    errs.non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    selector = _d(spec.get("selector"))
    _labels(errs, "spec.selector", selector)
    if not selector:
        errs.required("spec.selector")
    check = (lambda labels: all(labels.get(k) == v for k, v in selector.items())) if selector else None
    if spec.get("template") is not None:
        _pod_template(errs, spec.get("template"), "spec.template", check, ("Always",))
    elif spec.get("replicas", 1):
        errs.required("spec.template")


def _selector_immutable(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    new_sel, old_sel = _d(new.get("spec")).get("selector"), _d(old.get("spec")).get("selector")
    errs.immutable("spec.selector", new_sel, old_sel)


# --- other core kinds ------------------------------------------------------------------------------


def _pod(errs: _Errors, obj: dict[str, Any]) -> None:
    _pod_spec(errs, obj.get("spec"), "spec")
    _apparmor_annotations(errs, _d(_d(obj.get("metadata")).get("annotations")), _d(obj.get("spec")))


_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _apparmor_annotations(errs: _Errors, annotations: dict[str, Any], spec: dict[str, Any]) -> None:
    """AA4: Kubernetes' ValidateAppArmorPodAnnotations: each per-container annotation names a container of the
    pod and a profile in the annotation's form."""
    names = {_d(c).get("name") for key in ("initContainers", "containers", "ephemeralContainers")
             for c in _l(spec.get(key))}
    for key, value in sorted(annotations.items()):
        if not key.startswith(_APPARMOR_ANNOTATION):
            continue
        container = key.removeprefix(_APPARMOR_ANNOTATION)
        if container not in names:
            errs.invalid(f"metadata.annotations[{key}]", container, "container not found")
        if value not in ("", "runtime/default", "unconfined") and not str(value).startswith("localhost/"):
            errs.invalid(f"metadata.annotations[{key}]", value, f'invalid AppArmor profile name: "{value}"')


def _custom_resource_definition(errs: _Errors, obj: dict[str, Any]) -> None:
    """CRD1-CRD2: Kubernetes' own rules for a definition, then whether it defines a kind served here."""
    spec = _d(obj.get("spec"))
    names = _d(spec.get("names"))
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not group:
        errs.required("spec.group")
    elif "." not in str(group):
        errs.invalid("spec.group", group, "should be a domain with at least one dot")
    if not plural:
        errs.required("spec.names.plural")
    if not kind:
        errs.required("spec.names.kind")
    name = _d(obj.get("metadata")).get("name")
    if group and plural and name != f"{plural}.{group}":
        errs.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
    if not spec.get("scope"):
        errs.required("spec.scope")
    else:
        errs.enum("spec.scope", spec.get("scope"), ("Cluster", "Namespaced"))
    versions = [_d(v) for v in _l(spec.get("versions"))]
    if sum(1 for v in versions if v.get("storage")) != 1:
        errs.invalid("spec.versions", json.dumps(versions)[:200], "must have exactly one version marked as storage version")
    seen: set[str] = set()
    for i, version in enumerate(versions):
        vname = version.get("name")
        if not vname:
            errs.required(f"spec.versions[{i}].name")
        elif vname in seen:
            errs.duplicate(f"spec.versions[{i}].name", vname)
        seen.add(str(vname))
        if not _d(version.get("schema")).get("openAPIV3Schema"):
            errs.required(f"spec.versions[{i}].schema.openAPIV3Schema", "schemas are required")
    if errs.items:
        return
    problem = crd.served_kind_problem(obj)
    if problem is not None:
        errs.forbidden(problem[0], f"{problem[2]} (got {problem[1]})")


def _crd_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    errs.immutable("spec.scope", _d(new.get("spec")).get("scope"), _d(old.get("spec")).get("scope"))


def _pod_template_object(errs: _Errors, obj: dict[str, Any]) -> None:
    """PT1: Kubernetes' ValidatePodTemplate. Any restart policy is allowed (a template of a workload
    narrows it there); the template is required, as its pod spec's containers are."""
    _pod_template_spec(errs, obj.get("template"), "template", None, RESTART_POLICIES)


def _runtime_class(errs: _Errors, obj: dict[str, Any]) -> None:
    """RC1: Kubernetes' ValidateRuntimeClass."""
    handler = obj.get("handler")
    if not handler:
        errs.required("handler")
    else:
        errs.names("handler", handler, is_dns1123_label)
    for name, value in _d(_d(obj.get("overhead")).get("podFixed")).items():
        _resource_quantity(errs, f"overhead.podFixed.{name}", name, value)
    scheduling = _d(obj.get("scheduling"))
    _labels(errs, "scheduling.nodeSelector", scheduling.get("nodeSelector"))
    _tolerations(errs, scheduling.get("tolerations"), "scheduling.tolerations")


def _runtime_class_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    errs.immutable("handler", new.get("handler"), old.get("handler"))


def _pod_create(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    if _l(spec.get("ephemeralContainers")):
        errs.forbidden("spec.ephemeralContainers", "cannot be set on create")
    if _l(spec.get("schedulingGates")) and spec.get("nodeName"):  # SG1: a gated pod is not placed
        errs.forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared")


def validate_ephemeral_containers_update(new: dict[str, Any], old: dict[str, Any]) -> None:
    """A write of ``pods/ephemeralcontainers`` (Kubernetes' ValidatePodEphemeralContainersUpdate): containers
    may be added, never changed or removed; the pod's own rules check the new ones."""
    errs = _Errors()
    new_list = [_d(c) for c in _l(_d(new.get("spec")).get("ephemeralContainers"))]
    by_name = {str(c.get("name")): (i, c) for i, c in enumerate(new_list)}
    for c in _l(_d(old.get("spec")).get("ephemeralContainers")):
        c = _d(c)
        name = str(c.get("name"))
        if name not in by_name:
            errs.forbidden("spec.ephemeralContainers", f'existing ephemeral containers "{name}" may not be removed')
        elif by_name[name][1] != c:
            errs.forbidden(f"spec.ephemeralContainers[{by_name[name][0]}]",
                           f'existing ephemeral containers "{name}" may not be changed')
    if errs.items:
        meta = _d(new.get("metadata"))
        raise Invalid(errs.items, kind="Pod", name=str(meta.get("name") or ""))


_POD_MUTABLE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _as_in(new: dict[str, Any], old: dict[str, Any], key: str) -> dict[str, Any]:
    """``new`` with ``key`` as ``old`` has it (or lacks it): a field checked on its own, left out of the rest."""
    out = {k: v for k, v in new.items() if k != key}
    if key in old:
        out[key] = old[key]
    return out


def _pod_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    def stripped(spec: dict[str, Any], keep_node: bool) -> dict[str, Any]:
        out = dict(spec)
        for key in ("containers", "initContainers"):
            out[key] = [{k: v for k, v in _d(c).items() if k != "image"} for c in _l(spec.get(key))]
        # ephemeralContainers: their own subresource's rules (validate_ephemeral_containers_update).
        for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "ephemeralContainers"):
            out.pop(key, None)
        if not keep_node:
            out.pop("nodeName", None)
        return out

    ns, os_ = _d(new.get("spec")), _d(old.get("spec"))
    # SG2: gates may only be removed; while the pod is gated its node selector may gain entries (Kubernetes'
    # mutable scheduling directives), so whoever lifts a gate can say where the pod may go first.
    old_gates = [_d(g).get("name") for g in _l(os_.get("schedulingGates"))]
    for i, gate in enumerate(_l(ns.get("schedulingGates"))):
        if _d(gate).get("name") not in old_gates:
            errs.forbidden(f"spec.schedulingGates[{i}].name",
                           f"only deletion is allowed, but found new scheduling gate '{_d(gate).get('name')}'")
    ns = _as_in(ns, os_, "schedulingGates")
    if old_gates:
        old_selector, new_selector = _d(os_.get("nodeSelector")), _d(ns.get("nodeSelector"))
        if any(new_selector.get(k) != v for k, v in old_selector.items()):
            errs.invalid("spec.nodeSelector", new_selector,
                         "only additions to spec.nodeSelector are allowed (no mutations or deletions)")
        ns = _as_in(ns, os_, "nodeSelector")
        if ns.get("nodeName"):
            errs.forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared")
    # The scheduler places a pod by setting nodeName once.
    placed = bool(os_.get("nodeName"))
    if stripped(ns, placed) != stripped(os_, placed):
        errs.forbidden("spec", _POD_MUTABLE_MESSAGE)
    old_tols = _l(os_.get("tolerations"))
    new_tols = _l(ns.get("tolerations"))
    if any(t not in new_tols for t in old_tols):
        errs.forbidden("spec.tolerations", "existing toleration can not be modified except its tolerationSeconds")


def _service(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    stype = spec.get("type")
    errs.enum("spec.type", stype, SERVICE_TYPES)
    errs.enum("spec.sessionAffinity", spec.get("sessionAffinity"), SESSION_AFFINITIES)
    ports = _l(spec.get("ports"))
    headless = spec.get("clusterIP") == "None"
    if stype == "ExternalName":
        if not spec.get("externalName"):
            errs.required("spec.externalName")
        else:
            errs.names("spec.externalName", str(spec.get("externalName")).rstrip("."), is_dns1123_subdomain)
    elif not ports and not headless:
        errs.required("spec.ports")
    names: set[str] = set()
    for i, port in enumerate(ports):
        port = _d(port)
        p = f"spec.ports[{i}]"
        name = port.get("name")
        if len(ports) > 1 and not name:
            errs.required(f"{p}.name")
        elif name:
            errs.names(f"{p}.name", name, is_dns1123_label)
            if name in names:
                errs.duplicate(f"{p}.name", name)
            names.add(name)
        if port.get("port") is None:
            errs.required(f"{p}.port")
        errs.port(f"{p}.port", port.get("port"))
        errs.enum(f"{p}.protocol", port.get("protocol"), PROTOCOLS)
        errs.port_or_name(f"{p}.targetPort", port.get("targetPort"))
        if port.get("nodePort") is not None:
            errs.port(f"{p}.nodePort", port.get("nodePort"))
    _service_node_ports(errs, spec, ports)
    _labels(errs, "spec.selector", spec.get("selector"))


def _service_node_ports(errs: _Errors, spec: dict[str, Any], ports: list[Any]) -> None:
    """Kubernetes' ValidateService on node ports (K7); the range and who holds a port are the allocator's."""
    stype = spec.get("type")
    seen: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        port = _d(port)
        node_port = port.get("nodePort")
        if not node_port:
            continue
        if stype == "ClusterIP":
            errs.forbidden(f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'")
        key = (port.get("protocol"), node_port)
        if key in seen:
            errs.duplicate(f"spec.ports[{i}].nodePort", node_port)
        seen.add(key)
    if spec.get("allocateLoadBalancerNodePorts") is not None and stype != "LoadBalancer":
        errs.forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'")
    health = spec.get("healthCheckNodePort")
    if health and not (stype == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"):
        errs.invalid("spec.healthCheckNodePort", health,
                     "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
    elif health is not None:
        errs.port("spec.healthCheckNodePort", health)


def _endpoints(errs: _Errors, obj: dict[str, Any]) -> None:
    for i, subset in enumerate(_l(obj.get("subsets"))):
        subset = _d(subset)
        for kind in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(_l(subset.get(kind))):
                if not _d(addr).get("ip"):
                    errs.required(f"subsets[{i}].{kind}[{j}].ip")
        for j, port in enumerate(_l(subset.get("ports"))):
            port = _d(port)
            errs.port(f"subsets[{i}].ports[{j}].port", port.get("port"))
            errs.enum(f"subsets[{i}].ports[{j}].protocol", port.get("protocol"), PROTOCOLS)


def _node(errs: _Errors, obj: dict[str, Any]) -> None:
    for i, taint in enumerate(_l(_d(obj.get("spec")).get("taints"))):
        taint = _d(taint)
        p = f"spec.taints[{i}]"
        if not taint.get("key"):
            errs.required(f"{p}.key")
        else:
            errs.names(f"{p}.key", taint.get("key"), is_qualified_name)
        if not taint.get("effect"):
            errs.required(f"{p}.effect")
        else:
            errs.enum(f"{p}.effect", taint.get("effect"), TAINT_EFFECTS)


def _data_keys(errs: _Errors, obj: dict[str, Any], sections: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for section in sections:
        for key in _d(obj.get(section)):
            errs.names(f"{section}[{key}]", key, is_config_map_key)
            if key in seen:
                errs.invalid(f"{section}[{key}]", key, "duplicate of key present in data")
            seen.add(key)


def _secret(errs: _Errors, obj: dict[str, Any]) -> None:
    _data_keys(errs, obj, ("data",))
    _data_keys(errs, obj, ("stringData",))
    for key, value in _d(obj.get("data")).items():
        if isinstance(value, str):
            try:
                base64.b64decode(value, validate=True)
            except ValueError:  # binascii.Error; as Kubernetes, without echoing the value
                errs.items.append(FieldError(f"data[{key}]", "Invalid value", "illegal base64 data"))


def _withhold_secret_values(errors: list[FieldError]) -> list[FieldError]:
    """A Secret's values never appear in an error message (Status, event or log): only the field.

    Key names are not secret (Kubernetes shows them): an error about the key itself keeps it.
    """
    out = []
    for e in errors:
        section = e.field.split("[", 1)[0].split(".", 1)[0]
        is_key_error = e.field == f"{section}[{e.value}]"
        if e.has_value and section in ("data", "stringData") and not is_key_error:
            e = dataclasses.replace(e, value=None, has_value=False)
        out.append(e)
    return out


def _config_map(errs: _Errors, obj: dict[str, Any]) -> None:
    _data_keys(errs, obj, ("data", "binaryData"))


def _immutable_data_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            errs.forbidden("immutable", "field is immutable when `immutable` is set")
        for section in ("data", "binaryData", "stringData"):
            if new.get(section) != old.get(section):
                errs.forbidden(section, "field is immutable when `immutable` is set")


def _limit_range(errs: _Errors, obj: dict[str, Any]) -> None:
    """QL6: non-negative bounds, min <= defaultRequest <= default <= max, one item per type."""
    from storage.api.quota import limit_range_errors

    _report(errs, limit_range_errors(obj))


def _report(errs: _Errors, findings: list[tuple[str, str, Any, str]]) -> None:
    """Findings of a kind's own checker, (kind, path, value, detail), as field errors."""
    for kind, path, value, detail in findings:
        if kind == "duplicate":
            errs.duplicate(path, value)
        elif kind == "required":
            errs.required(path, detail)
        elif kind == "forbidden":
            errs.forbidden(path, detail)
        else:
            errs.invalid(path, value, detail)


def _resource_quota(errs: _Errors, obj: dict[str, Any]) -> None:
    """QL2: quota names are qualified names and no quantity is negative."""
    from storage.api.quota import quota_errors

    for name in _d(_d(obj.get("spec")).get("hard")):
        errs.names(f"spec.hard.{name}", name, _quota_name)
    for path, value, detail in quota_errors(obj):
        errs.invalid(path, value, detail)


def _quota_name(name: str) -> list[str]:
    # "<class>.storageclass.storage.k8s.io/requests.storage" and "count/deployments.apps" are qualified names
    # with a prefix; Kubernetes checks them the same way.
    return is_qualified_name(name)


def _event(errs: _Errors, obj: dict[str, Any], request_version: str = "v1") -> None:
    """Kubernetes' legacyValidateEvent, which every write passes whatever its group: an event with an
    ``eventTime`` is one of the new recorder's, whose reporter, action and reason must be given."""
    involved = _d(obj.get("involvedObject"))
    ns = _d(obj.get("metadata")).get("namespace") or ""
    involved_ns = involved.get("namespace") or ""
    if not obj.get("eventTime"):
        if (ns not in ("", "default") if not involved_ns else involved_ns != ns):
            errs.invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
    else:
        if not involved_ns and ns not in ("default", "kube-system"):
            errs.invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
        reporter_path = "reportingComponent" if request_version == "v1" else "reportingController"
        reporter = obj.get("reportingComponent") or ""
        if not reporter:
            errs.required(reporter_path)
        errs.names(reporter_path, reporter, is_qualified_name)
        for path, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
            value = obj.get(path) or ""
            if not value:
                errs.required(path)
            if isinstance(value, str) and len(value) > limit:
                errs.invalid(path, "", f"can have at most {limit} characters")
        message = obj.get("message") or ""
        if isinstance(message, str) and len(message) > 1024:
            errs.invalid("message", "", "can have at most 1024 characters")
    if request_version == "v1":  # events.k8s.io/v1 checks the type its own way (_event_v1_create)
        errs.enum("type", obj.get("type") or None, ("Normal", "Warning"))


def _event_series(errs: _Errors, obj: dict[str, Any]) -> None:
    series = obj.get("series")
    if isinstance(series, dict):
        count = series.get("count")
        if not isinstance(count, int) or count < 2:
            errs.invalid("series.count", "", "should be at least 2")
        if not series.get("lastObservedTime"):
            errs.required("series.lastObservedTime")


def _event_v1_create(errs: _Errors, obj: dict[str, Any]) -> None:
    """EVT2: Kubernetes' strict rules for an event created through events.k8s.io/v1 (the deprecated fields
    of the old recorder must be left unset there), checked on the stored form under the newer names."""
    _event_series(errs, obj)
    if not obj.get("eventTime"):
        errs.required("eventTime")
    if obj.get("type") not in ("Normal", "Warning"):
        errs.invalid("type", "", f"has invalid value: {obj.get('type') or ''}")
    for core, newer in (("firstTimestamp", "deprecatedFirstTimestamp"), ("lastTimestamp", "deprecatedLastTimestamp"),
                        ("count", "deprecatedCount")):
        if obj.get(core):
            errs.invalid(newer, "", "needs to be unset")
    source = _d(obj.get("source"))
    if source.get("component") or source.get("host"):
        errs.invalid("deprecatedSource", "", "needs to be unset")


def _event_v1_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    """EVT2: through events.k8s.io/v1 only an event's series (and metadata) may change; the paths are
    Kubernetes' own, in the stored form's names."""
    if new.get("series") != old.get("series"):
        _event_series(errs, new)
    for path in ("involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count",
                 "type", "eventTime", "action", "related", "reportingComponent", "reportingInstance"):
        shown = "reportingController" if path == "reportingComponent" else path
        errs.immutable(shown, new.get(path), old.get(path))


def _controller_revision(errs: _Errors, obj: dict[str, Any]) -> None:
    errs.non_negative("revision", obj.get("revision"))


def _controller_revision_update(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    errs.immutable("data", new.get("data"), old.get("data"))


RBAC_GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ("Group", "ServiceAccount", "User")


def _policy_rules(errs: _Errors, rules: Any, namespaced: bool) -> None:
    """Kubernetes' ValidatePolicyRule."""
    for i, rule in enumerate(_l(rules)):
        rule, path = _d(rule), f"rules[{i}]"
        if not rule.get("verbs"):
            errs.required(f"{path}.verbs", "verbs must contain at least one value")
        urls = rule.get("nonResourceURLs")
        if urls:
            shown = json.dumps(urls)
            if namespaced:
                errs.invalid(f"{path}.nonResourceURLs", shown, "namespaced rules cannot apply to non-resource URLs")
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                errs.invalid(f"{path}.nonResourceURLs", shown,
                             "rules cannot apply to both regular resources and non-resource URLs")
            continue
        if not rule.get("apiGroups"):
            errs.required(f"{path}.apiGroups", "resource rules must supply at least one api group")
        if not rule.get("resources"):
            errs.required(f"{path}.resources", "resource rules must supply at least one resource")


def _role(errs: _Errors, obj: dict[str, Any]) -> None:
    _policy_rules(errs, obj.get("rules"), namespaced=True)


def _cluster_role(errs: _Errors, obj: dict[str, Any]) -> None:
    _policy_rules(errs, obj.get("rules"), namespaced=False)
    for i, selector in enumerate(_l(_d(obj.get("aggregationRule")).get("clusterRoleSelectors"))):
        _label_selector(errs, f"aggregationRule.clusterRoleSelectors[{i}]", selector)


def _binding(errs: _Errors, obj: dict[str, Any], role_kinds: tuple[str, ...], namespaced: bool) -> None:
    ref = _d(obj.get("roleRef"))
    if ref.get("apiGroup") != RBAC_GROUP:
        errs.unsupported("roleRef.apiGroup", ref.get("apiGroup") or "", (RBAC_GROUP,))
    if ref.get("kind") not in role_kinds:
        errs.unsupported("roleRef.kind", ref.get("kind") or "", role_kinds)
    if not ref.get("name"):
        errs.required("roleRef.name")
    for i, subject in enumerate(_l(obj.get("subjects"))):
        subject, path = _d(subject), f"subjects[{i}]"
        kind, group = subject.get("kind"), subject.get("apiGroup") or ""
        if not subject.get("name"):
            errs.required(f"{path}.name")
        if kind not in SUBJECT_KINDS:
            errs.unsupported(f"{path}.kind", kind or "", SUBJECT_KINDS)
        elif kind == "ServiceAccount":
            if group:
                errs.unsupported(f"{path}.apiGroup", group, ("",))
            if not namespaced and not subject.get("namespace"):
                errs.required(f"{path}.namespace")
        elif group != RBAC_GROUP:
            errs.unsupported(f"{path}.apiGroup", group, (RBAC_GROUP,))


def _role_binding(errs: _Errors, obj: dict[str, Any]) -> None:
    _binding(errs, obj, ("ClusterRole", "Role"), namespaced=True)


def _cluster_role_binding(errs: _Errors, obj: dict[str, Any]) -> None:
    _binding(errs, obj, ("ClusterRole",), namespaced=False)


def _role_ref_immutable(errs: _Errors, new: dict[str, Any], old: dict[str, Any]) -> None:
    if new.get("roleRef") != old.get("roleRef"):
        errs.invalid("roleRef", json.dumps(new.get("roleRef")), "cannot change roleRef")


def _nothing(errs: _Errors, obj: dict[str, Any]) -> None:
    return None


CSR_USAGES = ("signing", "digital signature", "content commitment", "key encipherment", "key agreement",
              "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
              "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
              "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc")


def _csr(errs: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    if not spec.get("request"):
        errs.required("spec.request")
    if not spec.get("signerName"):
        errs.required("spec.signerName")
    if not spec.get("usages"):
        errs.required("spec.usages")
    for i, usage in enumerate(spec.get("usages") or []):
        errs.enum(f"spec.usages[{i}]", usage, CSR_USAGES)
    seconds = spec.get("expirationSeconds")
    if seconds is not None and (not isinstance(seconds, int) or seconds < 600):
        errs.invalid("spec.expirationSeconds", seconds, "may not specify a duration less than 600 seconds (10 minutes)")


def _backup_schedule(errs: _Errors, obj: dict[str, Any]) -> None:
    """BC13: a cron schedule croniter reads, one claim source, a snapshot class, sane retention."""
    from storage.api.backup_schedule import check

    _report(errs, check(obj))
    spec = _d(obj.get("spec"))
    if spec.get("claimSelector") is not None:
        _label_selector(errs, "spec.claimSelector", spec.get("claimSelector"))


_Rule = Callable[[_Errors, dict[str, Any]], None]
_UpdateRule = Callable[[_Errors, dict[str, Any], dict[str, Any]], None]

_CREATE_RULES: dict[str, _Rule] = {
    "CustomResourceDefinition": _custom_resource_definition,
    "RuntimeClass": _runtime_class,
    "PodTemplate": _pod_template_object,
    "PersistentVolume": _pv,
    "PersistentVolumeClaim": _pvc,
    "StorageClass": _storage_class,
    "VolumeAttributesClass": _volume_attributes_class,
    "Pod": _pod,
    "Service": _service,
    "Endpoints": _endpoints,
    "EndpointSlice": _endpoint_slice,
    "NetworkPolicy": _network_policy,
    "PriorityClass": _priority_class,
    "Node": _node,
    "Namespace": _nothing,
    "Secret": _secret,
    "ConfigMap": _config_map,
    "Event": _event,
    "VolumeAttachment": _volume_attachment,
    "CSIDriver": _csi_driver,
    "CSINode": _csi_node,
    "CSIStorageCapacity": _csi_storage_capacity,
    "StatefulSet": _statefulset,
    "DaemonSet": _daemonset,
    "ReplicaSet": _replicaset,
    "ReplicationController": _replication_controller,
    "ControllerRevision": _controller_revision,
    "Deployment": _deployment,
    "Job": _job,
    "CronJob": _cronjob,
    "Ingress": _ingress,
    "IngressClass": _ingress_class,
    "Lease": _lease,
    "LimitRange": _limit_range,
    "ResourceQuota": _resource_quota,
    "BackupSchedule": _backup_schedule,
    "Role": _role,
    "ClusterRole": _cluster_role,
    "RoleBinding": _role_binding,
    "ClusterRoleBinding": _cluster_role_binding,
    "SubjectAccessReview": _nothing,
    "SelfSubjectAccessReview": _nothing,
    "LocalSubjectAccessReview": _nothing,
    "SelfSubjectRulesReview": _nothing,
    "SelfSubjectReview": _nothing,
    "ServiceAccount": _nothing,
    "CertificateSigningRequest": _csr,
    "PodDisruptionBudget": _pod_disruption_budget,
    "HorizontalPodAutoscaler": _horizontal_pod_autoscaler,
    "VolumeSnapshot": _volume_snapshot,
    "VolumeSnapshotContent": _volume_snapshot_content,
    "VolumeSnapshotClass": _volume_snapshot_class,
    "ReferenceGrant": _reference_grant,
}
_UPDATE_RULES: dict[str, _UpdateRule] = {
    "CustomResourceDefinition": _crd_update,
    "RuntimeClass": _runtime_class_update,
    "PersistentVolume": _pv_update,
    "PersistentVolumeClaim": _pvc_update,
    "StorageClass": _storage_class_update,
    "VolumeAttributesClass": _volume_attributes_class_update,
    "Pod": _pod_update,
    "VolumeAttachment": _spec_immutable,
    "CSIDriver": _csi_driver_update,
    "CSIStorageCapacity": _csi_storage_capacity_update,
    "StatefulSet": _statefulset_update,
    "DaemonSet": _selector_immutable,
    "ReplicaSet": _selector_immutable,
    "Deployment": _selector_immutable,
    "Job": _job_update,
    "IngressClass": _ingress_class_update,
    "EndpointSlice": _endpoint_slice_update,
    "PriorityClass": _priority_class_update,
    "Secret": _immutable_data_update,
    "ConfigMap": _immutable_data_update,
    "ControllerRevision": _controller_revision_update,
    "RoleBinding": _role_ref_immutable,
    "ClusterRoleBinding": _role_ref_immutable,
    "CertificateSigningRequest": _spec_immutable,
    "VolumeSnapshot": _volume_snapshot_update,
    "VolumeSnapshotContent": _volume_snapshot_content_update,
}
# Rules of a create only (an update may keep what they refuse).
_CREATE_ONLY_RULES: dict[str, _Rule] = {
    "Ingress": _ingress_create,
    "Pod": _pod_create,
}
_STATUS_PHASES: dict[str, tuple[str, ...]] = {
    "PersistentVolume": PV_PHASES,
    "PersistentVolumeClaim": PVC_PHASES,
    "Pod": POD_PHASES,
    "Namespace": NAMESPACE_PHASES,
}


# --- entry points --------------------------------------------------------------------------------


def _pydantic_errors(exc: ValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        parts = [p for p in err["loc"] if not (isinstance(p, str) and _PYDANTIC_TYPE_TAGS.match(p))]
        path = ""
        for p in parts:
            path += f"[{p}]" if isinstance(p, int) else (f".{p}" if path else str(p))
        if path in seen:  # one report per field even when a union tried several types
            continue
        seen.add(path)
        if err["type"] == "missing":
            out.append(FieldError(path, "Required value"))
            continue
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        value = err.get("input")
        if not isinstance(value, (str, int, float, bool)) or value is None:
            value = json.dumps(value, default=str) if value is not None else "null"
        out.append(FieldError(path, "Invalid value", msg, value, True))
    return out


def pydantic_field_errors(exc: ValidationError) -> list[FieldError]:
    """A model's shape errors as Kubernetes field errors (for bodies that are not stored kinds)."""
    return _pydantic_errors(exc)


def _resource_info(obj: Any) -> ResourceInfo:
    if not isinstance(obj, dict):
        raise BadRequest("the object must be a JSON object")
    kind = obj.get("kind")
    if not kind:
        raise BadRequest("Object 'Kind' is missing")
    info = by_kind(kind) if isinstance(kind, str) else None
    if info is None:
        raise BadRequest(f'no kind "{kind}" is registered')
    version = obj.get("apiVersion")
    if version and not info.accepts(version):
        raise BadRequest(f'no kind "{kind}" is registered for version "{version}"')
    return info


def _undecodable(exc: ValidationError, info: ResourceInfo, api_version: str) -> UndecodableObject | None:
    """K1: the error Kubernetes' decoder refuses the body with (a wrong JSON type, a malformed quantity);
    None when every error is one its validation reports (a missing field), or for a custom resource,
    which Kubernetes checks against its schema and answers with 422."""
    if root_message(info.api_version, info.kind) is None:
        return None
    for err in exc.errors(include_url=False):
        if err["type"] == "missing":
            continue
        if err["type"] == "value_error":  # only quantities raise these, with apimachinery's own message
            detail = str(err["msg"]).removeprefix("Value error, ")
        else:
            loc = [p for p in err["loc"] if not (isinstance(p, str) and _PYDANTIC_TYPE_TAGS.match(p))]
            detail = decode_error(info.api_version, info.kind, loc, err["type"], err.get("input"))
        return UndecodableObject(info.kind, api_version, detail)
    return None


def _normalize(obj: dict[str, Any], info: ResourceInfo, errs: _Errors) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(normalized object or None when the shape is wrong, the dict that rules should read).

    Strict (K2): Go's decoder takes no ``"80"`` for an int32 nor ``"true"`` for a bool, where pydantic's
    lax mode would convert them; int-or-string fields are unions and still take both.
    """
    work = convert(obj)
    try:
        out = dump(MODELS[info.kind].model_validate(work, strict=True))
    except ValidationError as exc:
        undecodable = _undecodable(exc, info, str(obj.get("apiVersion") or info.api_version))
        if undecodable is not None:
            raise undecodable from None
        errs.items.extend(_pydantic_errors(exc))
        return None, work
    return out, out


def _name(obj: dict[str, Any]) -> str:
    meta = _d(obj.get("metadata"))
    return str(meta.get("name") or meta.get("generateName") or "")


def validate(obj: dict[str, Any], old: dict[str, Any] | None = None, *, request_version: str = "") -> dict[str, Any]:
    """The normalized object (served apiVersion, canonical quantities), or ``Invalid`` with every field error.

    ``old`` is the stored object on update: immutability rules then apply.
    ``request_version``: the group-version of the request's path when it is not the stored one (an Event
    written through events.k8s.io/v1 meets that group's stricter rules, EVT2).
    Raises ``BadRequest`` for an unknown kind or apiVersion.
    """
    info = _resource_info(obj)
    errs = _Errors()
    out, data = _normalize(obj, info, errs)
    _object_meta(errs, data.get("metadata"), info)
    if info.kind == "Event" and request_version == EVENTS_V1:
        _event(errs, data, request_version)
        if old is None:
            _event_v1_create(errs, data)
        else:
            _event_v1_update(errs, data, old)
        create_rule = None
    else:
        create_rule = _CREATE_RULES.get(info.kind)  # a registered kind without rules yet: its model's shape only
    if create_rule is not None:
        create_rule(errs, data)
    if old is None and info.kind in _CREATE_ONLY_RULES:
        _CREATE_ONLY_RULES[info.kind](errs, data)
    if old is not None:
        _object_meta_update(errs, data.get("metadata"), old.get("metadata"))
        update_rule = _UPDATE_RULES.get(info.kind)
        if update_rule is not None:
            update_rule(errs, data, old)
    if errs.items or out is None:
        items = _withhold_secret_values(errs.items) if info.kind == "Secret" else errs.items
        raise Invalid(items, kind=info.kind, name=_name(obj))
    return out


def validate_review(obj: Any, kind: str) -> dict[str, Any]:
    """A create-only review's body, normalized: its kind and apiVersion, and the shape of every field.

    Nothing is stored, so the object rules (a DNS name, ...) do not apply, as in Kubernetes; but a
    field of the wrong type is a 4xx naming it, not an error deep inside the authorizer.
    """
    if not isinstance(obj, dict):
        raise BadRequest("the request body must be a JSON object")
    info = _resource_info({**obj, "kind": obj.get("kind") or kind})
    if info.kind != kind:
        raise BadRequest(f"the kind {info.kind!r} of the body does not match the kind {kind!r} of the resource")
    errs = _Errors()
    out, _ = _normalize({**obj, "kind": kind, "apiVersion": info.api_version}, info, errs)
    if errs.items or out is None:
        raise Invalid(errs.items, kind=kind, name=_name(obj))
    return out


def validate_status(obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    """Checks for a status subresource write: metadata identity and phase names; returns the normalized object."""
    info = _resource_info(obj)
    errs = _Errors()
    out, data = _normalize(obj, info, errs)
    if old is not None:
        _object_meta_update(errs, data.get("metadata"), old.get("metadata"))
    else:
        _object_meta(errs, data.get("metadata"), info)
    status = _d(data.get("status"))
    phases = _STATUS_PHASES.get(info.kind)
    if phases is not None:
        errs.enum("status.phase", status.get("phase"), phases)
    if info.kind == "PodDisruptionBudget":
        for key in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"):
            errs.non_negative(f"status.{key}", status.get(key))
    if info.kind == "HorizontalPodAutoscaler":  # Kubernetes' ValidateHorizontalPodAutoscalerStatusUpdate
        for key in ("currentReplicas", "desiredReplicas"):
            errs.non_negative(f"status.{key}", status.get(key))
    if info.kind in ("VolumeSnapshot", "VolumeSnapshotContent"):
        _snapshot_status(errs, info, status)
    if info.kind == "Ingress":
        _ingress_status(errs, status)
    if info.kind == "ResourceQuota":
        from storage.api.quota import quota_errors

        for path, value, detail in quota_errors(data):
            errs.invalid(path, value, detail)
    if info.kind == "PersistentVolumeClaim":
        for mode in _l(status.get("accessModes")):
            errs.enum("status.accessModes", mode, ACCESS_MODES)
        for name, value in _d(status.get("capacity")).items():
            q = _quantity(value)
            if q is not None and q < 0:
                errs.invalid(f"status.capacity.{name}", value, "must be greater than or equal to 0")
    if errs.items or out is None:
        raise Invalid(errs.items, kind=info.kind, name=_name(obj))
    return out
