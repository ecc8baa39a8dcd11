"""Namespaces as Kubernetes' API server has them: the system ones at start, lifecycle on create and delete."""
from __future__ import annotations

import copy
import ipaddress
from typing import Any

import structlog

from storage.api import priority
from storage.api.defaults import apply_defaults
from storage.api.namespaces import (
    CONTENT_GUARD, IMMORTAL, SYSTEM_NAMESPACES, TERMINATING, is_terminating, spec_finalizers, terminating_message,
    without_guard_when_final,
)
from storage.api.registry import ResourceInfo
from storage.errors import AlreadyExists, Conflict, FieldError, Forbidden, NotFound
from storage.store.base import Store

log = structlog.get_logger(__name__)
Obj = dict[str, Any]

KUBERNETES_SERVICE = "kubernetes"


class NamespaceForbidden(Forbidden):
    """403 with the cause Kubernetes' NamespaceLifecycle admission gives."""

    def __init__(self, info: ResourceInfo, name: str, namespace: str) -> None:
        super().__init__(f'{info.plural} "{name}" is forbidden: {terminating_message(namespace)}',
                         kind=info.plural, name=name)
        self.namespace = namespace

    def to_status(self) -> dict[str, Any]:
        status = super().to_status()
        status.setdefault("details", {})["causes"] = [
            {"reason": "NamespaceTerminating", "message": f"namespace {self.namespace} is being terminated",
             "field": "metadata.namespace"}]
        return status


def check_create(store: Store, info: ResourceInfo, obj: Obj) -> None:
    """New objects go only into namespaces that exist and are not being deleted."""
    if not info.namespaced:
        return
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    try:
        ns = store.get("namespaces", "", namespace)
    except NotFound:
        if getattr(store, "corrupt", None):  # a lost page, not a missing namespace: say what is wrong
            store.check_writable()  # type: ignore[attr-defined]
        raise NotFound(f'namespaces "{namespace}" not found', kind="namespaces", name=namespace) from None
    if is_terminating(ns):
        raise NamespaceForbidden(info, str(meta.get("name") or meta.get("generateName") or ""), namespace)


def keep_spec_finalizers(obj: Obj, old: Obj) -> None:
    """As Kubernetes: an update never changes ``spec.finalizers``; only ``/finalize`` does."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    if spec is None:
        spec = obj["spec"] = {}
    finalizers = (old.get("spec") or {}).get("finalizers")
    if finalizers:
        spec["finalizers"] = list(finalizers)
    else:
        spec["finalizers"] = []  # an explicit empty list: defaulting must not add "kubernetes" back


def delete(store: Store, name: str, options: Obj, *, dry_run: bool = False) -> Obj:
    """Mark for deletion: Terminating while spec.finalizers remain (the controller empties it), else removed."""
    if name in IMMORTAL:
        raise Forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                        kind="namespaces", name=name)
    preconditions = options.get("preconditions") or {}
    for _ in range(8):
        ns = store.get("namespaces", "", name)
        meta = ns["metadata"]
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise Conflict(f'Precondition failed: UID in precondition: {preconditions["uid"]}, '
                           f'UID in object meta: {meta.get("uid")}', kind="namespaces", name=name)
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get("resourceVersion"):
            raise Conflict(f"the ResourceVersion in the precondition ({preconditions['resourceVersion']}) does not "
                           f"match the ResourceVersion in record ({meta.get('resourceVersion')}). "
                           "The object might have been modified", kind="namespaces", name=name)
        if dry_run or meta.get("deletionTimestamp"):
            return ns
        if not spec_finalizers(ns):
            return store.delete("namespaces", "", name, resource_version=meta.get("resourceVersion"))
        marked = copy.deepcopy(ns)
        marked["metadata"]["finalizers"] = [*(meta.get("finalizers") or []), CONTENT_GUARD] \
            if CONTENT_GUARD not in (meta.get("finalizers") or []) else list(meta["finalizers"])
        marked.setdefault("status", {})["phase"] = TERMINATING
        try:
            marked = store.update("namespaces", marked)
            return store.delete("namespaces", "", name, resource_version=marked["metadata"]["resourceVersion"])
        except Conflict:
            continue  # someone wrote meanwhile: read again
    raise Conflict(f'Operation cannot be fulfilled on namespaces "{name}": the object has been modified; '
                   "please apply your changes to the latest version and try again", kind="namespaces", name=name)


def finalize(store: Store, name: str, body: Any, *, dry_run: bool = False) -> Obj:
    """``PUT /api/v1/namespaces/<name>/finalize``: only ``spec.finalizers`` of the body is taken."""
    from storage.errors import BadRequest, Invalid

    if not isinstance(body, dict):
        raise BadRequest("the request body must be a Namespace object")
    wanted = (body.get("spec") or {}).get("finalizers") or []
    if not isinstance(wanted, list) or not all(isinstance(f, str) and f for f in wanted):
        raise Invalid([FieldError("spec.finalizers", "Invalid value", "must be a list of names")],
                      kind="Namespace", name=name)
    rv = (body.get("metadata") or {}).get("resourceVersion")
    ns = copy.deepcopy(store.get("namespaces", "", name))
    if rv and rv != ns["metadata"].get("resourceVersion"):
        raise Conflict(f'Operation cannot be fulfilled on namespaces "{name}": the object has been modified; '
                       "please apply your changes to the latest version and try again", kind="namespaces", name=name)
    ns.setdefault("spec", {})["finalizers"] = list(wanted)
    if not wanted:
        ns["spec"].pop("finalizers")
    if ns["metadata"].get("deletionTimestamp"):
        without_guard_when_final(ns)
    if dry_run:
        return ns
    return store.update("namespaces", ns)


def _endpoint_ip(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "127.0.0.1"
    return "127.0.0.1" if address.is_unspecified else str(address)


def ensure_system_objects(store: Store, host: str, port: int) -> None:
    """The namespaces every cluster has, and the ``kubernetes`` Service pointing at this server (idempotent)."""
    for name in SYSTEM_NAMESPACES:
        try:
            store.create("namespaces", apply_defaults({"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": name,
                                                                    "labels": {"kubernetes.io/metadata.name": name}}}))
        except AlreadyExists:
            pass
    for system_class in priority.system_classes():  # PC2: as kube-apiserver's post-start hook makes them
        try:
            store.create("priorityclasses", system_class)
        except AlreadyExists:
            pass
    labels = {"component": "apiserver", "provider": "kubernetes"}
    service = apply_defaults({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": KUBERNETES_SERVICE, "namespace": "default", "labels": labels},
        # No virtual cluster IP routes anywhere here (see storage/controllers/endpoints.py), so the Service
        # listens on the server's own port: KUBERNETES_SERVICE_HOST/PORT in a pod then reach the API server.
        "spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": port, "protocol": "TCP", "targetPort": port}]},
    })
    endpoints = {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": KUBERNETES_SERVICE, "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": _endpoint_ip(host)}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    }
    # As kube-apiserver's EndpointsAdapter writes it beside the Endpoints (EPS4: those are not mirrored).
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": KUBERNETES_SERVICE, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": KUBERNETES_SERVICE}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [_endpoint_ip(host)], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
    for resource, wanted in (("services", service), ("endpoints", endpoints), ("endpointslices", endpoint_slice)):
        _upsert(store, resource, wanted)


def _upsert(store: Store, resource: str, wanted: Obj) -> None:
    """Create, or bring the fields this server owns up to date (the port changes on every restart with port 0)."""
    for _ in range(8):
        try:
            store.create(resource, wanted)
            return
        except AlreadyExists:
            pass
        try:
            current = store.get(resource, "default", wanted["metadata"]["name"])
        except NotFound:
            continue
        updated = copy.deepcopy(current)
        if resource == "services":
            updated["spec"]["ports"] = wanted["spec"]["ports"]
            updated["spec"].pop("selector", None)
        elif resource == "endpoints":
            updated["subsets"] = wanted["subsets"]
        else:
            updated["endpoints"], updated["ports"] = wanted["endpoints"], wanted["ports"]
        if updated == current:
            return
        try:
            store.update(resource, updated)
            return
        except (Conflict, NotFound):
            continue
    log.warning("system object not updated after retries", resource=resource, name=wanted["metadata"]["name"])
