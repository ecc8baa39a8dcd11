"""Kubernetes' LimitRanger and ResourceQuota admission plugins (SEMANTICS QL4, QL7, QL10-QL13).

ResourceQuota charges a write to every quota of the namespace before the
object is stored, by updating the quota's ``status.used`` under its
resourceVersion: two creates racing for the last of a quota cannot both win,
since the second one's charge conflicts, re-reads the quota and is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import structlog

from storage.api import podsecurity, priority, quota
from storage.api.names import fill_generated_name
from storage.api.registry import ResourceInfo, by_plural
from storage.api.service_account_token import with_service_account
from storage.errors import Conflict, Forbidden, NotFound, TooManyRequests

log = structlog.get_logger(__name__)

# Conflicts a create may meet on one quota before it gives up; each means another write was charged meanwhile.
MAX_CHARGE_ATTEMPTS = 20


def _forbidden(req: Any, message: str) -> Forbidden:
    meta = req.obj.get("metadata") or {}
    name = str(meta.get("name") or meta.get("generateName") or "")
    return Forbidden(f'{req.resource.plural} "{name}" is forbidden: {message}', kind=req.resource.plural, name=name)


def _namespace(req: Any) -> str:
    return str((req.obj.get("metadata") or {}).get("namespace") or "")


class LimitRanger:
    """QL7: a claim's storage request must lie within the namespace's PersistentVolumeClaim limits, on create
    and on any update that changes the request. QL10, QL13: a new pod gets the Container defaults and must
    then fit every Container and Pod item."""

    def admit(self, req: Any) -> dict[str, Any]:
        if req.resource.plural == "pods":
            return self._admit_pod(req)
        if req.resource.plural != "persistentvolumeclaims":
            return req.obj
        if req.operation == "UPDATE" and req.old is not None and \
                quota.claim_request(req.obj) == quota.claim_request(req.old):
            return req.obj  # finalizers, labels, binding: never refused for a limit set after the claim
        ranges, _ = req.store.list("limitranges", _namespace(req))
        errors = quota.claim_limit_violations(ranges, req.obj)
        if errors:
            raise _forbidden(req, quota.aggregate(errors))
        return req.obj

    def _admit_pod(self, req: Any) -> dict[str, Any]:
        # A pod's containers cannot change after create, so Kubernetes neither defaults nor judges updates.
        if req.operation != "CREATE":
            return req.obj
        ranges, _ = req.store.list("limitranges", _namespace(req))
        pod = quota.default_pod_resources(req.obj, ranges)
        # Kubernetes stops at the first LimitRange the pod breaks and lists all of that one's violations.
        for limit_range in ranges:
            errors = quota.pod_limit_violations(limit_range, pod)
            if errors:
                raise _forbidden(req, quota.aggregate(errors))
        return pod


class ResourceQuotaAdmission:
    """QL4: refuse a write that would take any quota of its namespace past status.hard, else charge it."""

    def admit(self, req: Any) -> dict[str, Any]:
        if not req.resource.namespaced or req.resource.plural == "resourcequotas":
            return req.obj
        if req.operation == "UPDATE" and req.resource.plural != "persistentvolumeclaims":
            return req.obj  # only a claim's resize changes what an existing object holds
        namespace = _namespace(req)
        quotas, _ = req.store.list("resourcequotas", namespace)
        if req.resource.plural == "pods":
            # QL12: checked on every quota before any usage, as Kubernetes' checkRequest does.
            for current in quotas:
                if quota.is_scoped(current):
                    continue
                missing = quota.pod_quota_constraints((current.get("status") or {}).get("hard") or {}, req.obj)
                if missing is not None:
                    name = (current.get("metadata") or {}).get("name", "")
                    raise _forbidden(req, f"failed quota: {name}: {missing}")
        requested = quota.delta(req.resource.plural, req.obj, req.old if req.operation == "UPDATE" else None)
        if not requested:
            return req.obj
        # Every quota is judged before any is charged, so a write refused by one leaves the others untouched.
        for current in quotas:
            if not quota.is_scoped(current):
                _, refusal = quota.charge(current, requested)
                if refusal is not None:
                    raise _forbidden(req, refusal)
        for name in sorted(str((q.get("metadata") or {}).get("name", "")) for q in quotas):
            self._charge_one(req, namespace, name, requested)
        return req.obj

    def _charge_one(self, req: Any, namespace: str, name: str, requested: quota.Usage) -> None:
        for _ in range(MAX_CHARGE_ATTEMPTS):
            try:
                current = req.store.get("resourcequotas", namespace, name)
            except NotFound:  # deleted meanwhile: nothing to charge
                return
            if quota.is_scoped(current):
                return  # scopes select pods by class of service; Stowage does not evaluate them (QL9)
            used, refusal = quota.charge(current, requested)
            if refusal is not None:
                raise _forbidden(req, refusal)
            if used is None or req.dry_run:
                return
            status = {**(current.get("status") or {}), "used": used}
            try:
                req.store.update("resourcequotas", {**current, "status": status})
                return
            except Conflict:
                continue  # someone else charged or recomputed it: judge again on what is there now
        log.warning("quota charge gave up after conflicts", namespace=namespace, quota=name)
        # 429 with Retry-After: clients (client-go, kubectl) send the write again by themselves.
        raise TooManyRequests(f'Operation cannot be fulfilled on resourcequotas "{name}": too many concurrent '
                              "writes charged this quota; please retry", retry_after=1)


@dataclass(frozen=True)
class _ControllerCreate:
    """What the plugins read of a request, for a create a controller writes to the store itself."""

    resource: ResourceInfo
    obj: dict[str, Any]
    store: Any
    operation: str = "CREATE"
    old: dict[str, Any] | None = None
    dry_run: bool = False


def admit_controller_create(store: Any, plural: str, obj: dict[str, Any], *,
                            pod_security_default: str = podsecurity.BASELINE) -> dict[str, Any]:
    """QL16: the LimitRanger, Pod Security and ResourceQuota admission of a create a controller writes to the
    store itself (a StatefulSet's pods and claims, a ReplicaSet's, DaemonSet's or Job's pods, a CronJob's
    jobs, an ephemeral volume's claim), in the API server's order, as Kubernetes' controllers create through
    the API server and so through its admission. ``pod_security_default`` is the API server's level for
    namespaces without labels (PS1). Returns the object to store (LimitRange defaults applied); raises
    Forbidden (a limit, Pod Security, a quota) or TooManyRequests (charges in contention), which the
    controller reports as FailedCreate and retries with back-off."""
    info = by_plural(plural)
    if info is None:
        raise ValueError(f"unknown resource {plural}")
    # As the API server names it before its validating admission: a refusal names the pod it refused.
    obj = {**obj, "metadata": dict(obj.get("metadata") or {})}
    fill_generated_name(obj["metadata"])
    if plural == "pods":
        obj = with_service_account(store, obj)  # PS2: the pod's token, as for any pod
        obj = priority.admit_pod_create(store, obj)  # PC3: the class's priority, as for any pod
    request = _ControllerCreate(info, obj, store)
    obj = LimitRanger().admit(request)
    if plural == "pods":
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or meta.get("generateName") or "")
        refusal = podsecurity.refusal_for_namespace(
            store, str(meta.get("namespace") or "default"), meta, obj.get("spec"),
            podsecurity.LevelVersion(pod_security_default, podsecurity.LATEST), name)
        if refusal is not None:
            raise Forbidden(refusal, kind="pods", name=name)
    return ResourceQuotaAdmission().admit(replace(request, obj=obj))
