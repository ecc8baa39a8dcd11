"""The disruption controller: keeps each PodDisruptionBudget's status, which evictions then spend.

``calculate_changes`` (pure) computes the status as Kubernetes' disruption controller does: the
selected pods, how many of them are healthy, how many must stay healthy (``minAvailable`` or
``maxUnavailable``, percentages of the pods' controllers' replicas), how many disruptions that
allows, the ``DisruptionAllowed`` condition, and which recorded evictions are still pending. The
reconciler reads a budget and its pods from the cache, writes the status when it changed (with
the budget's resourceVersion: an eviction that spent a disruption meanwhile wins, and the status
is computed again), and looks again when a pending eviction expires. Rules E4-E8.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Literal

from storage.api import disruption as d
from storage.controllers.base import Reconciler, Result, object_key, split_key
from storage.controllers.owners import controller_ref, publish

Obj = dict[str, Any]
Getter = Callable[[str, str, str], "Obj | None"]  # (resource, namespace, name) -> object


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _replicas(obj: Obj) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def _group(ref: Obj) -> str:
    api_version = str(ref.get("apiVersion") or "")
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def controller_scale(ref: Obj, namespace: str, get: Getter) -> int | None:
    """The replicas of a pod's controller, as Kubernetes' finders: ReplicationController, Deployment
    (through its ReplicaSet), a ReplicaSet no Deployment controls, StatefulSet. None: no such controller."""
    kind, group = ref.get("kind"), _group(ref)

    def owned(resource: str) -> Obj | None:
        obj = get(resource, namespace, str(ref.get("name") or ""))
        return obj if obj is not None and _meta(obj).get("uid") == ref.get("uid") else None

    if kind == "ReplicationController" and group == "":
        rc = owned("replicationcontrollers")
        return _replicas(rc) if rc is not None else None
    if kind == "StatefulSet" and group == "apps":
        sts = owned("statefulsets")
        return _replicas(sts) if sts is not None else None
    if kind == "ReplicaSet" and group in ("apps", "extensions"):
        rs = owned("replicasets")
        if rs is None:
            return None
        parent = controller_ref(rs)
        if parent is None or parent.get("kind") != "Deployment":
            return _replicas(rs)
        deployment = get("deployments", namespace, str(parent.get("name") or ""))
        if deployment is None or _meta(deployment).get("uid") != parent.get("uid"):
            return None
        return _replicas(deployment)
    return None


@dataclass
class Plan:
    status: Obj | None  # the new status; None when the stored one is right
    recheck_after: float | None = None  # seconds until a recorded eviction expires
    events: list[tuple[Obj, Literal["Normal", "Warning"], str, str]] = field(default_factory=list)


def calculate_changes(pdb: Obj, pods: list[Obj], scale_of: Callable[[Obj], int | None], now: datetime) -> Plan:
    """The status ``pdb`` should have, given the pods it selects (E4-E8)."""
    current = pdb.get("status") or {}
    events: list[tuple[Obj, Literal["Normal", "Warning"], str, str]] = []
    try:
        expected, desired, unmanaged = d.expected_and_desired(pdb, pods, scale_of)
    except d.BudgetError as exc:
        # Kubernetes' failSafe: allow nothing and say why; observedGeneration stays, so evictions wait.
        status = copy.deepcopy(current)
        status["disruptionsAllowed"] = 0
        d.set_condition(status, d.DISRUPTION_ALLOWED, "False", d.SYNC_FAILED, str(exc), now)
        if status == current:
            return Plan(None)
        return Plan(status, events=[(pdb, "Warning", "CalculateExpectedPodCountFailed",
                                     f"Failed to calculate the number of expected pods: {exc}")])
    kept, recheck, expired = d.disrupted_pods(pdb, pods, now)
    healthy = d.count_healthy(pods, kept, now)
    allowed = healthy - desired
    if expected <= 0 or allowed <= 0:
        allowed = 0
    status: Obj = {
        "observedGeneration": int(_meta(pdb).get("generation") or 0),
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": copy.deepcopy(current.get("conditions") or []),
    }
    if kept:
        status["disruptedPods"] = kept
    d.update_allowed_condition(status, now)
    recheck_after = max(0.0, (recheck - now).total_seconds()) + 0.5 if recheck is not None else None
    if status == current:
        return Plan(None, recheck_after)
    if not pods:
        events.append((pdb, "Normal", "NoPods", "No matching pods found"))
    if unmanaged:
        selector = (pdb.get("spec") or {}).get("selector")
        events.append((pdb, "Warning", "UnmanagedPods",
                       f"Pods selected by this PodDisruptionBudget (selector: {selector}) were found to be unmanaged. "
                       "As a result, the status of the PDB cannot be calculated correctly, which may result in "
                       'undefined behavior. To account for these pods please set ".spec.minAvailable" field of the '
                       "PDB to an integer value."))
    by_name = {_meta(p).get("name"): p for p in pods}
    for name in expired:
        events.append((by_name[name], "Warning", "NotDeleted",
                       f"Pod was expected by PDB {_meta(pdb).get('namespace')}/{_meta(pdb).get('name')} to be "
                       "deleted but it wasn't"))
    return Plan(status, recheck_after, events)


class DisruptionReconciler(Reconciler):
    name = "disruption"
    primary = "poddisruptionbudgets"

    def __init__(self, ctx: Any, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(ctx)
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        in_namespace = self._budgets_in_namespace
        return {"pods": self._budgets_of_pod, "statefulsets": in_namespace, "replicasets": in_namespace,
                "deployments": in_namespace, "replicationcontrollers": in_namespace}

    def _budgets_of_pod(self, pod: Obj) -> list[str]:
        namespace = _meta(pod).get("namespace") or ""
        return [object_key(b) for b in self.ctx.cache.list("poddisruptionbudgets", namespace)
                if d.selects_for_status(b, pod)]

    def _budgets_in_namespace(self, owner: Obj) -> list[str]:
        return [object_key(b) for b in self.ctx.cache.list("poddisruptionbudgets", _meta(owner).get("namespace") or "")]

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        cache = self.ctx.cache
        pdb = cache.get("poddisruptionbudgets", namespace, name)
        if pdb is None:
            return Result()
        pods = [p for p in cache.list("pods", namespace) if d.selects_for_status(pdb, p)]
        ns = _meta(pdb).get("namespace") or ""
        plan = calculate_changes(pdb, pods, lambda ref: controller_scale(ref, ns, cache.get), self.clock())
        if plan.status is not None:
            updated = copy.deepcopy(pdb)
            updated["status"] = plan.status
            publish(cache, "poddisruptionbudgets", self.ctx.store.update("poddisruptionbudgets", updated))
            for obj, kind, reason, message in plan.events:
                self.ctx.events.record(obj, kind, reason, message)
        return Result(requeue_after=plan.recheck_after)


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [DisruptionReconciler]
