"""The resource quota controller (SEMANTICS QL5): ``status.hard`` follows ``spec.hard`` and ``status.used`` is
recomputed from the namespace's objects, so deletions give quota back and a charge whose write then failed
is corrected.

Level-triggered: any change of a quota or of an object some quota may count requeues the quotas of that
namespace; ``calculate_changes`` decides from the cache alone.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import structlog

from storage.api import quota
from storage.api.quantity import canonical
from storage.api.registry import RESOURCES
from storage.controllers.base import Reconciler, Result, split_key
from storage.errors import NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

# Kinds never worth counting: every write of them would requeue the namespace's quotas for nothing useful.
_NOT_WATCHED = frozenset({"resourcequotas", "events", "leases"})


def _canonical(values: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        try:
            out[name] = canonical(value)
        except (TypeError, ValueError):
            out[name] = str(value)
    return out


def calculate_changes(resource_quota: Obj, objects: Mapping[str, Iterable[Obj]]) -> Obj | None:
    """The status the quota should have, or None when it has it already. ``objects``: the namespace's objects by
    resource, including those being deleted (they hold their quota until they are gone, as in Kubernetes)."""
    hard = _canonical((resource_quota.get("spec") or {}).get("hard") or {})
    used = quota.compute_used(hard, objects)
    wanted = {"hard": hard, "used": used}
    status = resource_quota.get("status") or {}
    if _canonical(status.get("hard") or {}) == hard and _canonical(status.get("used") or {}) == used:
        return None
    return {**status, **wanted}


class ResourceQuotaReconciler(Reconciler):
    name = "resourcequota"
    primary = "resourcequotas"

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        def quotas_of(obj: Obj) -> list[str]:
            namespace = (obj.get("metadata") or {}).get("namespace") or ""
            if not namespace:
                return []
            return [f"{namespace}/{(q.get('metadata') or {}).get('name')}"
                    for q in self.ctx.cache.list("resourcequotas", namespace)]

        return {r.plural: quotas_of for r in RESOURCES
                if r.namespaced and r.stored and r.plural not in _NOT_WATCHED}

    def relevant(self, resource: str, old: Obj | None, new: Obj | None) -> bool:
        """QL15: as Kubernetes' quota controller, usage is recomputed when it can have gone down (a deletion, a pod
        that finished) or the quota's spec changed, not on the creates and charges admission accounts for: a
        recompute between a create's charge and its write would leave that create out and let another through."""
        if resource == "resourcequotas":
            return old is None or new is None or old.get("spec") != new.get("spec")
        namespace = ((new or old or {}).get("metadata") or {}).get("namespace") or ""
        if not namespace or not self.ctx.cache.list("resourcequotas", namespace):
            return False
        if new is None:
            return True
        if old is None:
            return False
        return quota.usage(resource, new) != quota.usage(resource, old)

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        cache = self.ctx.cache
        current = cache.get("resourcequotas", namespace, name)
        if current is None:
            return Result()
        hard = (current.get("spec") or {}).get("hard") or {}
        plurals = {p for p in (quota.resource_of(n) for n in hard) if p is not None}
        objects = {p: cache.list(p, namespace) for p in plurals}
        status = calculate_changes(current, objects)
        if status is None:
            return Result()
        try:
            # Under the cached resourceVersion: a charge admission made meanwhile conflicts, and the manager
            # requeues this key to recompute on top of it.
            self.ctx.store.update("resourcequotas", {**current, "status": status})
        except NotFound:
            return Result()
        log.info("quota status updated", namespace=namespace, quota=name, used=status["used"])
        return Result()


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [ResourceQuotaReconciler]
