"""DaemonSet, ReplicaSet and ReplicationController: pods without stable identity.

A DaemonSet runs one pod on each node its template admits (``nodeSelector``
and required node affinity), placed directly with ``spec.nodeName``. A
ReplicaSet or ReplicationController keeps a count of interchangeable pods
named ``<name>-<5 random chars>``, replaces failed ones, and removes the
least useful first when scaling down (unscheduled, then pending, then not
ready, then the newest), as Kubernetes ranks them.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Iterable

import structlog

from storage.api.node_affinity import pod_admits_node
from storage.api.quota_admission import admit_controller_create
from storage.api.taints import with_daemon_tolerations
from storage.controllers.base import Reconciler, Result, defaulted_tolerations, pod_security_default, split_key
from storage.controllers.owners import (
    controller_key, controller_ref, is_controlled_by, labels_of, make_controller_ref, publish, selector_matches,
)
from storage.errors import Forbidden, NotFound, TooManyRequests

Obj = dict[str, Any]
log = structlog.get_logger(__name__)


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _phase(pod: Obj) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def _ready_since(pod: Obj) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return cond.get("lastTransitionTime") or ""
    return None


def _is_available(pod: Obj, min_ready: int, now: datetime) -> bool:
    since = _ready_since(pod)
    if since is None or _phase(pod) != "Running":
        return False
    if min_ready <= 0 or not since:
        return True
    started = datetime.fromisoformat(since.replace("Z", "+00:00"))
    return (now - started).total_seconds() >= min_ready


def _finished(pod: Obj) -> bool:
    return _phase(pod) in ("Failed", "Succeeded")


def _terminating(pod: Obj) -> bool:
    return bool(_meta(pod).get("deletionTimestamp"))


def pod_from_template(owner: Obj, template: Obj, api_version: str, kind: str, name_prefix: str) -> Obj:
    tmeta = _meta(template)
    pod_meta: Obj = {
        "generateName": name_prefix,
        "namespace": _meta(owner).get("namespace") or "default",
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [make_controller_ref(owner, api_version, kind)],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    # Written to the store directly, so given the status the API server gives every new pod.
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": copy.deepcopy(_spec(template)),
            "status": {"phase": "Pending"}}


def deletion_rank(pod: Obj) -> tuple[int, int, int, str]:
    """Smaller is deleted first: unscheduled < scheduled, Pending < Unknown < Running, not ready < ready, newer first."""
    scheduled = 1 if _spec(pod).get("nodeName") else 0
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(_phase(pod), 0)
    ready = 0 if _ready_since(pod) is None else 1
    created = _meta(pod).get("creationTimestamp") or ""
    # Newer first: invert the timestamp's ordering by sorting on its negated characters.
    inverted = "".join(chr(0x10FFFF - ord(c)) for c in created)
    return (scheduled, phase_rank, ready, inverted)



def admitted_pod(ctx: Any, owner: Obj, pod: Obj) -> Obj:
    """QL16, PS1: a pod this controller creates goes through LimitRanger, Pod Security and ResourceQuota
    admission, as Kubernetes' controllers create through the API server; a refusal is the owner's FailedCreate
    event, in Kubernetes' words, and a retry with back-off."""
    try:
        return admit_controller_create(ctx.store, "pods", pod, pod_security_default=pod_security_default(ctx))
    except (Forbidden, TooManyRequests) as err:
        ctx.events.record(owner, "Warning", "FailedCreate", f"Error creating: {err}")
        raise


def create_pod(ctx: Any, owner: Obj, pod: Obj) -> Obj:
    """Admits and writes a new pod of ``owner`` and records SuccessfulCreate; returns the stored pod."""
    created = publish(ctx.cache, "pods", ctx.store.create("pods", admitted_pod(ctx, owner, pod)))
    ctx.events.record(owner, "Normal", "SuccessfulCreate", f"Created pod: {_meta(created)['name']}")
    return created


def delete_pod(ctx: Any, owner: Obj, pod: Obj) -> None:
    """Deletes the version of ``owner``'s pod that the plan saw and records SuccessfulDelete. A newer pod is a
    Conflict, which propagates: the owner plans again from it rather than act on what it no longer is."""
    pmeta = _meta(pod)
    try:
        last = ctx.store.delete("pods", pmeta.get("namespace", ""), pmeta["name"],
                                resource_version=str(pmeta.get("resourceVersion") or "") or None)
    except NotFound:
        return
    if _meta(last).get("finalizers"):
        publish(ctx.cache, "pods", last)  # a removed pod leaves the cache via its DELETED event
    ctx.events.record(owner, "Normal", "SuccessfulDelete", f"Deleted pod: {pmeta['name']}")


def owned_pods(ctx: Any, owner: Obj, selector: Obj | None, api_version: str, kind: str) -> list[Obj]:
    """The pods ``owner`` controls in its namespace; a live pod its selector picks that no controller owns is
    adopted, as Kubernetes does. A Conflict on the adoption propagates, so a pod is never left uncounted (and
    made again) because another writer touched it first."""
    pods: list[Obj] = []
    for pod in ctx.cache.list("pods", _meta(owner).get("namespace", "")):
        if is_controlled_by(pod, owner):
            pods.append(pod)
        elif controller_ref(pod) is None and not _terminating(pod) and selector_matches(selector, labels_of(pod)):
            adopted = copy.deepcopy(pod)
            adopted["metadata"].setdefault("ownerReferences", []).append(make_controller_ref(owner, api_version, kind))
            try:
                pods.append(publish(ctx.cache, "pods", ctx.store.update("pods", adopted)))
            except NotFound:
                continue
    return pods


class _Replicated(Reconciler):
    """Shared logic of ReplicaSet and ReplicationController."""

    kind: ClassVar[str]
    api_version: ClassVar[str]

    def __init__(self, ctx: Any, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(ctx)
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def selector(self, owner: Obj) -> Obj | None:
        raise NotImplementedError

    def template(self, owner: Obj) -> Obj:
        return _spec(owner).get("template") or {}

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"pods": lambda pod: controller_key(pod, self.kind)}

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        owner = self.ctx.cache.get(self.primary, namespace, name)
        if owner is None or _meta(owner).get("deletionTimestamp"):
            return Result()
        pods = owned_pods(self.ctx, owner, self.selector(owner), self.api_version, self.kind)
        for pod in pods:
            if _finished(pod) and not _terminating(pod):
                delete_pod(self.ctx, owner, pod)
        active = [p for p in pods if not _finished(p) and not _terminating(p)]
        wanted = int(_spec(owner).get("replicas", 1) if _spec(owner).get("replicas") is not None else 1)
        if len(active) < wanted:
            for _ in range(wanted - len(active)):
                new = pod_from_template(owner, self.template(owner), self.api_version, self.kind, f"{name}-")
                new["spec"] = defaulted_tolerations(self.ctx, new["spec"])
                active.append(create_pod(self.ctx, owner, new))
        elif len(active) > wanted:
            doomed = sorted(active, key=deletion_rank)[: len(active) - wanted]
            for pod in doomed:
                delete_pod(self.ctx, owner, pod)
                active.remove(pod)
        self._write_status(owner, active)
        return Result()

    def _write_status(self, owner: Obj, active: list[Obj]) -> None:
        now = self.clock()
        min_ready = int(_spec(owner).get("minReadySeconds") or 0)
        template_labels = labels_of(self.template(owner))
        status: Obj = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active if all(labels_of(p).get(k) == v for k, v in template_labels.items())),
            "readyReplicas": sum(1 for p in active if _ready_since(p) is not None and _phase(p) == "Running"),
            "availableReplicas": sum(1 for p in active if _is_available(p, min_ready, now)),
            "observedGeneration": _meta(owner).get("generation", 0),
        }
        if (owner.get("status") or {}) == status:
            return
        updated = copy.deepcopy(owner)
        updated["status"] = status
        publish(self.ctx.cache, self.primary, self.ctx.store.update(self.primary, updated))


class ReplicaSetReconciler(_Replicated):
    name = "replicaset"
    primary = "replicasets"
    kind = "ReplicaSet"
    api_version = "apps/v1"

    def selector(self, owner: Obj) -> Obj | None:
        return _spec(owner).get("selector")


class ReplicationControllerReconciler(_Replicated):
    name = "replicationcontroller"
    primary = "replicationcontrollers"
    kind = "ReplicationController"
    api_version = "v1"

    def selector(self, owner: Obj) -> Obj | None:
        # An RC's selector is a plain map, defaulting to the template's labels.
        plain = _spec(owner).get("selector") or labels_of(self.template(owner))
        return {"matchLabels": plain} if plain else None


class DaemonSetReconciler(Reconciler):
    name = "daemonset"
    primary = "daemonsets"

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"pods": lambda pod: controller_key(pod, "DaemonSet"), "nodes": self._all_sets}

    def _all_sets(self, _node: Obj) -> list[str]:
        return [f"{_meta(d).get('namespace', '')}/{_meta(d)['name']}" for d in self.ctx.cache.list("daemonsets")]

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        ds = self.ctx.cache.get("daemonsets", namespace, name)
        if ds is None or _meta(ds).get("deletionTimestamp"):
            return Result()
        template = _spec(ds).get("template") or {}
        probe = {"spec": _spec(template)}
        nodes = {_meta(n)["name"]: n for n in self.ctx.cache.list("nodes")}
        eligible = {n for n, node in nodes.items() if pod_admits_node(probe, node)}
        pods = [p for p in self.ctx.cache.list("pods", namespace) if is_controlled_by(p, ds)]
        by_node: dict[str, list[Obj]] = {}
        for pod in pods:
            if _terminating(pod):
                continue
            node = _spec(pod).get("nodeName") or ""
            if node not in eligible or _finished(pod):
                delete_pod(self.ctx, ds, pod)
                continue
            by_node.setdefault(node, []).append(pod)
        for node, on_node in by_node.items():
            # Keep the oldest; a duplicate comes from a race and must go.
            on_node.sort(key=lambda p: (_meta(p).get("creationTimestamp") or "", _meta(p)["name"]))
            for extra in on_node[1:]:
                delete_pod(self.ctx, ds, extra)
                on_node.remove(extra)
        for node in sorted(eligible - set(by_node)):
            new = pod_from_template(ds, template, "apps/v1", "DaemonSet", f"{name}-")
            new["spec"]["nodeName"] = node
            # As Kubernetes' DaemonSet controller: a daemon stays through not-ready, unreachable and cordoning.
            new["spec"] = with_daemon_tolerations(new["spec"])
            by_node[node] = [create_pod(self.ctx, ds, new)]
        self._write_status(ds, len(eligible), [p[0] for p in by_node.values()])
        return Result()

    def _write_status(self, ds: Obj, desired: int, pods: list[Obj]) -> None:
        now = datetime.now(timezone.utc)
        min_ready = int(_spec(ds).get("minReadySeconds") or 0)
        ready = sum(1 for p in pods if _ready_since(p) is not None and _phase(p) == "Running")
        available = sum(1 for p in pods if _is_available(p, min_ready, now))
        status: Obj = {
            "currentNumberScheduled": len(pods),
            "desiredNumberScheduled": desired,
            "numberMisscheduled": 0,
            "numberReady": ready,
            "numberAvailable": available,
            "numberUnavailable": max(0, desired - available),
            "updatedNumberScheduled": len(pods),
            "observedGeneration": _meta(ds).get("generation", 0),
        }
        if (ds.get("status") or {}) == status:
            return
        updated = copy.deepcopy(ds)
        updated["status"] = status
        publish(self.ctx.cache, "daemonsets", self.ctx.store.update("daemonsets", updated))


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [ReplicaSetReconciler, ReplicationControllerReconciler, DaemonSetReconciler]
