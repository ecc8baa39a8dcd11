"""The ephemeral-volume controller (EV1, EV2): for each ``ephemeral`` volume of a pod, the claim
``<pod>-<volume>`` from its ``volumeClaimTemplate``, controlled by the pod, so the garbage collector
removes it with the pod. A claim of that name that the pod does not control is left alone: the
scheduler and the node agent then report ``PVC <ns>/<name> was not created for the pod``."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import structlog

from storage.api.ephemeral import ephemeral_claim, ephemeral_claim_name, not_created_for, owned_by
from storage.api.quota_admission import admit_controller_create
from storage.controllers.base import Reconciler, Result, split_key
from storage.errors import AlreadyExists, Forbidden, TooManyRequests

Obj = dict[str, Any]
log = structlog.get_logger(__name__)
PVCS = "persistentvolumeclaims"


def calculate_changes(pod: Obj, existing: Callable[[str], Obj | None]) -> tuple[list[Obj], list[str]]:
    """(claims to create, names of claims that exist but are not the pod's)."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp") or not meta.get("uid"):
        return [], []
    create: list[Obj] = []
    foreign: list[str] = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if not isinstance(volume, dict) or not isinstance(volume.get("ephemeral"), dict):
            continue
        name = ephemeral_claim_name(pod, volume)
        claim = existing(name)
        if claim is None:
            create.append(ephemeral_claim(pod, volume))
        elif not owned_by(claim, pod):
            foreign.append(name)
    return create, foreign


class EphemeralVolumeReconciler(Reconciler):
    name = "ephemeral-volume"
    primary = "pods"

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        def owner(claim: Obj) -> list[str]:  # a deleted claim of a running pod is made again
            meta = claim.get("metadata") or {}
            return [f"{meta.get('namespace', '')}/{ref['name']}" for ref in meta.get("ownerReferences") or []
                    if ref.get("kind") == "Pod" and ref.get("controller") and ref.get("name")]

        return {PVCS: owner}

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        pod = self.ctx.cache.get("pods", namespace, name)
        if pod is None:
            return Result()
        create, foreign = calculate_changes(pod, lambda claim: self.ctx.cache.get(PVCS, namespace, claim))
        for claim in create:
            try:
                self.ctx.store.create(PVCS, admit_controller_create(self.ctx.store, PVCS, claim))  # QL16
            except AlreadyExists:
                continue  # made meanwhile (a racing pass, or a user's claim: the next pass sees whose)
            except (Forbidden, TooManyRequests) as err:
                self.ctx.events.record(pod, "Warning", "FailedCreate",
                                       f"create PersistentVolumeClaim {claim['metadata']['name']} failed: {err}")
                raise
            log.info("ephemeral claim created", namespace=namespace, pod=name, claim=claim["metadata"]["name"])
        for claim_name in foreign:
            self.ctx.events.record(pod, "Warning", "FailedBinding", not_created_for(claim_name, pod))
        return Result()


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [EphemeralVolumeReconciler]
