"""The StatefulSet reconciler: reads a set and its members, applies ``calculate_changes``.

Every write carries the resourceVersion it was computed from, so two
passes racing on one set cannot both act on stale state: the loser gets
Conflict and the manager requeues it. Events use Kubernetes' reasons and
messages, which ``describe`` shows.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import structlog

from statefulset import identity
from statefulset.identity import meta, spec
from statefulset.update import (
    Action, CreateClaim, CreatePod, CreateRevision, DeleteClaim, DeletePod, DeleteRevision, RenumberRevision,
    RequeueAfter, UpdateClaim, UpdatePod, UpdateStatus, calculate_changes, describe_blocker,
)
from storage.api.quota_admission import admit_controller_create
from storage.controllers.base import Reconciler, Result, defaulted_tolerations, pod_security_default, split_key
from storage.controllers.owners import (
    controller_key, is_controlled_by, labels_of, owner_refs, publish, selector_matches,
)
from storage.errors import AlreadyExists, Conflict, NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

__all__ = ["StatefulSetReconciler", "describe_blocker"]


class StatefulSetReconciler(Reconciler):
    name = "statefulset"
    primary = "statefulsets"

    def __init__(self, ctx: Any, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(ctx)
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    # --- watch mapping -------------------------------------------------
    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {
            "pods": self._pod_keys,
            "persistentvolumeclaims": self._claim_keys,
            "controllerrevisions": lambda obj: controller_key(obj, "StatefulSet"),
        }

    def _pod_keys(self, pod: Obj) -> list[str]:
        keys = controller_key(pod, "StatefulSet")
        if keys:
            return keys
        # An orphan named like a member may be adopted by the set of that name.
        parsed = identity.parse_ordinal(meta(pod).get("name", ""))
        return [f"{meta(pod).get('namespace', '')}/{parsed[0]}"] if parsed else []

    def _claim_keys(self, claim: Obj) -> list[str]:
        namespace = meta(claim).get("namespace", "")
        keys = {f"{namespace}/{r['name']}" for r in owner_refs(claim) if r.get("kind") == "StatefulSet"}
        for sts in self.ctx.cache.list("statefulsets", namespace):
            if selector_matches(spec(sts).get("selector"), labels_of(claim)):
                keys.add(f"{namespace}/{meta(sts)['name']}")
        return sorted(keys)

    # --- reconcile -----------------------------------------------------
    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        sts = self.ctx.cache.get("statefulsets", namespace, name)
        if sts is None:
            return Result()  # dependents are the garbage collector's, through ownerReferences
        pods = self._members(sts)
        selector = spec(sts).get("selector")
        claims = [c for c in self.ctx.cache.list("persistentvolumeclaims", namespace)
                  if selector_matches(selector, labels_of(c))]
        revisions = self._revisions(sts)
        actions = calculate_changes(sts, pods, claims, revisions, self.clock())
        return self._apply(sts, actions)

    def _members(self, sts: Obj) -> list[Obj]:
        """Pods the set controls, adopting orphans that match its selector and carry a member name."""
        return self._controlled("pods", sts, lambda pod: identity.is_member_name(sts, meta(pod).get("name", "")))

    def _revisions(self, sts: Obj) -> list[Obj]:
        """Revisions the set controls, adopting orphans its selector matches (what a set deleted with
        ``--cascade=orphan`` left): re-created with the same template, it finds its revision and
        keeps its pods, as Kubernetes' controller adopts them."""
        return self._controlled("controllerrevisions", sts, lambda revision: True)

    def _controlled(self, resource: str, sts: Obj, may_adopt: Callable[[Obj], bool]) -> list[Obj]:
        """The set's objects of ``resource``, adopting orphans its selector matches and ``may_adopt`` allows
        (none while the set is being deleted)."""
        selector = spec(sts).get("selector")
        out: list[Obj] = []
        rechecked: bool | None = None
        for obj in self.ctx.cache.list(resource, meta(sts).get("namespace", "")):
            if is_controlled_by(obj, sts):
                out.append(obj)
            elif (not any(r.get("controller") for r in owner_refs(obj)) and not meta(sts).get("deletionTimestamp")
                  and selector_matches(selector, labels_of(obj)) and may_adopt(obj)):
                if rechecked is None:
                    rechecked = self._still_live(sts)
                if not rechecked:
                    continue
                adopted = copy.deepcopy(obj)
                adopted["metadata"].setdefault("ownerReferences", []).append(identity.set_owner_reference(sts))
                out.append(self._write(resource, self.ctx.store.update(resource, adopted)))
        return out

    def _still_live(self, sts: Obj) -> bool:
        """Kubernetes' RecheckDeletionTimestamp before an adoption: the set as stored now is this one and is
        not being deleted. The cache may still show a set deleted with orphan whose dependents the garbage
        collector has just released; adopting them for it would have the collector delete them (S9)."""
        try:
            live = self.ctx.store.get("statefulsets", meta(sts).get("namespace", ""), meta(sts).get("name", ""))
        except NotFound:
            return False
        return meta(live).get("uid") == meta(sts).get("uid") and not meta(live).get("deletionTimestamp")

    def _apply(self, sts: Obj, actions: list[Action]) -> Result:
        requeue: float | None = None
        set_name = meta(sts)["name"]
        namespace = meta(sts).get("namespace", "")
        for action in actions:
            if isinstance(action, CreateRevision):
                self._create_revision(sts, action.revision)
            elif isinstance(action, RenumberRevision):
                self._write("controllerrevisions", self.ctx.store.update("controllerrevisions", action.revision))
            elif isinstance(action, DeleteRevision):
                self._delete_quietly("controllerrevisions", namespace, action.name)
            elif isinstance(action, CreateClaim):
                self._create_claim(sts, action)
            elif isinstance(action, UpdateClaim):
                self._write("persistentvolumeclaims", self.ctx.store.update("persistentvolumeclaims", action.claim))
            elif isinstance(action, DeleteClaim):
                self._delete_quietly("persistentvolumeclaims", namespace, action.name, action.resource_version)
                self.ctx.events.record(sts, "Normal", "SuccessfulDelete",
                                       f"delete Claim {action.name} in StatefulSet {set_name} successful")
            elif isinstance(action, CreatePod):
                self._create_pod(sts, action)
            elif isinstance(action, UpdatePod):
                self._write("pods", self.ctx.store.update("pods", action.pod))
                self.ctx.events.record(sts, "Normal", "SuccessfulUpdate",
                                       f"update Pod {meta(action.pod)['name']} in StatefulSet {set_name} successful")
            elif isinstance(action, DeletePod):
                self._delete_pod(sts, action)
            elif isinstance(action, UpdateStatus):
                updated = copy.deepcopy(sts)
                updated["status"] = action.status
                self._write("statefulsets", self.ctx.store.update("statefulsets", updated))
            elif isinstance(action, RequeueAfter):
                requeue = action.seconds
        return Result(requeue_after=requeue)

    def _create_revision(self, sts: Obj, revision: Obj) -> None:
        namespace = meta(sts).get("namespace", "")
        try:
            self._write("controllerrevisions", self.ctx.store.create("controllerrevisions", revision))
        except AlreadyExists:
            existing = self.ctx.store.get("controllerrevisions", namespace, meta(revision)["name"])
            if existing.get("data") == revision.get("data") and (
                    is_controlled_by(existing, sts) or not any(r.get("controller") for r in owner_refs(existing))):
                # Another pass made it, or it is an orphan of an earlier set of this name that the cache did not
                # yet show released: the same revision, adopted on the next pass (Kubernetes' history returns an
                # existing revision of equal data the same way); counting a collision would roll every member.
                return
            # A different revision holds the name: perturb the hash (upstream collisionCount) and retry.
            bumped = copy.deepcopy(sts)
            status = bumped.setdefault("status", {})
            status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
            self.ctx.store.update("statefulsets", bumped)
            raise Conflict(f"controllerrevision {meta(revision)['name']} already exists with other data")

    def _create_claim(self, sts: Obj, action: CreateClaim) -> None:
        claim_name = meta(action.claim)["name"]
        try:
            claim = admit_controller_create(self.ctx.store, "persistentvolumeclaims", action.claim)  # QL16
            self._write("persistentvolumeclaims", self.ctx.store.create("persistentvolumeclaims", claim))
        except AlreadyExists:
            return  # made by a racing pass or by the user: S1 reuses an existing claim
        except Exception as err:
            self.ctx.events.record(sts, "Warning", "FailedCreate",
                                   f"create Claim {claim_name} for Pod {action.pod_name} in StatefulSet "
                                   f"{meta(sts)['name']} failed error: {err}")
            raise
        self.ctx.events.record(sts, "Normal", "SuccessfulCreate",
                               f"create Claim {claim_name} Pod {action.pod_name} in StatefulSet {meta(sts)['name']} success")

    def _create_pod(self, sts: Obj, action: CreatePod) -> None:
        pod_name = meta(action.pod)["name"]
        try:
            pod = admit_controller_create(self.ctx.store, "pods", {  # QL16, PS1
                **action.pod, "spec": defaulted_tolerations(self.ctx, action.pod["spec"])},
                pod_security_default=pod_security_default(self.ctx))
            self._write("pods", self.ctx.store.create("pods", pod))
        except AlreadyExists as err:
            # The old member is still terminating, or the cache lags: look again on the next event.
            raise Conflict(str(err)) from err
        except Exception as err:
            self.ctx.events.record(sts, "Warning", "FailedCreate",
                                   f"create Pod {pod_name} in StatefulSet {meta(sts)['name']} failed error: {err}")
            raise
        log.info("statefulset.pod_created", statefulset=meta(sts)["name"], pod=pod_name)
        self.ctx.events.record(sts, "Normal", "SuccessfulCreate",
                               f"create Pod {pod_name} in StatefulSet {meta(sts)['name']} successful")

    def _delete_pod(self, sts: Obj, action: DeletePod) -> None:
        namespace = meta(sts).get("namespace", "")
        set_name = meta(sts)["name"]
        if action.reason == "failed":
            self.ctx.events.record(sts, "Warning", "RecreatingFailedPod",
                                   f"StatefulSet {namespace}/{set_name} is recreating failed Pod {action.name}")
        elif action.reason == "succeeded":
            self.ctx.events.record(sts, "Normal", "RecreatingTerminatedPod",
                                   f"StatefulSet {namespace}/{set_name} is recreating terminated Pod {action.name}")
        try:
            self._deleted("pods", self.ctx.store.delete("pods", namespace, action.name,
                                                        resource_version=action.resource_version or None))
        except NotFound:
            return
        except Exception as err:
            self.ctx.events.record(sts, "Warning", "FailedDelete",
                                   f"delete Pod {action.name} in StatefulSet {set_name} failed error: {err}")
            raise
        self.ctx.events.record(sts, "Normal", "SuccessfulDelete",
                               f"delete Pod {action.name} in StatefulSet {set_name} successful")

    def _delete_quietly(self, resource: str, namespace: str, name: str, resource_version: str | None = None) -> None:
        try:
            self._deleted(resource, self.ctx.store.delete(resource, namespace, name,
                                                          resource_version=resource_version or None))
        except NotFound:
            pass

    def _write(self, resource: str, obj: Obj) -> Obj:
        return publish(self.ctx.cache, resource, obj)

    def _deleted(self, resource: str, last: Obj) -> None:
        # Only a marked object is published; a removed one leaves the cache through its DELETED
        # event, which is also what wakes the next pass.
        if meta(last).get("finalizers"):
            publish(self.ctx.cache, resource, last)



# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [StatefulSetReconciler]
