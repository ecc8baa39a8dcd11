"""The namespace controller: empties a Terminating namespace, then lets it go (SEMANTICS N3).

Everything namespaced in it is deleted the ordinary way, so each object's own
finalizers still run: pods stop gracefully through their node agent's
finalizer, claims wait for their pods (pvc-protection) and their volumes
follow their reclaim policy. Only when nothing is left, read from the store
rather than the cache, does the ``kubernetes`` finalizer come off.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable

import structlog

from storage.api.namespaces import SPEC_FINALIZER, TERMINATING, without_guard_when_final
from storage.api.registry import RESOURCES
from storage.api.timestamps import now
from storage.controllers.base import Reconciler, Result, split_key
from storage.controllers.owners import publish
from storage.errors import NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

NAMESPACED = tuple(r.plural for r in RESOURCES if r.namespaced)
# A safety net under the events: look again this often while content remains.
RECHECK_SECONDS = 5.0


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


class NamespaceReconciler(Reconciler):
    name = "namespace"
    primary = "namespaces"

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {plural: self._terminating_namespace for plural in NAMESPACED}

    def _terminating_namespace(self, obj: Obj) -> list[str]:
        namespace = _meta(obj).get("namespace") or ""
        ns = self.ctx.cache.get("namespaces", "", namespace) if namespace else None
        return [namespace] if ns is not None and _meta(ns).get("deletionTimestamp") else []

    def reconcile(self, key: str) -> Result:
        _, name = split_key(key)
        ns = self.ctx.cache.get("namespaces", "", name)
        if ns is None:
            return Result()
        if not _meta(ns).get("deletionTimestamp"):
            if (ns.get("status") or {}).get("phase") == TERMINATING:
                # The API server marked it and stopped before deleting: finish its work.
                self.ctx.store.delete("namespaces", "", name)
            return Result()
        if (ns.get("status") or {}).get("phase") != TERMINATING:
            ns = self._set_status(ns, [])
        remaining: dict[str, int] = {}
        for plural in NAMESPACED:
            for obj in self.ctx.cache.list(plural, name):
                remaining[plural] = remaining.get(plural, 0) + 1
                if not _meta(obj).get("deletionTimestamp"):
                    self._delete(plural, name, obj)
        if remaining or self._store_has_content(name):
            self._set_status(ns, sorted(remaining))
            return Result(requeue_after=RECHECK_SECONDS)
        finalizers = [f for f in (ns.get("spec") or {}).get("finalizers") or [] if f != SPEC_FINALIZER]
        done = copy.deepcopy(ns)
        done.setdefault("spec", {})["finalizers"] = finalizers
        if not finalizers:
            done["spec"].pop("finalizers")
        without_guard_when_final(done)
        if done != ns:
            self.ctx.store.update("namespaces", done)
            log.info("namespace_finalized", namespace=name)
        return Result()

    def _delete(self, plural: str, namespace: str, obj: Obj) -> None:
        try:
            last = self.ctx.store.delete(plural, namespace, _meta(obj)["name"])
        except NotFound:
            return
        if _meta(last).get("finalizers"):
            publish(self.ctx.cache, plural, last)  # marked, not gone: its DELETED event comes later

    def _store_has_content(self, namespace: str) -> bool:
        """The cache may lag a create that raced the deletion: the store decides before the namespace goes."""
        return any(self.ctx.store.list(plural, namespace)[0] for plural in NAMESPACED)

    def _set_status(self, ns: Obj, remaining: list[str]) -> Obj:
        status = copy.deepcopy(ns.get("status") or {})
        status["phase"] = TERMINATING
        if remaining:
            cond = {"type": "NamespaceContentRemaining", "status": "True", "reason": "SomeResourcesRemain",
                    "message": f"Some resources are remaining: {', '.join(remaining)}"}
        else:
            cond = {"type": "NamespaceContentRemaining", "status": "False", "reason": "ContentDeleted",
                    "message": "All content successfully removed"}
        others = [c for c in status.get("conditions") or [] if c.get("type") != cond["type"]]
        previous = next((c for c in status.get("conditions") or [] if c.get("type") == cond["type"]), None)
        if previous is not None and all(previous.get(k) == cond[k] for k in cond):
            cond = previous
        else:
            cond["lastTransitionTime"] = now()
        status["conditions"] = [*others, cond]
        if status == ns.get("status"):
            return ns
        updated = copy.deepcopy(ns)
        updated["status"] = status
        return publish(self.ctx.cache, "namespaces", self.ctx.store.update("namespaces", updated))


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [NamespaceReconciler]
