"""Garbage collection through ownerReferences, with Kubernetes' propagation policies.

- Background (the default): the owner goes at once; a dependent all of whose
  owners are gone (by uid) is deleted; owner references to vanished owners are
  dropped from a dependent that still has a live owner.
- Orphan: the API server leaves the owner with the ``orphan`` finalizer; the
  collector removes the owner's references from its dependents, then the finalizer.
- Foreground: the owner stays with ``foregroundDeletion``; the collector deletes
  its dependents and removes the finalizer once none with
  ``blockOwnerDeletion`` remains.

Keys are ``resource:namespace/name`` (every object is both a possible owner and
a possible dependent). Absence of an owner is confirmed against the store, so a
lagging cache never deletes a dependent whose owner was just created.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable

import structlog

from storage.api.registry import RESOURCES, by_kind
from storage.controllers.base import Reconciler, Result, object_key, split_key
from storage.controllers.owners import owner_refs, publish
from storage.errors import NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
# Events never own anything and are written constantly: not worth a look each time.
_SKIPPED = {"events"}


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def gc_key(resource: str, obj: Obj) -> str:
    return f"{resource}:{object_key(obj)}"


class GarbageCollector(Reconciler):
    name = "garbage-collector"
    primary = "*"  # keys come from watches(): every resource maps to its own keys

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {r.plural: self._mapper(r.plural) for r in RESOURCES if r.stored and r.plural not in _SKIPPED}

    def _mapper(self, resource: str) -> Callable[[Obj], Iterable[str]]:
        def keys(obj: Obj) -> list[str]:
            out = [gc_key(resource, obj)]
            namespace = _meta(obj).get("namespace") or ""
            for ref in owner_refs(obj):
                owner_resource = self._resource_of(ref)
                if owner_resource is not None:
                    owner_ns = namespace if by_kind(ref["kind"]).namespaced else ""  # type: ignore[union-attr]
                    out.append(f"{owner_resource}:{owner_ns + '/' if owner_ns else ''}{ref.get('name', '')}")
            current = self.ctx.cache.get(resource, namespace, _meta(obj).get("name", ""))
            if current is None or _meta(current).get("uid") != _meta(obj).get("uid"):
                # It is gone: its dependents may now be garbage.
                out.extend(gc_key(r, d) for r, d in self._dependents(_meta(obj).get("uid", ""), namespace))
            return out

        return keys

    @staticmethod
    def _resource_of(ref: Obj) -> str | None:
        info = by_kind(ref.get("kind", ""))
        return info.plural if info is not None else None

    def _dependents(self, uid: str, namespace: str) -> list[tuple[str, Obj]]:
        if not uid:
            return []
        found: list[tuple[str, Obj]] = []
        for info in RESOURCES:
            if info.plural in _SKIPPED or not info.stored:
                continue
            scope = namespace if info.namespaced else ""
            if info.namespaced and not namespace:
                scope = None  # a cluster-scoped owner may own namespaced objects anywhere
            for obj in self.ctx.cache.list(info.plural, scope):
                if any(r.get("uid") == uid for r in owner_refs(obj)):
                    found.append((info.plural, obj))
        return found

    def reconcile(self, key: str) -> Result:
        resource, _, rest = key.partition(":")
        namespace, name = split_key(rest)
        obj = self.ctx.cache.get(resource, namespace, name)
        if obj is None:
            return Result()
        finalizers = _meta(obj).get("finalizers") or []
        if _meta(obj).get("deletionTimestamp") and ORPHAN in finalizers:
            self._orphan_dependents(resource, obj)
            return Result()
        if _meta(obj).get("deletionTimestamp") and FOREGROUND in finalizers:
            self._delete_dependents_first(resource, obj)
        if owner_refs(obj):
            self._collect_if_orphaned(resource, obj)
        return Result()

    # --- owner side ------------------------------------------------------
    def _orphan_dependents(self, resource: str, owner: Obj) -> None:
        uid = _meta(owner).get("uid", "")
        for dep_resource, dep in self._dependents(uid, _meta(owner).get("namespace") or ""):
            updated = copy.deepcopy(dep)
            updated["metadata"]["ownerReferences"] = [r for r in owner_refs(dep) if r.get("uid") != uid]
            if not updated["metadata"]["ownerReferences"]:
                del updated["metadata"]["ownerReferences"]
            publish(self.ctx.cache, dep_resource, self.ctx.store.update(dep_resource, updated))
        self._drop_finalizer(resource, owner, ORPHAN)

    def _delete_dependents_first(self, resource: str, owner: Obj) -> None:
        uid = _meta(owner).get("uid", "")
        blocking = 0
        for dep_resource, dep in self._dependents(uid, _meta(owner).get("namespace") or ""):
            ref = next(r for r in owner_refs(dep) if r.get("uid") == uid)
            if not _meta(dep).get("deletionTimestamp"):
                self._delete(dep_resource, dep, foreground=True)
            if ref.get("blockOwnerDeletion") and self._exists(dep_resource, dep):
                blocking += 1
        if blocking == 0:
            self._drop_finalizer(resource, owner, FOREGROUND)

    def _drop_finalizer(self, resource: str, owner: Obj, finalizer: str) -> None:
        updated = copy.deepcopy(owner)
        updated["metadata"]["finalizers"] = [f for f in _meta(owner).get("finalizers") or [] if f != finalizer]
        self.ctx.store.update(resource, updated)  # its MODIFIED or DELETED event updates the cache

    # --- dependent side --------------------------------------------------
    def _owner_state(self, dependent: Obj, ref: Obj) -> str:
        """"present", "absent" or "unknown" (a kind Stowage does not serve)."""
        info = by_kind(ref.get("kind", ""))
        if info is None:
            return "unknown"
        namespace = (_meta(dependent).get("namespace") or "") if info.namespaced else ""
        cached = self.ctx.cache.get(info.plural, namespace, ref.get("name", ""))
        if cached is not None and _meta(cached).get("uid") == ref.get("uid"):
            return "present"
        try:
            live = self.ctx.store.get(info.plural, namespace, ref.get("name", ""))
        except NotFound:
            return "absent"
        return "present" if _meta(live).get("uid") == ref.get("uid") else "absent"

    def _collect_if_orphaned(self, resource: str, dependent: Obj) -> None:
        refs = owner_refs(dependent)
        states = [self._owner_state(dependent, r) for r in refs]
        if all(s == "absent" for s in states):
            if not _meta(dependent).get("deletionTimestamp"):
                log.info("gc.delete", resource=resource, name=_meta(dependent).get("name"))
                self._delete(resource, dependent)
            return
        dangling = {r.get("uid") for r, s in zip(refs, states) if s == "absent"}
        if dangling:
            updated = copy.deepcopy(dependent)
            updated["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") not in dangling]
            publish(self.ctx.cache, resource, self.ctx.store.update(resource, updated))

    def _exists(self, resource: str, obj: Obj) -> bool:
        try:
            live = self.ctx.store.get(resource, _meta(obj).get("namespace") or "", _meta(obj)["name"])
        except NotFound:
            return False
        return _meta(live).get("uid") == _meta(obj).get("uid")

    def _delete(self, resource: str, obj: Obj, *, foreground: bool = False) -> None:
        namespace = _meta(obj).get("namespace") or ""
        try:
            cascades = foreground and FOREGROUND not in (_meta(obj).get("finalizers") or []) and bool(
                self._dependents(_meta(obj).get("uid", ""), namespace))
            if cascades:
                # Foreground propagates: the dependent waits for its own dependents in turn.
                marked = copy.deepcopy(obj)
                marked["metadata"]["finalizers"] = [*(_meta(obj).get("finalizers") or []), FOREGROUND]
                self.ctx.store.update(resource, marked)
            last = self.ctx.store.delete(resource, namespace, _meta(obj)["name"],
                                         resource_version=None)
        except NotFound:
            return
        if _meta(last).get("finalizers"):
            publish(self.ctx.cache, resource, last)



# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [GarbageCollector]
