"""The namespaced objects a provisioned volume needs besides itself (``ProvisionResult.objects``):
created before its PV is saved, so a pod never sees the PV without them, and deleted after the
backend volume is, each labelled with the PV it belongs to so that nothing else is replaced or removed.
Both steps are idempotent: a crash anywhere in between is healed by running them again."""
from __future__ import annotations

import copy
import json
from typing import Any

import structlog

from provisioners.base import ANN_PROVISIONED_OBJECTS, LABEL_PROVISIONED_FOR, VOLUME_OBJECT_KINDS
from storage.errors import AlreadyExists, Conflict, NotFound, PermanentError

log = structlog.get_logger(__name__)


def _ref(obj: dict[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    return {"kind": str(obj.get("kind") or ""), "namespace": str(meta.get("namespace") or ""), "name": str(meta.get("name") or "")}


def ensure_objects(store: Any, pv_name: str, objects: list[dict[str, Any]]) -> str:
    """Create (or bring up to date) each object; returns the PV annotation listing them ("" for none)."""
    refs = []
    for wanted in objects:
        ref = _ref(wanted)
        resource = VOLUME_OBJECT_KINDS.get(ref["kind"])
        if resource is None or not ref["namespace"] or not ref["name"]:
            raise PermanentError(f"a provisioner asked for object {ref}: only namespaced "
                                 f"{', '.join(sorted(VOLUME_OBJECT_KINDS))} with a name are allowed")
        body = copy.deepcopy(wanted)
        body.setdefault("apiVersion", "v1")
        body["metadata"].setdefault("labels", {})[LABEL_PROVISIONED_FOR] = pv_name
        try:
            store.create(resource, body)
        except AlreadyExists:
            existing = store.get(resource, ref["namespace"], ref["name"])
            owner = ((existing.get("metadata") or {}).get("labels") or {}).get(LABEL_PROVISIONED_FOR)
            if owner != pv_name:
                raise PermanentError(f"{ref['kind']} {ref['namespace']}/{ref['name']} already exists and does not "
                                     f"belong to volume {pv_name}") from None
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            try:
                store.update(resource, body)
            except Conflict:
                pass  # someone wrote it since; the next provisioning pass checks again
        refs.append(ref)
    return json.dumps(refs, sort_keys=True) if refs else ""


def delete_objects(store: Any, pv: dict[str, Any]) -> None:
    """Delete the objects the PV's annotation lists, only those still labelled for this PV."""
    meta = pv.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(ANN_PROVISIONED_OBJECTS)
    if not text:
        return
    try:
        refs = json.loads(text)
    except json.JSONDecodeError:
        log.warning("volume_objects.bad_annotation", volume=meta.get("name"))
        return
    for ref in refs if isinstance(refs, list) else []:
        resource = VOLUME_OBJECT_KINDS.get(str(ref.get("kind")))
        if resource is None:
            continue
        try:
            existing = store.get(resource, str(ref.get("namespace") or ""), str(ref.get("name") or ""))
        except NotFound:
            continue
        if ((existing.get("metadata") or {}).get("labels") or {}).get(LABEL_PROVISIONED_FOR) != meta.get("name"):
            continue
        try:
            store.delete(resource, existing["metadata"].get("namespace") or "", existing["metadata"]["name"],
                         resource_version=existing["metadata"].get("resourceVersion"))
        except (NotFound, Conflict):
            pass
