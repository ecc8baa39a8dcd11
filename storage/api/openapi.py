"""OpenAPI documents (Swagger 2.0 for ``/openapi/v2``, OpenAPI 3.0 per group-version for ``/openapi/v3``).

Generated from the pydantic models, with Kubernetes' definition names
(``io.k8s.api.core.v1.PersistentVolume``) and vendor extensions, because
kubectl reads them by those names: ``explain`` finds a kind by its
``x-kubernetes-group-version-kind``, and ``apply``/``create`` only leave
validation to the server (``fieldValidation``) when the PATCH operation of
the kind lists that parameter.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any

import orjson
from pydantic import BaseModel

from storage.api import validation as v
from storage.api.models import MODELS, OLDER_VERSION_MODELS, model_at
from storage.api.models.policy import Eviction
from storage.api.openapi_text import DESCRIPTIONS, KIND_DESCRIPTIONS
from storage.api.patchmeta import list_map_keys, patch_meta
from storage.api.registry import RESOURCES, ResourceInfo, groups
from storage.api.schema import FieldType, model_fields

__all__ = ["definition_name", "definitions", "v2_document", "v3_document", "v3_index"]

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_META_CLASSES = {"ObjectMeta", "OwnerReference", "Condition", "LabelSelector", "LabelSelectorRequirement",
                 "DeleteOptions"}
_MODULE_PACKAGES = {
    "storage.api.models.core": "io.k8s.api.core.v1",
    "storage.api.models.pod": "io.k8s.api.core.v1",
    "storage.api.models.volumes": "io.k8s.api.core.v1",
    "storage.api.models.meta": "io.k8s.api.core.v1",
    "storage.api.models.apps": "io.k8s.api.apps.v1",
    "storage.api.models.batch": "io.k8s.api.batch.v1",
    "storage.api.models.networking": "io.k8s.api.networking.v1",
    "storage.api.models.discovery": "io.k8s.api.discovery.v1",
    "storage.api.models.scheduling": "io.k8s.api.scheduling.v1",
    "storage.api.models.storage_kinds": "io.k8s.api.storage.v1",
}

# Values a field may take, as the validation rules enforce them (model class, wire field) -> values.
ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("PersistentVolumeSpec", "persistentVolumeReclaimPolicy"): v.PV_RECLAIM_POLICIES,
    ("PersistentVolumeSpec", "volumeMode"): v.VOLUME_MODES,
    ("PersistentVolumeSpec", "accessModes"): v.ACCESS_MODES,
    ("PersistentVolumeClaimSpec", "volumeMode"): v.VOLUME_MODES,
    ("PersistentVolumeClaimSpec", "accessModes"): v.ACCESS_MODES,
    ("PersistentVolumeClaimStatus", "accessModes"): v.ACCESS_MODES,
    ("PersistentVolumeStatus", "phase"): v.PV_PHASES,
    ("PersistentVolumeClaimStatus", "phase"): v.PVC_PHASES,
    ("StorageClass", "reclaimPolicy"): v.SC_RECLAIM_POLICIES,
    ("StorageClass", "volumeBindingMode"): v.BINDING_MODES,
    ("PodSpec", "restartPolicy"): v.RESTART_POLICIES,
    ("PodSpec", "dnsPolicy"): v.DNS_POLICIES,
    ("PodStatus", "phase"): v.POD_PHASES,
    ("Container", "imagePullPolicy"): v.PULL_POLICIES,
    ("Container", "terminationMessagePolicy"): v.TERMINATION_MESSAGE_POLICIES,
    ("ContainerPort", "protocol"): v.PROTOCOLS,
    ("ServicePort", "protocol"): v.PROTOCOLS,
    ("EndpointPort", "protocol"): v.PROTOCOLS,
    ("ServiceSpec", "type"): v.SERVICE_TYPES,
    ("ServiceSpec", "sessionAffinity"): v.SESSION_AFFINITIES,
    ("Toleration", "operator"): v.TOLERATION_OPERATORS,
    ("Toleration", "effect"): v.TAINT_EFFECTS,
    ("Taint", "effect"): v.TAINT_EFFECTS,
    ("HostPathVolumeSource", "type"): v.HOST_PATH_TYPES,
    ("LabelSelectorRequirement", "operator"): v.SELECTOR_OPERATORS,
    ("NodeSelectorRequirement", "operator"): v.NODE_SELECTOR_OPERATORS,
    ("NamespaceStatus", "phase"): v.NAMESPACE_PHASES,
    ("StatefulSetPersistentVolumeClaimRetentionPolicy", "whenDeleted"): v.RETENTION_POLICIES,
    ("StatefulSetPersistentVolumeClaimRetentionPolicy", "whenScaled"): v.RETENTION_POLICIES,
    ("PodDisruptionBudgetSpec", "unhealthyPodEvictionPolicy"): v.UNHEALTHY_POD_EVICTION_POLICIES,
    ("VolumeSnapshotContentSpec", "deletionPolicy"): v.SNAPSHOT_DELETION_POLICIES,
    ("VolumeSnapshotClass", "deletionPolicy"): v.SNAPSHOT_DELETION_POLICIES,
}

# Fields Kubernetes marks required (names absent from a model are skipped).
REQUIRED: dict[str, tuple[str, ...]] = {
    "Container": ("name",),
    "Volume": ("name",),
    "EnvVar": ("name",),
    "ContainerPort": ("containerPort",),
    "VolumeMount": ("name", "mountPath"),
    "VolumeDevice": ("name", "devicePath"),
    "KeyToPath": ("key", "path"),
    "NodeSelectorRequirement": ("key", "operator"),
    "NodeSelector": ("nodeSelectorTerms",),
    "LabelSelectorRequirement": ("key", "operator"),
    "OwnerReference": ("apiVersion", "kind", "name", "uid"),
    "Taint": ("key", "effect"),
    "PodSpec": ("containers",),
    "ServicePort": ("port",),
    "EndpointPort": ("port",),
    "EndpointAddress": ("ip",),
    "HostPathVolumeSource": ("path",),
    "LocalVolumeSource": ("path",),
    "NFSVolumeSource": ("server", "path"),
    "ISCSIVolumeSource": ("targetPortal", "iqn", "lun"),
    "RBDVolumeSource": ("monitors", "image"),
    "CephFSVolumeSource": ("monitors",),
    "GlusterfsVolumeSource": ("endpoints", "path"),
    "CSIVolumeSource": ("driver",),
    "PersistentVolumeClaimVolumeSource": ("claimName",),
    "StatefulSetSpec": ("selector", "template"),
    "DaemonSetSpec": ("selector", "template"),
    "ReplicaSetSpec": ("selector",),
    "StorageClass": ("provisioner",),
    "VolumeAttachmentSpec": ("attacher", "source", "nodeName"),
    "HTTPGetAction": ("port",),
    "TCPSocketAction": ("port",),
    "GRPCAction": ("port",),
    "PodAffinityTerm": ("topologyKey",),
    "WeightedPodAffinityTerm": ("weight", "podAffinityTerm"),
    "PreferredSchedulingTerm": ("weight", "preference"),
    "Sysctl": ("name", "value"),
    "ConfigMapKeySelector": ("key",),
    "SecretKeySelector": ("key",),
    "ObjectFieldSelector": ("fieldPath",),
    "ResourceFieldSelector": ("resource",),
    "DownwardAPIVolumeFile": ("path",),
    "Event": ("metadata", "involvedObject"),
    "Condition": ("type", "status"),
    "NodeAddress": ("type", "address"),
    "ContainerStatus": ("name", "ready", "restartCount", "image", "imageID"),
    "AttachedVolume": ("name", "devicePath"),
    "ControllerRevision": ("revision",),
    # The external-snapshotter's and gateway-api's CRD schemas.
    "VolumeSnapshot": ("spec",),
    "VolumeSnapshotSpec": ("source",),
    "VolumeSnapshotContent": ("spec",),
    "VolumeSnapshotContentSpec": ("deletionPolicy", "driver", "source", "volumeSnapshotRef"),
    "VolumeSnapshotClass": ("deletionPolicy", "driver"),
    "ReferenceGrantSpec": ("from", "to"),
    "ReferenceGrantFrom": ("group", "kind", "namespace"),
    "ReferenceGrantTo": ("group", "kind"),
}

EVICTION_GVK = {"group": "policy", "kind": "Eviction", "version": "v1"}


def definition_name(model: type[BaseModel]) -> str:
    name = model.__name__
    if name in _META_CLASSES:
        return f"{META}.{name}"
    if model.__module__ in _OLDER_VERSION_PACKAGES:
        return f"{_OLDER_VERSION_PACKAGES[model.__module__]}.{name}"
    info = next((r for r in RESOURCES if r.kind == name), None)
    if info is not None:
        return f"{_package(info.group)}.{info.version}.{name}"
    # A CRD kind's own types (ReferenceGrantSpec) go with the kind, whichever module holds them.
    owner = next((r for r in RESOURCES if r.crd and name.startswith(r.kind)), None)
    if owner is not None:
        return f"{_package(owner.group)}.{owner.version}.{name}"
    package = _MODULE_PACKAGES.get(model.__module__) or _module_package(model.__module__)
    return f"{package}.{name}"


@functools.lru_cache(maxsize=None)
def _module_package(module: str) -> str:
    """A model module this file does not list: the package of the kinds it defines, else its own name."""
    for info in RESOURCES:
        if MODELS[info.kind].__module__ == module:
            return f"{_package(info.group)}.{info.version}"
    return "io.stowage." + module.rsplit(".", 1)[-1]


def _package(group: str) -> str:
    if not group:
        return "io.k8s.api.core"
    if any(r.crd and r.group == group for r in RESOURCES):
        # A CRD's definitions are named by its group reversed (snapshot.storage.k8s.io: io.k8s.storage.snapshot).
        return ".".join(reversed(group.split(".")))
    if group.endswith(".k8s.io"):
        return "io.k8s.api." + group[: -len(".k8s.io")]
    return "io.k8s.api." + group


# Modules of an older version's types (HPA8), whose names are the stored version's too: named by module first,
# in the package of the group-version they serve.
_OLDER_VERSION_PACKAGES = {model.__module__: f"{_package(gv.rpartition('/')[0])}.{gv.rpartition('/')[2]}"
                           for (gv, _), model in OLDER_VERSION_MODELS.items()}


def _model(info: ResourceInfo) -> type[BaseModel]:
    """The kind's model at the version ``info`` serves (``ResourceInfo.at_version`` for an older one)."""
    model = model_at(info.api_version, info.kind)
    assert model is not None  # storage.api.models checks every served kind has one
    return model


def _served() -> list[ResourceInfo]:
    """Every resource at every version it is served at."""
    return [*RESOURCES, *(r.at_version(gv) for r in RESOURCES for gv in r.also_served)]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/definitions/{name}"}


def _gvk(info: ResourceInfo, kind: str | None = None) -> list[dict[str, str]]:
    return [{"group": info.group, "kind": kind or info.kind, "version": info.version}]


def _description(model_name: str, field: str) -> str:
    return DESCRIPTIONS.get(f"{model_name}.{field}") or DESCRIPTIONS.get(f"*.{field}") or ""


def _field_schema(ft: FieldType, todo: list[type[BaseModel]]) -> dict[str, Any]:
    if ft.kind == "object":
        assert ft.model is not None
        todo.append(ft.model)
        return _ref(definition_name(ft.model))
    if ft.kind == "array":
        assert ft.item is not None
        return {"type": "array", "items": _field_schema(ft.item, todo)}
    if ft.kind == "map":
        assert ft.item is not None
        item = _field_schema(ft.item, todo)
        return {"type": "object", "additionalProperties": item} if item else {"type": "object"}
    if ft.kind == "quantity":
        return _ref(QUANTITY)
    if ft.kind == "int-or-string":
        return _ref(INT_OR_STRING)
    if ft.kind == "any":
        return {}
    if ft.kind == "integer":
        return {"type": "integer", "format": "int64"}
    if ft.kind == "number":
        return {"type": "number", "format": "double"}
    return {"type": ft.kind}


def _model_schema(model: type[BaseModel], todo: list[type[BaseModel]]) -> dict[str, Any]:
    name = model.__name__
    props: dict[str, Any] = {}
    for wire, (_, ft) in model_fields(model).items():
        schema = _field_schema(ft, todo)
        text = _description(name, wire) or _described_type(ft)
        if text:
            schema = {**schema, "description": text}
        values = ENUMS.get((name, wire))
        if values:
            if schema.get("type") == "array":
                schema["items"] = {**schema["items"], "enum": list(values)}
            else:
                schema["enum"] = list(values)
        patch = patch_meta(model, wire)
        if patch:
            strategy, key = patch
            schema["x-kubernetes-patch-strategy"] = strategy
            if key:
                schema["x-kubernetes-patch-merge-key"] = key
                schema["x-kubernetes-list-type"] = "map"
                schema["x-kubernetes-list-map-keys"] = list(list_map_keys(model, wire))
            else:
                schema["x-kubernetes-list-type"] = "set"
        props[wire] = schema
    out: dict[str, Any] = {"type": "object", "properties": props}
    required = [f for f in REQUIRED.get(name, ()) if f in props]
    required += [f for f, (py, _) in model_fields(model).items() if model.model_fields[py].is_required() and f not in required]
    if required:
        out["required"] = required
    text = KIND_DESCRIPTIONS.get(name) or _docstring(model)
    if text:
        out["description"] = text
    return out


def _described_type(ft: FieldType) -> str:
    """A field without its own description borrows its type's (every volume source says what it is)."""
    while ft.item is not None and ft.model is None:
        ft = ft.item
    if ft.model is None:
        return ""
    name = ft.model.__name__
    if name.endswith("VolumeSource") and name not in KIND_DESCRIPTIONS:
        return f"A {name[: -len('VolumeSource')]} volume; a volume source: exactly one source may be set on a volume."
    return KIND_DESCRIPTIONS.get(name) or _docstring(ft.model)


def _docstring(model: type[BaseModel]) -> str:
    doc = model.__doc__ or ""
    if not doc or doc.startswith(model.__name__ + "("):  # pydantic's generated placeholder
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _common_definitions() -> dict[str, Any]:
    string = {"type": "string"}
    return {
        QUANTITY: {
            "type": "string", "format": "quantity",
            "description": KIND_DESCRIPTIONS["Quantity"],
        },
        INT_OR_STRING: {
            "type": "string", "format": "int-or-string",
            "description": KIND_DESCRIPTIONS["IntOrString"],
        },
        f"{META}.ListMeta": {
            "type": "object",
            "description": KIND_DESCRIPTIONS["ListMeta"],
            "properties": {
                "resourceVersion": {**string, "description": DESCRIPTIONS["ListMeta.resourceVersion"]},
                "continue": {**string, "description": DESCRIPTIONS["ListMeta.continue"]},
                "remainingItemCount": {"type": "integer", "format": "int64"},
                "selfLink": string,
            },
        },
        f"{META}.Status": {
            "type": "object",
            "description": KIND_DESCRIPTIONS["Status"],
            "properties": {
                "apiVersion": string, "kind": string, "metadata": _ref(f"{META}.ListMeta"),
                "status": string, "message": string, "reason": string,
                "code": {"type": "integer", "format": "int32"},
                "details": {"type": "object"},
            },
            "x-kubernetes-group-version-kind": [{"group": "", "kind": "Status", "version": "v1"}],
        },
        f"{META}.DeleteOptions": {
            "type": "object",
            "description": KIND_DESCRIPTIONS["DeleteOptions"],
            "properties": {
                "apiVersion": string, "kind": string,
                "dryRun": {"type": "array", "items": string},
                "gracePeriodSeconds": {"type": "integer", "format": "int64"},
                "orphanDependents": {"type": "boolean"},
                "preconditions": {"type": "object", "properties": {"resourceVersion": string, "uid": string}},
                "propagationPolicy": {**string, "enum": ["Background", "Foreground", "Orphan"]},
            },
        },
        f"{META}.Patch": {"type": "object", "description": KIND_DESCRIPTIONS["Patch"]},
        f"{META}.WatchEvent": {
            "type": "object",
            "required": ["type", "object"],
            "properties": {"type": string, "object": {"type": "object"}},
        },
    }


@functools.lru_cache(maxsize=1)
def definitions() -> dict[str, dict[str, Any]]:
    """Every definition, by Kubernetes name (kinds carry ``x-kubernetes-group-version-kind``)."""
    defs = _common_definitions()
    todo: list[type[BaseModel]] = []
    done: set[type[BaseModel]] = set()
    for info in _served():
        todo.append(_model(info))
    todo.append(Eviction)
    while todo:
        model = todo.pop()
        if model in done:
            continue
        done.add(model)
        if definition_name(model) in defs:  # meta types written out above (DeleteOptions)
            continue
        defs[definition_name(model)] = _model_schema(model, todo)
    defs[definition_name(Eviction)]["x-kubernetes-group-version-kind"] = [EVICTION_GVK]
    for info in _served():
        name = definition_name(_model(info))
        kind_def = defs[name]
        kind_def["x-kubernetes-group-version-kind"] = _gvk(info)
        for field in ("apiVersion", "kind"):
            kind_def["properties"].setdefault(field, {"type": "string"})
            kind_def["properties"][field] = {"type": "string", "description": DESCRIPTIONS[f"*.{field}"]}
        defs[name + "List"] = {
            "type": "object",
            "description": f"{info.kind}List is a list of {info.kind} objects.",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string", "description": DESCRIPTIONS["*.apiVersion"]},
                "kind": {"type": "string", "description": DESCRIPTIONS["*.kind"]},
                "items": {"type": "array", "items": _ref(name), "description": f"The {info.plural}."},
                "metadata": {**_ref(f"{META}.ListMeta"), "description": DESCRIPTIONS["*.listMetadata"]},
            },
            "x-kubernetes-group-version-kind": _gvk(info, info.kind + "List"),
        }
    return dict(sorted(defs.items()))


# --- paths ----------------------------------------------------------------------------------------

def _param(name: str, text: str, kind: str = "string", where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "type": kind, "uniqueItems": True, "description": text,
            **({"required": True} if where == "path" else {})}


_DRY_RUN = _param("dryRun", "When present, modifications are not persisted. Valid value: All.")
_FIELD_MANAGER = _param("fieldManager", "A name of the actor making the change.")
_FIELD_VALIDATION = _param(
    "fieldValidation",
    "How the server treats unknown and duplicate fields in the request body: Ignore drops them silently, "
    "Warn drops them and answers a Warning header for each, Strict rejects the request naming each one.",
)
_LIST_PARAMS = [
    _param("labelSelector", "A selector to restrict the list of returned objects by their labels."),
    _param("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
    _param("resourceVersion", "Where a watch starts: changes after this resource version."),
    _param("watch", "Watch for changes to the described resources.", "boolean"),
    _param("allowWatchBookmarks", "Ask for BOOKMARK events in a watch.", "boolean"),
    _param("timeoutSeconds", "Timeout for the list or watch call.", "integer"),
    _param("limit", "The maximum number of items to return.", "integer"),
    _param("continue", "The continue token of the previous page."),
]


def _operation(info: ResourceInfo, action: str, op_id: str, response: str, *, body: str | None = None,
               params: list[dict[str, Any]] | None = None, created: bool = False) -> dict[str, Any]:
    parameters = list(params or [])
    if body is not None:
        parameters.insert(0, {"name": "body", "in": "body", "required": True, "schema": _ref(body)})
    responses: dict[str, Any] = {"200": {"description": "OK", "schema": _ref(response)},
                                 "401": {"description": "Unauthorized"}}
    if created:
        responses["201"] = {"description": "Created", "schema": _ref(response)}
    return {
        "operationId": op_id,
        "consumes": ["*/*"] if body is None else (
            _patch_types(info) if action == "patch" else ["application/json", "application/yaml"]),
        "produces": ["application/json", "application/yaml"],
        "schemes": ["https"],
        "tags": [_tag(info)],
        "parameters": parameters,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(info)[0],
    }


def _patch_types(info: ResourceInfo) -> list[str]:
    # A custom resource has no strategic merge patch (VS12): kubectl then sends its apply as a merge patch.
    if info.crd:
        return ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
    return ["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json",
            "application/apply-patch+yaml"]


def _tag(info: ResourceInfo) -> str:
    group = info.group.replace(".k8s.io", "").replace(".", "_") if info.group else "core"
    return f"{group}_{info.version}"


def _op_name(verb: str, info: ResourceInfo, namespaced: bool, suffix: str = "") -> str:
    group = "".join(p.capitalize() for p in (info.group.replace(".k8s.io", "").split(".") if info.group else ["core"]))
    scope = "Namespaced" if namespaced else ""
    return f"{verb}{group}{info.version.capitalize()}{scope}{info.kind}{suffix}"


def resource_paths(info: ResourceInfo) -> dict[str, Any]:
    """The Swagger 2.0 paths of one resource."""
    base = "/api/v1" if not info.group else f"/apis/{info.group}/{info.version}"
    kind_ref = definition_name(_model(info))
    list_ref = kind_ref + "List"
    name_param = _param("name", f"name of the {info.kind}", where="path")
    ns_param = _param("namespace", "object name and auth scope, such as for teams and projects", where="path")
    write = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]
    ns = info.namespaced
    collection = f"{base}/namespaces/{{namespace}}/{info.plural}" if ns else f"{base}/{info.plural}"
    paths: dict[str, Any] = {
        collection: {
            "get": _operation(info, "list", _op_name("list", info, ns), list_ref, params=_LIST_PARAMS),
            "post": _operation(info, "post", _op_name("create", info, ns), kind_ref, body=kind_ref, params=write,
                               created=True),
            "delete": _operation(info, "deletecollection", _op_name("deletecollection", info, ns),
                                 f"{META}.Status", body=f"{META}.DeleteOptions", params=[_DRY_RUN, *_LIST_PARAMS]),
            "parameters": [ns_param] if ns else [],
        },
        f"{collection}/{{name}}": {
            "get": _operation(info, "get", _op_name("read", info, ns), kind_ref),
            "put": _operation(info, "put", _op_name("replace", info, ns), kind_ref, body=kind_ref, params=write,
                              created=True),
            "patch": _operation(info, "patch", _op_name("patch", info, ns), kind_ref, body=f"{META}.Patch",
                                params=[*write, _param("force", "Force apply requests.", "boolean")], created=True),
            "delete": _operation(info, "delete", _op_name("delete", info, ns), f"{META}.Status",
                                 body=f"{META}.DeleteOptions", params=[_DRY_RUN]),
            "parameters": [name_param, *([ns_param] if ns else [])],
        },
    }
    if ns:
        paths[f"{base}/{info.plural}"] = {
            "get": _operation(info, "list", _op_name("list", info, False, "ForAllNamespaces"), list_ref,
                              params=_LIST_PARAMS),
        }
    if info.kind == "Pod":
        eviction = definition_name(Eviction)
        post = _operation(info, "post", "createCoreV1NamespacedPodEviction", eviction, body=eviction,
                          params=write, created=True)
        post["x-kubernetes-group-version-kind"] = EVICTION_GVK
        paths[f"{collection}/{{name}}/eviction"] = {"post": post, "parameters": [name_param, ns_param]}
    if info.has_status:
        paths[f"{collection}/{{name}}/status"] = {
            "get": _operation(info, "get", _op_name("read", info, ns, "Status"), kind_ref),
            "put": _operation(info, "put", _op_name("replace", info, ns, "Status"), kind_ref, body=kind_ref,
                              params=write, created=True),
            "patch": _operation(info, "patch", _op_name("patch", info, ns, "Status"), kind_ref,
                                body=f"{META}.Patch", params=write, created=True),
            "parameters": [name_param, *([ns_param] if ns else [])],
        }
    return paths


def _info() -> dict[str, str]:
    return {"title": "Stowage", "version": "v1.30.0"}


@functools.lru_cache(maxsize=1)
def v2_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for info in _served():
        paths.update(resource_paths(info))
    return {
        "swagger": "2.0",
        "info": _info(),
        "paths": dict(sorted(paths.items())),
        "definitions": definitions(),
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                                                "description": "Bearer token authentication"}},
        "security": [{"BearerToken": []}],
    }


# --- OpenAPI 3 ------------------------------------------------------------------------------------

# The types Kubernetes' OpenAPI 3 documents give as a oneOf (their OpenAPIV3OneOfTypes), with no type of
# their own: kubectl explain then names them (limits <map[string]Quantity>, maxSurge <IntOrString>) where a
# plain "string" would be shown instead.
_V3_ONE_OF = {QUANTITY: ("string", "number"), INT_OR_STRING: ("integer", "string")}


def _v3_schema(schema: Any, in_schema: bool = False) -> Any:
    """Swagger 2.0 schema -> OpenAPI 3.0: components refs; inside a schema every ref is wrapped in allOf,
    as Kubernetes writes them (kubectl explain then names the referenced type)."""
    if isinstance(schema, list):
        return [_v3_schema(s, in_schema) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _v3_schema(val, in_schema) for k, val in schema.items()}
    ref = out.get("$ref")
    if isinstance(ref, str):
        ref = ref.replace("#/definitions/", "#/components/schemas/")
        if len(out) == 1 and not in_schema:
            return {"$ref": ref}
        rest = {k: val for k, val in out.items() if k != "$ref"}
        return {"allOf": [{"$ref": ref}], **rest}
    return out


def _v3_parameter(p: dict[str, Any]) -> dict[str, Any]:
    out = {"name": p["name"], "in": p["in"], "description": p["description"], "schema": {"type": p["type"],
                                                                                          "uniqueItems": True}}
    if p.get("required"):
        out["required"] = True
    return out


def _v3_operation(op: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: val for k, val in op.items()
                           if k not in ("consumes", "produces", "schemes", "parameters", "responses")}
    params = []
    for p in op["parameters"]:
        if p["in"] == "body":
            body_schema = _v3_schema(p["schema"])
            out["requestBody"] = {"required": True, "content": {t: {"schema": body_schema} for t in op["consumes"]}}
        else:
            params.append(_v3_parameter(p))
    out["parameters"] = params
    responses = {}
    for code, resp in op["responses"].items():
        entry: dict[str, Any] = {"description": resp["description"]}
        if "schema" in resp:
            entry["content"] = {t: {"schema": _v3_schema(resp["schema"])} for t in op["produces"]}
        responses[code] = entry
    out["responses"] = responses
    return out


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(ref.rsplit("/", 1)[-1])
        for val in node.values():
            _refs(val, out)
    elif isinstance(node, list):
        for val in node:
            _refs(val, out)


@functools.lru_cache(maxsize=None)
def v3_document(group_version: str) -> dict[str, Any] | None:
    """The OpenAPI 3.0 document of one group-version ("v1", "apps/v1"); None when not served."""
    infos = groups().get(group_version)
    if infos is None:
        return None
    paths: dict[str, Any] = {}
    for info in infos:
        for path, item in resource_paths(info).items():
            paths[path] = {
                **{verb: _v3_operation(op) for verb, op in item.items() if verb != "parameters"},
                **({"parameters": [_v3_parameter(p) for p in item["parameters"]]} if item.get("parameters") else {}),
            }
    # Only the definitions these paths reach, as Kubernetes does, so explain's lookup stays per group.
    defs = definitions()
    needed: set[str] = set()
    _refs(paths, needed)
    frontier = list(needed)
    while frontier:
        name = frontier.pop()
        found: set[str] = set()
        _refs(defs[name], found)
        for ref in found - needed:
            needed.add(ref)
            frontier.append(ref)
    schemas = {name: _v3_schema(defs[name], in_schema=True) for name in sorted(needed)}
    for name, one_of in _V3_ONE_OF.items():
        if name in schemas:
            schema = {k: val for k, val in schemas[name].items() if k != "type"}
            schemas[name] = {**schema, "oneOf": [{"type": t} for t in one_of]}
    return {
        "openapi": "3.0.0",
        "info": _info(),
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                                                "description": "Bearer token authentication"}},
        },
        "security": [{"BearerToken": []}],
    }


def v3_path(group_version: str) -> str:
    """The index key of a group-version: "api/v1" or "apis/apps/v1"."""
    return f"apis/{group_version}" if "/" in group_version else f"api/{group_version}"


@functools.lru_cache(maxsize=None)
def encoded(group_version: str | None) -> tuple[bytes, str] | None:
    """(JSON bytes, hash) of a v3 document, or of the v2 document for None."""
    doc = v2_document() if group_version is None else v3_document(group_version)
    if doc is None:
        return None
    data = orjson.dumps(doc)
    return data, hashlib.sha512(data).hexdigest()[:128].upper()


def v3_index() -> dict[str, Any]:
    paths = {}
    for gv in groups():
        enc = encoded(gv)
        assert enc is not None
        paths[v3_path(gv)] = {"serverRelativeURL": f"/openapi/v3/{v3_path(gv)}?hash={enc[1]}"}
    return {"paths": paths}
