"""The REST verbs on one resource, synchronous (the app runs them in a worker thread).

Every write goes defaults -> validation -> admission -> store, so nothing
invalid is ever stored. Objects are plain JSON dicts in wire form.
"""
from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from storage.api import crd
from storage.api import managedfields as mf
from storage.api import nodeports, priority, retry, scheduling_gates
from storage.api.conversion import convert, to_version
from storage.api.defaults import apply_defaults
from storage.api.decoding import UndecodableObject
from storage.api.deletion import plan_deletion, requested_grace
from storage.api.limits import MAX_OBJECT_BYTES, depth_exceeds, json_copy, depth_message, encoded_size, object_too_large_message
from storage.api.models import MODELS
from storage.api.names import fill_generated_name
from storage.api.registry import KINDS_WITHOUT_GENERATION, ResourceInfo
from storage.api.timestamps import now
from storage.api.validation import validate, validate_ephemeral_containers_update, validate_status
from storage.apiserver import namespaces, paging
from storage.apiserver.admission import Admission, AdmissionRequest
from storage.apiserver.fieldvalidation import FieldValidation
from storage.apiserver.metatime import check_metadata_times
from storage.apiserver.patch import APPLY, apply_patch, parse_patch
from storage.errors import (
    AlreadyExists, BadRequest, Conflict, FieldError, Forbidden, Gone, Invalid, MethodNotAllowed, NotFound, RequestEntityTooLarge,
)
from storage.store.base import Store

# Metadata the store owns: a client's copy of it is never trusted on update.
_SERVER_OWNED_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
# Kubernetes resets these kinds' status on create; the controllers and agent write it afterwards.
_STATUS_RESET_ON_CREATE = {"persistentvolumes", "persistentvolumeclaims", "pods"}
# Sets an object's managedFields once it is defaulted and valid: (stored object or None, new object, changed object).
Record = Callable[[dict[str, Any] | None, dict[str, Any], dict[str, Any]], None]

# As Kubernetes' strategies, a creator's status is dropped: a budget's is what evictions spend, a quota's what
# its namespace used, a job's what its controller counts (a sent Complete condition would stop it running),
# an ingress's what its controller reports, an autoscaler's what its controller measured (HPA1).
_STATUS_DROPPED_ON_CREATE = {"poddisruptionbudgets", "resourcequotas", "jobs", "cronjobs", "ingresses",
                             "horizontalpodautoscalers"}
# K6: a read-modify-write without the client's precondition is tried again until it wins, as Kubernetes'
# GuaranteedUpdate does (storage.api.retry); past the budget the client gets its 409 and may try again itself.
_FREE_RETRIES = 8
_RETRY_BUDGET_SECONDS = 30.0


def _race_attempts() -> Iterator[int]:
    """The attempts of one read-modify-write; ends (the caller answers 409) after the budget."""
    return retry.attempts(free=_FREE_RETRIES, budget_seconds=_RETRY_BUDGET_SECONDS)


def _defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with Kubernetes' defaults. Kubernetes decodes before it defaults: a field of the wrong JSON type
    that a defaulter reaches first (``template.metadata: "x"``) is the decoder's 400 (K1), not a crash."""
    try:
        return apply_defaults(obj)
    except (AttributeError, TypeError):
        validate(json_copy(obj))  # raises the decoder's refusal for a body of the wrong shape
        raise


@dataclass(frozen=True)
class Target:
    """What a request path names."""

    info: ResourceInfo
    namespace: str | None  # None: all namespaces (lists and watches only); "" for cluster-scoped objects
    name: str = ""
    subresource: str = ""
    # The path's apiVersion when it is not the served one (``info.also_served``): bodies in that version are
    # converted on input by ``_normalize``, and patches apply to the object as that version shows it.
    version: str = ""

    @property
    def store_namespace(self) -> str:
        return self.namespace or ""


def _stamp_phase_transition(new: dict[str, Any], old: dict[str, Any]) -> None:
    """A volume's ``status.lastPhaseTransitionTime`` on a status write, as Kubernetes' status strategy sets it.

    Here rather than in each controller so that every writer of a volume's status (the binder, the
    provisioners, kubectl) gets it. A client that sends a new time of its own with the phase change keeps it.
    """
    old_status = old.get("status") if isinstance(old.get("status"), dict) else {}
    status = new.get("status")
    if not isinstance(status, dict):
        status = new["status"] = {}
    stamp, old_stamp = status.get("lastPhaseTransitionTime"), old_status.get("lastPhaseTransitionTime")
    if status.get("phase") == old_status.get("phase"):
        if stamp is None and old_stamp is not None:
            status["lastPhaseTransitionTime"] = old_stamp
    elif stamp is None or stamp == old_stamp:
        status["lastPhaseTransitionTime"] = now()


def with_type(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """Objects leave the server with kind and apiVersion, whatever the store kept."""
    if obj.get("kind") != info.kind or obj.get("apiVersion") != info.api_version:
        obj = {**obj, "kind": info.kind, "apiVersion": info.api_version}
    return obj


# The pods subresource ``kubectl debug`` writes its ephemeral containers through.
EPHEMERAL = "ephemeralcontainers"


def _keep_ephemeral(obj: dict[str, Any], old: dict[str, Any]) -> None:
    """EC3: ephemeral containers are written only through pods/ephemeralcontainers; what a write of the pod
    itself says of them is replaced by what is stored, as its status is."""
    kept = (old.get("spec") or {}).get("ephemeralContainers")
    if not isinstance(obj.get("spec"), dict):
        return
    if kept:
        obj["spec"]["ephemeralContainers"] = copy.deepcopy(kept)
    else:
        obj["spec"].pop("ephemeralContainers", None)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    elif not isinstance(meta, dict):
        raise BadRequest("metadata: must be an object")
    return meta


def _scope(t: Target) -> mf.Scope:
    """What a write to this path manages: /status the status, the main resource the rest."""
    if t.subresource == "status":
        return "status"
    return "main" if t.info.has_status else "object"


def _set_managed(obj: dict[str, Any], entries: list[dict[str, Any]] | None) -> None:
    meta = obj.setdefault("metadata", {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)


def _as_dry_run(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """A dry-run create's answer as kube-apiserver gives it (K9): what the store would add (uid,
    creationTimestamp, generation), but no resourceVersion, since nothing was stored."""
    meta = obj["metadata"]
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    if info.kind not in KINDS_WITHOUT_GENERATION:
        meta["generation"] = 1
    return obj


_APPROVAL_CONDITIONS = ("Approved", "Denied")


def _keep_approval(obj: dict[str, Any], old: dict[str, Any]) -> None:
    """CSR5: a ``/status`` write neither adds nor removes an Approved or Denied condition (only ``/approval``
    may), as Kubernetes' status strategy keeps them: the stored ones stay, the written ones are dropped."""
    written = [c for c in (obj.get("status") or {}).get("conditions") or []
               if not (isinstance(c, dict) and c.get("type") in _APPROVAL_CONDITIONS)]
    kept = [c for c in (old.get("status") or {}).get("conditions") or []
            if isinstance(c, dict) and c.get("type") in _APPROVAL_CONDITIONS]
    if written or kept:
        obj.setdefault("status", {})["conditions"] = written + kept
    elif isinstance(obj.get("status"), dict):
        obj["status"].pop("conditions", None)


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
    def list(self, t: Target, label_selector: str | None, field_selector: str | None, *,
             limit: int | None = None, continue_token: str | None = None, resource_version: str | None = None,
             visible: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """A list, or one page of it with ``limit`` / ``continue_token`` (see ``paging``).

        ``visible`` narrows it to what the authorizer lets the caller see, before the page is cut.
        """
        namespace = t.namespace if t.info.namespaced else None
        metadata: dict[str, Any]
        if limit is None and not continue_token:
            items, revision = self.store.list(t.info.plural, namespace, label_selector or None, field_selector or None)
            objects = [with_type(t.info, o) for o in items]
            if visible is not None:
                objects = [o for o in objects if visible(o)]
            metadata = {"resourceVersion": str(revision)}
        else:
            objects, metadata = self._page(t, namespace, label_selector, field_selector, limit, continue_token,
                                           resource_version, visible)
        return {"kind": f"{t.info.kind}List", "apiVersion": t.info.api_version, "metadata": metadata, "items": objects}

    def _page(self, t: Target, namespace: str | None, label_selector: str | None, field_selector: str | None,
              limit: int | None, continue_token: str | None, resource_version: str | None,
              visible: Callable[[dict[str, Any]], bool] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        across = t.info.namespaced and namespace is None
        cont = None
        if continue_token:
            if resource_version and resource_version != "0":
                raise BadRequest("specifying resource version is not allowed when using continue")
            cont = paging.decode_continue(continue_token, across, namespace)
            if cont.revision > 0 and cont.revision > self.store.current_revision():
                raise BadRequest(f"invalid continue token: continue key is not valid: resourceVersion {cont.revision} "
                                 "is newer than the newest revision")
        accept = None if visible is None else (lambda o: visible(with_type(t.info, o)))
        try:
            page = self.store.list_page(
                t.info.plural, namespace, label_selector or None, field_selector or None, limit=limit,
                after=cont.after if cont else None, revision=cont.revision if cont and cont.revision > 0 else None,
                accept=accept,
            )
        except Gone:
            if cont is None:
                raise
            raise paging.ContinueExpired(paging.encode_continue(-1, cont.start)) from None
        metadata: dict[str, Any] = {"resourceVersion": str(page.revision)}
        if page.next_after is not None:
            metadata["continue"] = paging.encode_continue(page.revision, paging.start_key(page.next_after, across))
            if page.remaining is not None:
                metadata["remainingItemCount"] = page.remaining
        return [with_type(t.info, o) for o in page.items], metadata

    def get(self, t: Target) -> dict[str, Any]:
        return with_type(t.info, self.store.get(t.info.plural, t.store_namespace, t.name))

    # ---- writes --------------------------------------------------------------------------
    def create(self, t: Target, body: Any, *, user: str = "", dry_run: bool = False,
               warnings: list[str] | None = None, fields: FieldValidation | None = None, manager: str = "",
               applied: mf.Managed | None = None) -> dict[str, Any]:
        """``applied``: the ownership a server-side apply that creates the object computed; without it the
        creator (``manager``) owns every field the new object sets."""
        if t.info.namespaced and t.namespace is None:
            raise MethodNotAllowed(f"create {t.info.plural}: POST to /namespaces/<namespace>/{t.info.plural}")
        obj = self._normalize(t, body, fields)
        if t.info.plural in _STATUS_RESET_ON_CREATE:
            obj["status"] = {"phase": "Pending"}
            if t.info.plural == "persistentvolumes":
                obj["status"]["lastPhaseTransitionTime"] = now()
            elif t.info.plural == "pods":
                scheduling_gates.on_create(obj)
        elif t.info.plural in _STATUS_DROPPED_ON_CREATE:
            obj.pop("status", None)
        elif t.info.plural == "customresourcedefinitions":
            obj["status"] = crd.initial_status(obj, now())  # CRD1: the kind it defines is served already
        meta = obj["metadata"]
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(key, None)
        # Generated before validation and admission, as Kubernetes' registry does: both then check, and their
        # refusals name, the name the object would get. The store draws another on a collision.
        fill_generated_name(meta)
        obj = self._checked(_defaulted(obj), None, t.info, t.version)
        if applied is not None:
            _set_managed(obj, mf.encode_managed(applied))
        else:
            self._record(t, None, obj, manager, "", trust_request=True)
        obj = self.admission.admit(
            AdmissionRequest("CREATE", t.info, obj, None, self.store, user, warnings if warnings is not None else [],
                             dry_run=dry_run)
        )
        _check_size(obj)
        namespaces.check_create(self.store, t.info, obj)
        if t.info.plural == "services":
            # K7: node ports are given last, after admission, as Kubernetes' registry allocates them.
            with nodeports.reserved(self.store, obj, None, dry_run=dry_run):
                return _as_dry_run(t.info, obj) if dry_run else with_type(t.info, self.store.create(t.info.plural, obj))
        if dry_run:
            return _as_dry_run(t.info, obj)
        return with_type(t.info, self.store.create(t.info.plural, obj))

    def update(self, t: Target, body: Any, *, user: str = "", dry_run: bool = False,
               warnings: list[str] | None = None, fields: FieldValidation | None = None, manager: str = "",
               via: str | None = None) -> dict[str, Any]:
        """``via``: the subresource that made this write of the whole object (``scale``); the writer is
        recorded as that subresource's manager."""
        obj = self._normalize(t, body, fields)
        if obj["metadata"].get("name") != t.name:
            raise BadRequest(
                f"the name of the object ({obj['metadata'].get('name')}) does not match the name on the URL ({t.name})"
            )
        wanted_rv = obj["metadata"].get("resourceVersion") or None
        record = self._updater(t, manager, via)
        if t.subresource == "status":
            return self._write_status(t, lambda old: obj, wanted_rv, dry_run, user, record,
                                      approval=via == "approval")
        if t.subresource == EPHEMERAL:
            return self._write_ephemeral(t, lambda old: copy.deepcopy(obj), wanted_rv, user, dry_run, warnings, record)
        return self._write(t, lambda old: copy.deepcopy(obj), wanted_rv, user, dry_run, warnings, record)

    def patch(self, t: Target, content_type: str, body: bytes, *, user: str = "", dry_run: bool = False,
              warnings: list[str] | None = None, fields: FieldValidation | None = None, manager: str = "",
              force: bool = False) -> dict[str, Any]:
        patch = parse_patch(content_type, body)
        if content_type == APPLY:
            return self.apply(t, patch, user=user, dry_run=dry_run, warnings=warnings, fields=fields,
                              manager=manager, force=force)[0]

        wanted_rv = None
        if isinstance(patch, dict):
            wanted_rv = ((patch.get("metadata") or {}) if isinstance(patch.get("metadata"), dict) else {}).get("resourceVersion")

        last: list[dict[str, Any]] = []

        def patched(old: dict[str, Any]) -> dict[str, Any]:
            # HPA8: a patch sent to an older version's path is written against that version's fields.
            new = apply_patch(content_type, to_version(with_type(t.info, old), t.version) if t.version else old, patch)
            if not isinstance(new, dict):
                raise BadRequest("the patch must leave an object")
            last[:] = [new]
            new = self._normalize(t, new, fields, old)
            if new["metadata"].get("name") != t.name:
                raise BadRequest("metadata.name: the patch may not change the name")
            return new

        record = self._updater(t, manager)
        try:
            if t.subresource == "status":
                return self._write_status(t, patched, wanted_rv, dry_run, user, record)
            if t.subresource == EPHEMERAL:
                return self._write_ephemeral(t, patched, wanted_rv, user, dry_run, warnings, record)
            return self._write(t, patched, wanted_rv, user, dry_run, warnings, record)
        except UndecodableObject as e:
            # Kubernetes decodes the patched object after patching: its refusal is the patch's 422 (K1).
            shown = json.dumps(last[0] if last else patch, separators=(",", ":"), sort_keys=True)
            raise Invalid([FieldError("patch", "Invalid value", e.detail, shown, True)]) from None

    def apply(self, t: Target, config: Any, *, user: str = "", dry_run: bool = False,
              warnings: list[str] | None = None, fields: FieldValidation | None = None, manager: str,
              force: bool = False) -> tuple[dict[str, Any], bool]:
        """Server-side apply: ``config`` merged in, fields ``manager`` dropped since its last apply removed,
        a 409 naming the owners of fields it would change (unless ``force``). Creates a missing object:
        the second value says whether it did."""
        if not isinstance(config, dict):
            raise BadRequest("the apply configuration must be an object")
        meta = config.get("metadata") if config.get("metadata") is not None else {}
        if not isinstance(meta, dict):
            raise BadRequest("metadata: must be an object")
        if meta.get("managedFields") is not None:
            raise BadRequest("metadata.managedFields must be nil")
        if meta.get("name") not in (None, "", t.name):
            raise BadRequest(f"the name of the object ({meta['name']}) does not match the name on the URL ({t.name})")
        config = self._normalize(t, {**config, "metadata": {**meta, "name": t.name}}, fields)
        model, scope = MODELS.get(t.info.kind), _scope(t)
        who = mf.Manager.applier(manager, t.subresource)

        def applied(live: dict[str, Any]) -> tuple[dict[str, Any], mf.Managed]:
            managed = mf.managed_for_write((live.get("metadata") or {}).get("managedFields"), None,
                                           trust_request=False)
            try:
                return mf.apply(live, config, model, managed, who, t.info.api_version, force=force, now=now(),
                                scope=scope)
            except mf.FieldSetError as e:
                raise BadRequest(f"failed to create typed patch object: {e}") from None

        if not t.subresource:
            try:
                self.store.get(t.info.plural, t.store_namespace, t.name)
            except NotFound:
                new, managed = applied({})
                try:
                    return self.create(t, new, user=user, dry_run=dry_run, warnings=warnings, applied=managed), True
                except AlreadyExists:
                    pass  # created meanwhile: apply to it

        def change(old: dict[str, Any]) -> dict[str, Any]:
            new, managed = applied(old)
            new = self._normalize(t, new, None, old)
            _set_managed(new, mf.encode_managed(managed))
            return new

        def record(old: dict[str, Any] | None, new: dict[str, Any], changed: dict[str, Any]) -> None:
            _set_managed(new, changed["metadata"].get("managedFields"))

        wanted_rv = meta.get("resourceVersion") or None
        if t.subresource == "status":
            return self._write_status(t, change, wanted_rv, dry_run, user, record), False
        if t.subresource == EPHEMERAL:
            return self._write_ephemeral(t, change, wanted_rv, user, dry_run, warnings, record), False
        return self._write(t, change, wanted_rv, user, dry_run, warnings, record), False

    def delete(self, t: Target, options: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        preconditions = options.get("preconditions") or {}
        rv = preconditions.get("resourceVersion") or None
        uid = preconditions.get("uid") or None
        policy = options.get("propagationPolicy") or None
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise BadRequest(f'propagationPolicy: Unsupported value: "{policy}": supported values: "Background", "Foreground", "Orphan"')
        if policy is None and options.get("orphanDependents") is None and t.info.kind == "Job":
            policy = "Orphan"  # J10: batch/v1 keeps a deleted job's pods unless asked otherwise, as Kubernetes
        try:
            grace = requested_grace(options.get("gracePeriodSeconds"))
        except ValueError as e:
            raise BadRequest(f"gracePeriodSeconds: Invalid value: {e}") from None
        plural, ns = t.info.plural, t.store_namespace
        if plural == "namespaces":
            return with_type(t.info, namespaces.delete(self.store, t.name, options, dry_run=dry_run))
        if plural == "priorityclasses" and t.name in priority.SYSTEM_CLASSES:  # PC2, as Kubernetes' registry
            raise Forbidden(f'{priority.RESOURCE} "{t.name}" is forbidden: this is a system priority class and '
                            "cannot be deleted", kind=plural, name=t.name)
        if uid or policy in ("Foreground", "Orphan") or dry_run:
            current = self.store.get(plural, ns, t.name)
            if uid and current["metadata"].get("uid") != uid:
                raise Conflict(
                    f'Precondition failed: UID in precondition: {uid}, UID in object meta: {current["metadata"].get("uid")}',
                    kind=t.info.kind, name=t.name,
                )
            if dry_run:  # what the deletion would leave, stored nowhere
                return with_type(t.info, plan_deletion(plural, copy.deepcopy(current), grace, datetime.now(timezone.utc)).obj)
            # The garbage collector removes these finalizers once dependents are handled (Kubernetes semantics).
            finalizer = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy or "")
            if finalizer and finalizer not in (current["metadata"].get("finalizers") or []):
                current = copy.deepcopy(current)
                current["metadata"]["finalizers"] = [*(current["metadata"].get("finalizers") or []), finalizer]
                if rv:
                    current["metadata"]["resourceVersion"] = rv
                current = self.store.update(plural, current)
                rv = current["metadata"]["resourceVersion"]
        return with_type(t.info, self.store.delete(plural, ns, t.name, resource_version=rv, grace_seconds=grace))

    def delete_collection(self, t: Target, label_selector: str | None, field_selector: str | None,
                          options: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        listed = self.list(t, label_selector, field_selector)
        deleted = []
        for obj in listed["items"]:
            meta = obj["metadata"]
            one = Target(t.info, meta.get("namespace") or "", meta["name"])
            if t.info.plural == "priorityclasses" and one.name in priority.SYSTEM_CLASSES:
                continue  # PC2: kept, where a deletion of one by name is refused
            try:
                deleted.append(self.delete(one, {k: options[k] for k in ("propagationPolicy", "gracePeriodSeconds") if k in options},
                                           dry_run=dry_run))
            except NotFound:
                continue  # deleted by someone else meanwhile: the goal is reached
        return {**listed, "items": deleted}

    # ---- helpers -------------------------------------------------------------------------
    def _updater(self, t: Target, manager: str, via: str | None = None) -> Record:
        """Records a plain write: ``manager`` owns what it changed. A write of the main resource may set
        managedFields itself; a subresource's may not."""
        subresource = t.subresource if via is None else via

        def record(old: dict[str, Any] | None, new: dict[str, Any], changed: dict[str, Any]) -> None:
            self._record(t, old, new, manager, subresource, trust_request=not subresource)

        return record

    def _record(self, t: Target, old: dict[str, Any] | None, new: dict[str, Any], manager: str, subresource: str,
                *, trust_request: bool) -> None:
        live = (old or {}).get("metadata") or {}
        managed = mf.managed_for_write(live.get("managedFields"), new["metadata"].get("managedFields"),
                                       trust_request=trust_request)
        who = mf.Manager.updater(manager, t.info.api_version, subresource)
        try:
            managed = mf.record_update(managed, old or {}, new, MODELS.get(t.info.kind), who, now(), _scope(t))
        except mf.FieldSetError:
            managed = {}  # as Kubernetes: ownership that cannot be computed is dropped, never left wrong
        _set_managed(new, mf.encode_managed(managed))

    def _normalize(self, t: Target, body: Any, fields: FieldValidation | None = None,
                   old: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check kind/apiVersion/namespace against the path and fill them in; returns a private copy.

        ``fields`` drops or rejects fields the kind does not declare (``old``: the object a patch applied to).
        """
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if depth_exceeds(body):  # a patch can nest deeper than its own body; checked before any recursive step
            raise BadRequest(f"the object is not acceptable: {depth_message()}")
        obj = json_copy(body)
        info = t.info
        kind = obj.get("kind") or info.kind
        if kind != info.kind:
            raise BadRequest(f"the kind {kind!r} of the body does not match the resource {info.plural!r} (kind {info.kind!r})")
        api_version = obj.get("apiVersion") or t.version or info.api_version
        if not info.accepts(api_version):
            raise BadRequest(f"apiVersion: {api_version!r} is not served for {info.kind}; use {info.api_version!r}")
        obj["kind"], obj["apiVersion"] = info.kind, api_version
        if fields is not None:  # in the body's own version: autoscaling/v1 has fields v2 lacks, and v2 others
            fields.check(obj, old)
        obj = convert(obj)  # legacy versions imply fields the served version states explicitly
        meta = _meta(obj)
        if not info.crd:  # a custom resource's malformed metadata is dropped, not refused, by Kubernetes
            check_metadata_times(meta, info.kind, api_version)
        if info.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and t.namespace and body_ns != t.namespace:
                raise BadRequest("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = t.namespace or body_ns or "default"
        else:
            meta.pop("namespace", None)
        return obj

    def _checked(self, obj: dict[str, Any], old: dict[str, Any] | None, info: ResourceInfo,
                 version: str = "") -> dict[str, Any]:
        try:
            result = validate(obj, old, request_version=version)
        except Invalid as e:
            raise self._named(e, obj, info) from None
        return result if result is not None else obj

    @staticmethod
    def _named(e: Invalid, obj: dict[str, Any], info: ResourceInfo) -> Invalid:
        if e.kind or e.name:
            return e
        return Invalid(e.errors, kind=info.kind, name=str((obj.get("metadata") or {}).get("name", "")))

    def _write(self, t: Target, change: Callable[[dict[str, Any]], dict[str, Any]], wanted_rv: str | None,
               user: str, dry_run: bool, warnings: list[str] | None, record: Record) -> dict[str, Any]:
        """Read, change, check, write; re-read and retry on a race unless the client set a precondition."""
        for _ in _race_attempts():
            old = self.store.get(t.info.plural, t.store_namespace, t.name)
            obj = changed = change(old)
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
            elif t.info.plural == "pods":
                _keep_ephemeral(obj, old)
                # PC3: Kubernetes' Priority admission, a mutating step its validation then sees.
                obj = priority.admit_pod_update(obj, old)
            obj = _defaulted(obj)
            if t.info.plural == "services":
                nodeports.prepare_update(obj, old)  # K7: kept, or dropped with the type that needed them
            obj = self._checked(obj, old, t.info, t.version)
            if t.info.plural == "pods":
                # As stored, not defaulted again: a node's finalizer write must change nothing else.
                _keep_ephemeral(obj, old)
            record(old, obj, changed)
            saved = self._admit_and_save(t, obj, old, user, wanted_rv, dry_run, warnings)
            if saved is not None:
                return saved
        raise self._conflict(t)

    def _write_status(self, t: Target, change: Callable[[dict[str, Any]], dict[str, Any]], wanted_rv: str | None,
                      dry_run: bool, user: str, record: Record, *, approval: bool = False) -> dict[str, Any]:
        """``approval``: the write comes through a CSR's ``/approval`` (CSR1), the only way to change whether it
        is approved or denied."""
        if not t.info.has_status:
            raise NotFound(f"{t.info.plural} has no status subresource")
        for _ in _race_attempts():
            old = self.store.get(t.info.plural, t.store_namespace, t.name)
            changed = change(copy.deepcopy(old))
            obj = copy.deepcopy(old)
            if "status" in changed:
                obj["status"] = changed["status"]
            else:
                obj.pop("status", None)
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise self._conflict(t)
            if t.info.plural == "persistentvolumes":
                _stamp_phase_transition(obj, old)
            elif t.info.plural == "certificatesigningrequests" and not approval:
                _keep_approval(obj, old)
            try:
                result = validate_status(obj, old)
            except Invalid as e:
                raise self._named(e, obj, t.info) from None
            obj = result if result is not None else obj
            record(old, obj, changed)
            obj = self.admission.admit_status(AdmissionRequest("UPDATE", t.info, obj, old, self.store, user))
            saved = self._save(t, obj, wanted_rv, dry_run)
            if saved is not None:
                return saved
        raise self._conflict(t)

    def _write_ephemeral(self, t: Target, change: Callable[[dict[str, Any]], dict[str, Any]], wanted_rv: str | None,
                         user: str, dry_run: bool, warnings: list[str] | None, record: Record) -> dict[str, Any]:
        """``pods/ephemeralcontainers`` (``kubectl debug``): of what the write sends, only
        ``spec.ephemeralContainers`` is taken. Containers may be added, never changed or removed; each new
        one passes the pod's container rules and Pod Security, as in Kubernetes."""
        for _ in _race_attempts():
            old = self.store.get(t.info.plural, t.store_namespace, t.name)
            changed = change(copy.deepcopy(old))
            wanted = (changed.get("spec") or {}).get("ephemeralContainers") if isinstance(changed.get("spec"), dict) else None
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise self._conflict(t)
            obj = copy.deepcopy(old)
            if wanted:
                obj["spec"]["ephemeralContainers"] = wanted
            else:
                obj["spec"].pop("ephemeralContainers", None)
            validate_ephemeral_containers_update(obj, old)
            # The pod's update rules would refuse any change to its spec: they are checked against the old
            # pod with the new list in place, so only the new containers' own rules apply to them.
            obj = _defaulted(obj)
            baseline = copy.deepcopy(old)
            baseline["spec"]["ephemeralContainers"] = copy.deepcopy(obj["spec"].get("ephemeralContainers") or [])
            obj = self._checked(obj, baseline, t.info)
            record(old, obj, changed)
            saved = self._admit_and_save(t, obj, old, user, wanted_rv, dry_run, warnings)
            if saved is not None:
                return saved
        raise self._conflict(t)

    def _admit_and_save(self, t: Target, obj: dict[str, Any], old: dict[str, Any], user: str, wanted_rv: str | None,
                        dry_run: bool, warnings: list[str] | None) -> dict[str, Any] | None:
        """An update's admission and store write; None when it lost a race the caller should retry."""
        attempt_warnings: list[str] = []  # a retried attempt's warnings replace the lost one's
        obj = self.admission.admit(AdmissionRequest("UPDATE", t.info, obj, old, self.store, user, attempt_warnings,
                                                    dry_run=dry_run))
        if t.info.plural == "services":
            with nodeports.reserved(self.store, obj, old, dry_run=dry_run):  # K7
                saved = self._save(t, obj, wanted_rv, dry_run)
        else:
            saved = self._save(t, obj, wanted_rv, dry_run)
        if saved is not None and warnings is not None:
            warnings.extend(attempt_warnings)
        return saved

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


