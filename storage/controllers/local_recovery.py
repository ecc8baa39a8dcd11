"""Opt-in recovery of claims whose local volume sits on a lost node (SEMANTICS LR1-LR7).

A local volume cannot follow its pod: in Kubernetes a StatefulSet member whose node is gone stays
Pending until somebody deletes its claim by hand. A database that keeps replicas of its data
(Cassandra, etcd, ...) would rather rebuild the member on another node, so a claim or its
StorageClass may carry ``stowage.io/recover-on-node-loss: <duration>``. Once the volume's node is
lost (it no longer exists, it is not Ready and carries the ``out-of-service`` taint, or it has not
been Ready for the duration), this controller deletes the claim, then the member's pod (at once on
the lost node, where no agent will confirm; normally when it never got a node). The StatefulSet
controller waits for the claim to be gone, then creates claim and pod again, and the new claim is
provisioned where the pod is scheduled. The data on the lost node is abandoned: the old volume is
released and follows its reclaim policy when the node comes back.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal

import structlog

from storage.api.durations import duration_seconds
from storage.api.ephemeral import claim_names
from storage.api.taints import OUT_OF_SERVICE
from storage.api.timestamps import parse_time
from storage.controllers.base import Cache, Reconciler, Result, split_key
from storage.controllers.node_lifecycle import force_delete_pod
from storage.errors import Conflict, NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

ANNOTATION = "stowage.io/recover-on-node-loss"
HOSTNAME_KEY = "kubernetes.io/hostname"
LOCAL_PROVISIONERS = ("stowage.io/local", "kubernetes.io/no-provisioner")


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def recovery_setting(claim: Obj, storage_class: Obj | None) -> tuple[float | None, str | None]:
    """(seconds, None) when recovery is on; (None, error) for a malformed value; (None, None) when off.

    The claim's annotation wins over its class's (LR1)."""
    raw = (_meta(claim).get("annotations") or {}).get(ANNOTATION)
    if raw is None and storage_class is not None:
        raw = (_meta(storage_class).get("annotations") or {}).get(ANNOTATION)
    if raw is None:
        return None, None
    try:
        seconds = duration_seconds(str(raw))
    except ValueError as exc:
        return None, f"{ANNOTATION}: Invalid value: {raw!r}: {exc}"
    if seconds < 0:
        return None, f"{ANNOTATION}: Invalid value: {raw!r}: must not be negative"
    return seconds, None


def volume_node(volume: Obj) -> str | None:
    """The one node a local volume lives on, from its required node affinity; None for any other volume."""
    spec = volume.get("spec") or {}
    provisioner = (_meta(volume).get("annotations") or {}).get("pv.kubernetes.io/provisioned-by")
    if not (spec.get("local") or spec.get("hostPath") or provisioner in LOCAL_PROVISIONERS):
        return None
    terms = (((spec.get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")) or []
    names: set[str] = set()
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == HOSTNAME_KEY and expr.get("operator") == "In":
                names.update(expr.get("values") or [])
    return next(iter(names)) if len(names) == 1 else None


def _ready(node: Obj) -> Obj | None:
    return next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)


def node_lost(name: str, node: Obj | None, after: float, now: dt.datetime) -> tuple[str | None, dt.datetime | None]:
    """(why the node counts as lost, None) or (None, when to look again if it stays not Ready) (LR2)."""
    if node is None:
        return f"node {name} no longer exists", None
    ready = _ready(node)
    if ready is not None and ready.get("status") == "True":
        return None, None
    if any(t.get("key") == OUT_OF_SERVICE for t in (node.get("spec") or {}).get("taints") or []):
        return f"node {name} is not Ready and has the {OUT_OF_SERVICE} taint", None
    since = parse_time((ready or {}).get("lastTransitionTime")) if ready else None
    if since is None:
        return None, None  # never reported: not lost, only new
    due = since + dt.timedelta(seconds=after)
    if due <= now:
        return f"node {name} not Ready since {ready.get('lastTransitionTime') if ready else '?'}", None
    return None, due


@dataclass
class Decision:
    action: Literal["none", "recover", "invalid"] = "none"
    reason: str = ""
    delete_claim: bool = False
    # (namespace, name, uid, force): force on the lost node (no agent will confirm), normal when unscheduled
    delete_pods: list[tuple[str, str, str, bool]] = field(default_factory=list)
    wake_at: dt.datetime | None = None


def calculate_changes(claim: Obj, storage_class: Obj | None, volume: Obj | None, nodes: dict[str, Obj],
                      pods: Iterable[Obj], now: dt.datetime) -> Decision:
    after, error = recovery_setting(claim, storage_class)
    if error:
        return Decision("invalid", reason=error)
    if after is None or volume is None:
        return Decision()
    node_name = volume_node(volume)
    if node_name is None:
        return Decision()  # LR3: only volumes bound to one node
    why, due = node_lost(node_name, nodes.get(node_name), after, now)
    if why is None:
        return Decision(wake_at=due)
    meta = _meta(claim)
    users = [p for p in pods if _meta(p).get("namespace") == meta.get("namespace") and meta.get("name", "") in claim_names(p)]
    elsewhere = [p for p in users if (p.get("spec") or {}).get("nodeName") not in (None, "", node_name)
                 and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    if elsewhere:
        return Decision()  # LR4: a pod using the claim runs on another node: nothing is lost
    decision = Decision("recover", reason=why, delete_claim=not meta.get("deletionTimestamp"))
    for pod in users:
        pod_meta = _meta(pod)
        on_lost = (pod.get("spec") or {}).get("nodeName") == node_name
        if on_lost or not (pod.get("spec") or {}).get("nodeName"):
            if on_lost or not pod_meta.get("deletionTimestamp"):
                decision.delete_pods.append((pod_meta.get("namespace") or "default", pod_meta.get("name", ""),
                                             pod_meta.get("uid", ""), on_lost))
    return decision


def _pods_in(cache: Cache, namespace: str) -> Iterator[Obj]:
    """The namespace's pods, listed only if iterated: most claims do not opt in to recovery, or their
    node is fine, and listing every pod for each of them cost a burst of claims time quadratic in it."""
    yield from cache.list("pods", namespace)


class LocalVolumeRecoveryReconciler(Reconciler):
    name = "local-volume-recovery"
    primary = "persistentvolumeclaims"

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        def claims_on_node(node: Obj) -> list[str]:
            name = _meta(node).get("name")
            out = []
            for volume in self.ctx.cache.list("persistentvolumes"):
                ref = (volume.get("spec") or {}).get("claimRef") or {}
                if ref.get("name") and volume_node(volume) == name:
                    out.append(f"{ref.get('namespace') or 'default'}/{ref['name']}")
            return out

        def claims_of_pod(pod: Obj) -> list[str]:
            ns = _meta(pod).get("namespace") or "default"
            return [f"{ns}/{name}" for name in claim_names(pod)]

        return {"nodes": claims_on_node, "pods": claims_of_pod}

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        cache = self.ctx.cache
        claim = cache.get("persistentvolumeclaims", namespace, name)
        if claim is None:
            return Result()
        spec = claim.get("spec") or {}
        storage_class = cache.get("storageclasses", "", spec.get("storageClassName") or "") \
            if spec.get("storageClassName") else None
        volume = cache.get("persistentvolumes", "", spec.get("volumeName") or "") if spec.get("volumeName") else None
        nodes = {_meta(n).get("name", ""): n for n in cache.list("nodes")}
        now = dt.datetime.now(dt.timezone.utc)
        decision = calculate_changes(claim, storage_class, volume, nodes, _pods_in(cache, namespace), now)
        if decision.action == "invalid":
            self.ctx.events.record(claim, "Warning", "InvalidRecoverySetting", decision.reason)
            return Result()
        if decision.action == "none":
            if decision.wake_at is not None:
                return Result(requeue_after=max(0.1, (decision.wake_at - now).total_seconds()))
            return Result()
        if decision.delete_claim:
            self._delete_claim(claim, decision.reason, volume)
        for pod_ns, pod_name, uid, force in decision.delete_pods:
            pod = cache.get("pods", pod_ns, pod_name)
            if pod is None or _meta(pod).get("uid") != uid:
                continue
            if force:
                force_delete_pod(self.ctx.store, cache, pod)
            else:
                try:
                    self.ctx.store.delete("pods", pod_ns, pod_name, resource_version=_meta(pod).get("resourceVersion"))
                except NotFound:
                    continue
            log.info("local_recovery.pod_deleted", pod=f"{pod_ns}/{pod_name}", force=force)
        return Result()

    def _delete_claim(self, claim: Obj, reason: str, volume: Obj | None) -> None:
        meta = _meta(claim)
        try:
            # The resourceVersion precondition: a claim changed since this decision is decided again.
            self.ctx.store.delete("persistentvolumeclaims", meta.get("namespace") or "default", meta["name"],
                                  resource_version=meta.get("resourceVersion"))
        except NotFound:
            return
        except Conflict:
            raise
        volume_name = _meta(volume or {}).get("name", "")
        message = (f"{reason}: claim deleted so that its workload creates it again on another node "
                   f"({ANNOTATION}); the data of volume {volume_name} on that node is abandoned")
        self.ctx.events.record(claim, "Warning", "RecoveringFromNodeLoss", message)
        log.warning("local_recovery.claim_deleted", claim=f"{meta.get('namespace')}/{meta['name']}",
                    volume=volume_name, reason=reason)


RECONCILERS = [LocalVolumeRecoveryReconciler]
