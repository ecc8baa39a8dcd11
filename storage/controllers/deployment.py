"""The Deployment controller: the thin effects around ``deployment_plan.calculate_changes``.

Every write carries the resourceVersion it was decided on, and new sets have
names derived from their template, so two passes at once cannot both act:
the loser gets a Conflict or AlreadyExists and looks again.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import structlog

from storage.controllers.base import Reconciler, Result, split_key
from storage.controllers.deployment_plan import (
    CreateReplicaSet, DeleteReplicaSet, SetDeploymentAnnotations, SetDeploymentStatus, UpdateReplicaSet,
    calculate_changes, replicas_of, template_without_hash,
)
from storage.controllers.owners import (
    controller_key, controller_ref, is_controlled_by, labels_of, make_controller_ref, publish, selector_matches,
)
from storage.errors import AlreadyExists, NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


class DeploymentReconciler(Reconciler):
    name = "deployment"
    primary = "deployments"

    def __init__(self, ctx: Any, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(ctx)
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"replicasets": lambda rs: controller_key(rs, "Deployment"), "pods": self._pod_keys}

    def _pod_keys(self, pod: Obj) -> list[str]:
        """A pod of a Deployment's set: Recreate waits for the old ones to be gone."""
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return []
        rs = self.ctx.cache.get("replicasets", _meta(pod).get("namespace") or "", ref.get("name") or "")
        return controller_key(rs, "Deployment") if rs is not None else []

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        deployment = self.ctx.cache.get("deployments", namespace, name)
        if deployment is None or _meta(deployment).get("deletionTimestamp"):
            return Result()
        selector = (deployment.get("spec") or {}).get("selector")
        owned: list[Obj] = []
        for rs in self.ctx.cache.list("replicasets", namespace):
            if _meta(rs).get("deletionTimestamp"):
                continue
            if is_controlled_by(rs, deployment):
                owned.append(rs)
            elif controller_ref(rs) is None and selector_matches(selector, labels_of(rs)):
                adopted = copy.deepcopy(rs)
                adopted["metadata"].setdefault("ownerReferences", []).append(
                    make_controller_ref(deployment, "apps/v1", "Deployment"))
                owned.append(publish(self.ctx.cache, "replicasets", self.ctx.store.update("replicasets", adopted)))
        pods_by_set: dict[str, int] = {}
        for pod in self.ctx.cache.list("pods", namespace):
            ref = controller_ref(pod)
            if ref is None or ref.get("kind") != "ReplicaSet":
                continue
            if ((pod.get("status") or {}).get("phase")) in ("Failed", "Succeeded"):
                continue
            pods_by_set[ref.get("name") or ""] = pods_by_set.get(ref.get("name") or "", 0) + 1
        plan = calculate_changes(deployment, owned, pods_by_set, self.clock())
        before = {_meta(rs)["name"]: rs for rs in owned}
        new_meta: Obj | None = None
        new_status: Obj | None = None
        for action in plan.actions:
            if isinstance(action, CreateReplicaSet):
                if not self._create(deployment, action.replica_set):
                    return Result(requeue_after=0.1)
            elif isinstance(action, UpdateReplicaSet):
                rs = action.replica_set
                saved = publish(self.ctx.cache, "replicasets", self.ctx.store.update("replicasets", rs))
                old = before.get(_meta(rs)["name"])
                if old is not None and replicas_of(old) != replicas_of(saved):
                    verb = "up" if replicas_of(saved) > replicas_of(old) else "down"
                    self.ctx.events.record(
                        deployment, "Normal", "ScalingReplicaSet",
                        f"Scaled {verb} replica set {_meta(saved)['name']} from {replicas_of(old)} to {replicas_of(saved)}")
            elif isinstance(action, DeleteReplicaSet):
                try:
                    self.ctx.store.delete("replicasets", namespace, action.name,
                                          resource_version=action.resource_version or None)
                except NotFound:
                    pass
            elif isinstance(action, SetDeploymentAnnotations):
                new_meta = action.annotations
            elif isinstance(action, SetDeploymentStatus):
                new_status = action.status
        if new_meta is not None or new_status is not None:
            updated = copy.deepcopy(deployment)
            if new_meta is not None:
                updated["metadata"]["annotations"] = new_meta
            if new_status is not None:
                updated["status"] = new_status
            publish(self.ctx.cache, "deployments", self.ctx.store.update("deployments", updated))
        return Result(requeue_after=plan.requeue_after)

    def _create(self, deployment: Obj, rs: Obj) -> bool:
        """Create the new set; False when its name is taken by a set with another template (a hash collision)."""
        try:
            created = publish(self.ctx.cache, "replicasets", self.ctx.store.create("replicasets", rs))
        except AlreadyExists:
            existing = self.ctx.store.get("replicasets", _meta(rs)["namespace"], _meta(rs)["name"])
            same = template_without_hash((existing.get("spec") or {}).get("template") or {}) == \
                template_without_hash((rs.get("spec") or {}).get("template") or {})
            if same and is_controlled_by(existing, deployment):
                publish(self.ctx.cache, "replicasets", existing)  # our cache lagged: the next pass sees it
                return False
            # Kubernetes' answer to a name clash: bump collisionCount, which changes the next hash.
            updated = copy.deepcopy(deployment)
            status = updated.setdefault("status", {})
            status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
            publish(self.ctx.cache, "deployments", self.ctx.store.update("deployments", updated))
            return False
        self.ctx.events.record(deployment, "Normal", "ScalingReplicaSet",
                               f"Scaled up replica set {_meta(created)['name']} from 0 to {replicas_of(created)}")
        return True


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [DeploymentReconciler]
