"""``POST .../pods/<name>/eviction``: a graceful delete that respects the pod's disruption budget.

After Kubernetes' ``EvictionREST.Create``: a pod that disrupts nothing (Pending, finished,
already terminating) is simply deleted; otherwise the one PodDisruptionBudget that selects it
must allow a disruption, which is taken (``disruptionsAllowed`` decremented, the pod recorded in
``disruptedPods``) with optimistic concurrency on the budget before the pod is deleted. Rules E1-E12
(docs/semantics.md); the decisions themselves are the pure functions of ``storage.api.disruption``.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any, Callable

from pydantic import ValidationError

from storage.api import disruption as d
from storage.api.models.policy import Eviction
from storage.api.registry import by_plural
from storage.api.timestamps import format_time
from storage.api.validation import pydantic_field_errors
from storage.apiserver import namespaces
from storage.apiserver.handlers import Handlers, Target
from storage.errors import BadRequest, Conflict, FieldError, Forbidden, Invalid, StowageError

Obj = dict[str, Any]

EVICTION_VERSIONS = ("policy/v1", "policy/v1beta1")  # kubectl 1.20 still sends v1beta1 bodies
# Kubernetes retries a lost race on the pod or the budget this often (EvictionsRetry) before it gives up.
RETRIES = 20
_PODS = by_plural("pods")
_NODE_PREFIX = "system:node:"
SUCCESS: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


class Timeout(StowageError):
    code, reason = 504, "Timeout"


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def parse_eviction(body: Any, namespace: str, name: str, query_dry_run: bool) -> Obj:
    """E1: the Eviction body checked (kind, version, name and namespace, DeleteOptions); returns its
    DeleteOptions with the query's dryRun folded in, as Kubernetes' propagateDryRun."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    kind, version = body.get("kind") or "Eviction", body.get("apiVersion") or "policy/v1"
    if kind != "Eviction" or version not in EVICTION_VERSIONS:
        raise BadRequest(f"the body of pods/eviction must be an Eviction ({' or '.join(EVICTION_VERSIONS)}), "
                         f"not {version} {kind}")
    try:
        eviction = Eviction.model_validate(body).model_dump(by_alias=True, exclude_none=True, mode="json")
    except ValidationError as exc:
        raise Invalid(pydantic_field_errors(exc), kind="Eviction", name=name) from None
    meta = _meta(eviction)
    if meta.get("name") != name:
        raise BadRequest("name in URL does not match name in Eviction object")
    if meta.get("namespace") and meta["namespace"] != namespace:
        raise BadRequest("the namespace of the provided object does not match the namespace sent on the request")
    options = dict(eviction.get("deleteOptions") or {})
    errors: list[FieldError] = []
    policy = options.get("propagationPolicy")
    if policy is not None and options.get("orphanDependents") is not None:
        errors.append(FieldError("propagationPolicy", "Invalid value", "orphanDependents and deletionPropagation "
                                 "cannot be both set", policy, True))
    if policy is not None and policy not in ("Foreground", "Background", "Orphan"):
        errors.append(FieldError("propagationPolicy", "Unsupported value",
                                 'supported values: "Foreground", "Background", "Orphan", "nil"', policy, True))
    for value in options.get("dryRun") or []:
        if value != "All":
            errors.append(FieldError("dryRun", "Unsupported value", 'supported values: "All"', value, True))
    if errors:
        raise Invalid(errors, kind="Eviction", name=name)
    if query_dry_run:  # "All" is the only value either may hold, so the two always agree
        options["dryRun"] = ["All"]
    return options


def _is_dry_run(options: Obj) -> bool:
    return "All" in (options.get("dryRun") or [])


def _rv_precondition(options: Obj) -> str | None:
    return (options.get("preconditions") or {}).get("resourceVersion") or None


def _with_rv(options: Obj, rv: str) -> Obj:
    out = copy.deepcopy(options)
    out.setdefault("preconditions", {})["resourceVersion"] = rv
    return out


def _check_preconditions(pod: Obj, options: Obj) -> None:
    preconditions = options.get("preconditions") or {}
    meta = _meta(pod)
    name = str(meta.get("name"))
    if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
        raise Conflict(f'Precondition failed: UID in precondition: {preconditions["uid"]}, UID in object meta: '
                       f'{meta.get("uid")}', kind="pods", name=name)
    rv = preconditions.get("resourceVersion")
    if rv and rv != meta.get("resourceVersion"):
        raise Conflict(f"Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object "
                       f"meta: {meta.get('resourceVersion')}", kind="pods", name=name)


class EvictionHandler:
    def __init__(self, handlers: Handlers, clock: Callable[[], datetime] | None = None) -> None:
        self.handlers = handlers
        self.store = handlers.store
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def evict(self, namespace: str, name: str, body: Any, *, user: str = "", dry_run: bool = False) -> tuple[Obj, int]:
        """(the Status to answer, its HTTP code)."""
        options = parse_eviction(body, namespace, name, dry_run)
        namespaces.check_create(self.store, _PODS, {"metadata": {"name": name, "namespace": namespace}})
        pod = self._pod(namespace, name)
        self._node_may_evict(user, pod)
        # Unlike Kubernetes (which checks them only when it deletes, after spending the budget), a request
        # whose preconditions cannot hold is refused before it touches the budget.
        _check_preconditions(pod, options)

        # E3: nothing to protect; delete (naming the version seen, unless the client named one) and be done.
        original_rv = _rv_precondition(options)
        for attempt in range(RETRIES):
            if not d.can_ignore_budget(pod):
                break
            chosen = options
            if d.enforces_resource_version(pod) and original_rv is None:
                chosen = _with_rv(options, str(_meta(pod).get("resourceVersion")))
            try:
                self._delete(namespace, name, chosen)
                return SUCCESS, 201
            except Conflict:
                if original_rv is not None or attempt == RETRIES - 1:
                    raise
                pod = self._pod(namespace, name)

        budgets = [b for b in self.store.list("poddisruptionbudgets", namespace)[0] if d.guards_for_eviction(b, pod)]
        if len(budgets) > 1:  # E10
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": d.MORE_THAN_ONE_BUDGET, "code": 500}, 500
        delete_options = options
        budget_name = ""
        if budgets:
            pdb = budgets[0]
            budget_name = str(_meta(pdb).get("name"))
            if self._unhealthy_may_go(pdb, pod):
                # E11: an unready pod leaves without taking a disruption, if it is still unready when deleted.
                delete_options = _with_rv(options, str(_meta(pod).get("resourceVersion")))
            else:
                self._take_disruption(pdb, name, _is_dry_run(options))
        try:
            self._delete(namespace, name, delete_options)
        except Conflict:
            if delete_options is not options and original_rv is None:
                raise d.refused(f"The disruption budget {budget_name} is still being processed by the server.") from None
            raise
        return SUCCESS, 201

    # ---- steps -----------------------------------------------------------------------------

    def _pod(self, namespace: str, name: str) -> Obj:
        return self.handlers.get(Target(_PODS, namespace, name))

    @staticmethod
    def _node_may_evict(user: str, pod: Obj) -> None:
        """NodeRestriction: a node evicts only pods bound to itself."""
        if user.startswith(_NODE_PREFIX):
            node = user[len(_NODE_PREFIX):]
            if (pod.get("spec") or {}).get("nodeName") != node:
                name = str(_meta(pod).get("name"))
                raise Forbidden(f'pods "{name}" is forbidden: node "{node}" can only evict pods with spec.nodeName '
                                "set to itself", kind="pods", name=name)

    @staticmethod
    def _unhealthy_may_go(pdb: Obj, pod: Obj) -> bool:
        if d.pod_ready(pod):
            return False
        if (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") == d.ALWAYS_ALLOW:
            return True
        status = pdb.get("status") or {}
        desired = int(status.get("desiredHealthy") or 0)
        return int(status.get("currentHealthy") or 0) >= desired and desired > 0

    def _take_disruption(self, pdb: Obj, pod_name: str, dry_run: bool) -> None:
        """E7, E9: verify-and-decrement under optimistic concurrency, re-reading the budget on every lost race."""
        namespace, name = str(_meta(pdb).get("namespace")), str(_meta(pdb).get("name"))
        for attempt in range(RETRIES):
            if attempt:
                pdb = self.store.get("poddisruptionbudgets", namespace, name)
            updated = d.decremented(pdb, pod_name, self.clock(), dry_run)
            if dry_run:
                return
            try:
                self.store.update("poddisruptionbudgets", updated)
                return
            except Conflict:
                continue
        raise Timeout(f'couldn\'t update PodDisruptionBudget "{name}" due to conflicts')

    def _delete(self, namespace: str, name: str, options: Obj) -> None:
        """E12: mark the pod (DisruptionTarget) and delete it gracefully through the ordinary delete path."""
        if not _is_dry_run(options):
            options = self._mark_disruption_target(namespace, name, options)
        self.handlers.delete(Target(_PODS, namespace, name), options, dry_run=_is_dry_run(options))

    def _mark_disruption_target(self, namespace: str, name: str, options: Obj) -> Obj:
        for _attempt in range(RETRIES):
            marked = self._mark_once(namespace, name, options)
            if marked is not None:
                return marked
        raise Timeout(f'couldn\'t mark pod "{name}" for eviction due to conflicts')

    def _mark_once(self, namespace: str, name: str, options: Obj) -> Obj | None:
        """The options to delete with; None when another writer changed the pod meanwhile (read again)."""
        pod = self.store.get("pods", namespace, name)
        _check_preconditions(pod, options)
        rv = _rv_precondition(options)
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return options  # a finished pod keeps its final status
        status = pod.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        wanted = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                  "message": "Eviction API: evicting"}
        current = next((c for c in conditions if c.get("type") == "DisruptionTarget"), None)
        if current is not None and all(current.get(k) == v for k, v in wanted.items()):
            return options
        if current is None:
            conditions.append({**wanted, "lastProbeTime": None, "lastTransitionTime": format_time(self.clock())})
        else:
            if current.get("status") != "True":
                current["lastTransitionTime"] = format_time(self.clock())
            current.update(wanted)
        try:
            saved = self.store.update("pods", pod)
        except Conflict:
            return None
        return _with_rv(options, str(_meta(saved).get("resourceVersion"))) if rv else options


__all__ = ["EvictionHandler", "SUCCESS", "parse_eviction"]
