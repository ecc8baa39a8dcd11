"""The REST verbs on one resource, synchronous (the app runs them in a worker thread).

Every write goes defaults -> validation -> admission -> store, so nothing
invalid is ever stored. Objects are plain JSON dicts in wire form.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from storage.api.conversion import convert
from storage.api.defaults import apply_defaults
from storage.api.limits import MAX_OBJECT_BYTES, depth_exceeds, depth_message, encoded_size, object_too_large_message
from storage.api.registry import ResourceInfo
from storage.api.validation import validate, validate_status
from storage.apiserver import namespaces
from storage.apiserver.admission import Admission, AdmissionRequest
from storage.apiserver.fieldvalidation import FieldValidation
from storage.apiserver.patch import APPLY, apply_patch, parse_patch
from storage.errors import BadRequest, Conflict, Invalid, MethodNotAllowed, NotFound, RequestEntityTooLarge
from storage.store.base import Store

# Metadata the store owns: a client's copy of it is never trusted on update.
_SERVER_OWNED_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
# Kubernetes resets these kinds' status on create; the controllers and agent write it afterwards.
_STATUS_RESET_ON_CREATE = {"persistentvolumes", "persistentvolumeclaims", "pods"}
# A budget's status is what evictions spend: only the disruption controller writes it, never its creator.
_STATUS_DROPPED_ON_CREATE = {"poddisruptionbudgets"}
# Read-modify-write loops retry this often when a writer races them and the client gave no precondition.
_MAX_RETRIES = 8


@dataclass(frozen=True)
class Target:
    """What a request path names."""

    info: ResourceInfo
    namespace: str | None  # None: all namespaces (lists and watches only); "" for cluster-scoped objects
    name: str = ""
    subresource: str = ""

    @property
    def store_namespace(self) -> str:
        return self.namespace or ""


def with_type(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """Objects leave the server with kind and apiVersion, whatever the store kept."""
    if obj.get("kind") != info.kind or obj.get("apiVersion") != info.api_version:
        obj = {**obj, "kind": info.kind, "apiVersion": info.api_version}
    return obj


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    elif not isinstance(meta, dict):
        raise BadRequest("metadata: must be an object")
    return meta


def _check_size(obj: dict[str, Any]) -> None:
    """Nothing over etcd's request limit is stored, whichever way it was built (body, patch, defaults)."""
    size = encoded_size(obj)
    if size > MAX_OBJECT_BYTES:
        raise RequestEntityTooLarge(object_too_large_message(size))


class Handlers:
    def __init__(self, store: Store, admission: Admission) -> None:
        self.store = store
        self.admission = admission

    # ---- reads ---------------------------------------------------------------------------
    def list(self, t: Target, label_selector: str | None, field_selector: str | None) -> dict[str, Any]:
        namespace = t.namespace if t.info.namespaced else None
        items, revision = self.store.list(t.info.plural, namespace, label_selector or None, field_selector or None)
        return {
            "kind": f"{t.info.kind}List",
            "apiVersion": t.info.api_version,
            "metadata": {"resourceVersion": str(revision)},
            "items": [with_type(t.info, o) for o in items],
        }

    def get(self, t: Target) -> dict[str, Any]:
        return with_type(t.info, self.store.get(t.info.plural, t.store_namespace, t.name))

    # ---- writes --------------------------------------------------------------------------
    def create(self, t: Target, body: Any, *, user: str = "", dry_run: bool = False,
               warnings: list[str] | None = None, fields: FieldValidation | None = None) -> dict[str, Any]:
        if t.info.namespaced and t.namespace is None:
            raise MethodNotAllowed(f"create {t.info.plural}: POST to /namespaces/<namespace>/{t.info.plural}")
        obj = self._normalize(t, body, fields)
        if t.info.plural in _STATUS_RESET_ON_CREATE:
            obj["status"] = {"phase": "Pending"}
        elif t.info.plural in _STATUS_DROPPED_ON_CREATE:
            obj.pop("status", None)
        meta = obj["metadata"]
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(key, None)
        obj = self._checked(apply_defaults(obj), None, t.info)
        obj = self.admission.admit(
            AdmissionRequest("CREATE", t.info, obj, None, self.store, user, warnings if warnings is not None else [])
        )
        _check_size(obj)
        namespaces.check_create(self.store, t.info, obj)
        if dry_run:
            return obj
        return with_type(t.info, self.store.create(t.info.plural, obj))

    def update(self, t: Target, body: Any, *, user: str = "", dry_run: bool = False,
               warnings: list[str] | None = None, fields: FieldValidation | None = None) -> dict[str, Any]:
        obj = self._normalize(t, body, fields)
        if obj["metadata"].get("name") != t.name:
            raise BadRequest(
                f"the name of the object ({obj['metadata'].get('name')}) does not match the name on the URL ({t.name})"
            )
        wanted_rv = obj["metadata"].get("resourceVersion") or None
        if t.subresource == "status":
            return self._write_status(t, lambda old: obj, wanted_rv, dry_run, user)
        return self._write(t, lambda old: copy.deepcopy(obj), wanted_rv, user, dry_run, warnings)

    def patch(self, t: Target, content_type: str, body: bytes, *, user: str = "", dry_run: bool = False,
              warnings: list[str] | None = None, fields: FieldValidation | None = None) -> dict[str, Any]:
        patch = parse_patch(content_type, body)
        if content_type == APPLY:
            try:
                self.store.get(t.info.plural, t.store_namespace, t.name)
            except NotFound:
                if t.subresource:
                    raise
                obj = patch if isinstance(patch, dict) else {}
                _meta(obj).setdefault("name", t.name)
                return self.create(t, obj, user=user, dry_run=dry_run, warnings=warnings, fields=fields)

        wanted_rv = None
        if isinstance(patch, dict):
            wanted_rv = ((patch.get("metadata") or {}) if isinstance(patch.get("metadata"), dict) else {}).get("resourceVersion")

        def patched(old: dict[str, Any]) -> dict[str, Any]:
            new = apply_patch(content_type, old, patch)
            if not isinstance(new, dict):
                raise BadRequest("the patch must leave an object")
            new = self._normalize(t, new, fields, old)
            if new["metadata"].get("name") != t.name:
                raise BadRequest("metadata.name: the patch may not change the name")
            return new

        if t.subresource == "status":
            return self._write_status(t, patched, wanted_rv, dry_run, user)
        return self._write(t, patched, wanted_rv, user, dry_run, warnings)

    def delete(self, t: Target, options: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        preconditions = options.get("preconditions") or {}
        rv = preconditions.get("resourceVersion") or None
        uid = preconditions.get("uid") or None
        policy = options.get("propagationPolicy") or None
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise BadRequest(f'propagationPolicy: Unsupported value: "{policy}": supported values: "Background", "Foreground", "Orphan"')
        plural, ns = t.info.plural, t.store_namespace
        if plural == "namespaces":
            return with_type(t.info, namespaces.delete(self.store, t.name, options, dry_run=dry_run))
        if uid or policy in ("Foreground", "Orphan") or dry_run:
            current = self.store.get(plural, ns, t.name)
            if uid and current["metadata"].get("uid") != uid:
                raise Conflict(
                    f'Precondition failed: UID in precondition: {uid}, UID in object meta: {current["metadata"].get("uid")}',
                    kind=t.info.kind, name=t.name,
                )
            if dry_run:
                return with_type(t.info, current)
            # The garbage collector removes these finalizers once dependents are handled (Kubernetes semantics).
            finalizer = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy or "")
            if finalizer and finalizer not in (current["metadata"].get("finalizers") or []):
                current = copy.deepcopy(current)
                current["metadata"]["finalizers"] = [*(current["metadata"].get("finalizers") or []), finalizer]
                if rv:
                    current["metadata"]["resourceVersion"] = rv
                current = self.store.update(plural, current)
                rv = current["metadata"]["resourceVersion"]
        return with_type(t.info, self.store.delete(plural, ns, t.name, resource_version=rv))

    def delete_collection(self, t: Target, label_selector: str | None, field_selector: str | None,
                          options: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        listed = self.list(t, label_selector, field_selector)
        deleted = []
        for obj in listed["items"]:
            meta = obj["metadata"]
            one = Target(t.info, meta.get("namespace") or "", meta["name"])
            try:
                deleted.append(self.delete(one, {"propagationPolicy": options.get("propagationPolicy")}, dry_run=dry_run))
            except NotFound:
                continue  # deleted by someone else meanwhile: the goal is reached
        return {**listed, "items": deleted}

    # ---- helpers -------------------------------------------------------------------------
    def _normalize(self, t: Target, body: Any, fields: FieldValidation | None = None,
                   old: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check kind/apiVersion/namespace against the path and fill them in; returns a private copy.

        ``fields`` drops or rejects fields the kind does not declare (``old``: the object a patch applied to).
        """
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if depth_exceeds(body):  # a patch can nest deeper than its own body; checked before any recursive step
            raise BadRequest(f"the object is not acceptable: {depth_message()}")
        obj = copy.deepcopy(body)
        info = t.info
        kind = obj.get("kind") or info.kind
        if kind != info.kind:
            raise BadRequest(f"the kind {kind!r} of the body does not match the resource {info.plural!r} (kind {info.kind!r})")
        api_version = obj.get("apiVersion") or info.api_version
        if not info.accepts(api_version):
            raise BadRequest(f"apiVersion: {api_version!r} is not served for {info.kind}; use {info.api_version!r}")
        obj["kind"], obj["apiVersion"] = info.kind, api_version
        obj = convert(obj)  # legacy versions imply fields the served version states explicitly
        if fields is not None:
            fields.check(obj, old)
        meta = _meta(obj)
        if info.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and t.namespace and body_ns != t.namespace:
                raise BadRequest("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = t.namespace or body_ns or "default"
        else:
            meta.pop("namespace", None)
        return obj

    def _checked(self, obj: dict[str, Any], old: dict[str, Any] | None, info: ResourceInfo) -> dict[str, Any]:
        try:
            result = validate(obj, old)
        except Invalid as e:
            raise self._named(e, obj, info) from None
        return result if result is not None else obj

    @staticmethod
    def _named(e: Invalid, obj: dict[str, Any], info: ResourceInfo) -> Invalid:
        if e.kind or e.name:
            return e
        return Invalid(e.errors, kind=info.kind, name=str((obj.get("metadata") or {}).get("name", "")))

    def _write(self, t: Target, change: Callable[[dict[str, Any]], dict[str, Any]], wanted_rv: str | None,
               user: str, dry_run: bool, warnings: list[str] | None = None) -> dict[str, Any]:
        """Read, change, check, write; re-read and retry on a race unless the client set a precondition."""
        for _ in range(_MAX_RETRIES):
            old = self.store.get(t.info.plural, t.store_namespace, t.name)
            obj = change(old)
            meta = obj["metadata"]
            for key in _SERVER_OWNED_META:
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            if t.info.has_status:
                # The main resource never writes status: that is what /status is for.
                if "status" in old:
                    obj["status"] = old["status"]
                else:
                    obj.pop("status", None)
            meta["resourceVersion"] = wanted_rv or old["metadata"]["resourceVersion"]
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise self._conflict(t)
            if t.info.plural == "namespaces":
                namespaces.keep_spec_finalizers(obj, old)
            obj = self._checked(apply_defaults(obj), old, t.info)
            attempt_warnings: list[str] = []  # a retried attempt's warnings replace the lost one's
            obj = self.admission.admit(AdmissionRequest("UPDATE", t.info, obj, old, self.store, user, attempt_warnings))
            saved = self._save(t, obj, wanted_rv, dry_run)
            if saved is not None:
                if warnings is not None:
                    warnings.extend(attempt_warnings)
                return saved
        raise self._conflict(t)

    def _write_status(self, t: Target, change: Callable[[dict[str, Any]], dict[str, Any]], wanted_rv: str | None,
                      dry_run: bool, user: str = "") -> dict[str, Any]:
        if not t.info.has_status:
            raise NotFound(f"{t.info.plural} has no status subresource")
        for _ in range(_MAX_RETRIES):
            old = self.store.get(t.info.plural, t.store_namespace, t.name)
            changed = change(copy.deepcopy(old))
            obj = copy.deepcopy(old)
            if "status" in changed:
                obj["status"] = changed["status"]
            else:
                obj.pop("status", None)
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise self._conflict(t)
            try:
                result = validate_status(obj, old)
            except Invalid as e:
                raise self._named(e, obj, t.info) from None
            obj = result if result is not None else obj
            obj = self.admission.admit_status(AdmissionRequest("UPDATE", t.info, obj, old, self.store, user))
            saved = self._save(t, obj, wanted_rv, dry_run)
            if saved is not None:
                return saved
        raise self._conflict(t)

    def _save(self, t: Target, obj: dict[str, Any], wanted_rv: str | None, dry_run: bool) -> dict[str, Any] | None:
        """Store an update; None when it lost a race the caller should retry (no precondition given)."""
        _check_size(obj)
        if dry_run:
            return with_type(t.info, obj)
        try:
            return with_type(t.info, self.store.update(t.info.plural, obj))
        except Conflict:
            if wanted_rv:
                raise self._conflict(t) from None
            return None

    @staticmethod
    def _conflict(t: Target) -> Conflict:
        return Conflict(
            f'Operation cannot be fulfilled on {t.info.plural}{"." + t.info.group if t.info.group else ""} "{t.name}": '
            "the object has been modified; please apply your changes to the latest version and try again",
            kind=t.info.plural, name=t.name,
        )


