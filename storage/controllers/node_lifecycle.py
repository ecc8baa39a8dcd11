"""Kubernetes' node lifecycle controller and its NoExecute taint manager (rules L1-L6; L7 is admission's).

- L1 A node whose agent stops renewing its Lease in ``kube-node-lease`` and its
  Ready heartbeat for ``--node-monitor-grace-period`` (40 s) gets Ready (and any
  pressure condition) ``Unknown``, reason ``NodeStatusUnknown``, message
  ``Kubelet stopped posting node status.``; as in Kubernetes, "renewed" is when
  this controller saw a change, so clocks of other hosts never matter.
- L2 Pods on a node whose Ready is not True get Ready and ContainersReady False
  at once, once per episode, with a Warning ``NodeNotReady`` "Node is not ready".
- L3 Conditions become NoSchedule taints at once (Ready False ->
  ``node.kubernetes.io/not-ready``, Unknown -> ``node.kubernetes.io/unreachable``,
  pressure conditions, ``spec.unschedulable``), removed when they clear.
- L4 The NoExecute twin of not-ready/unreachable is added per zone
  (``topology.kubernetes.io/zone``) at ``--node-eviction-rate`` nodes per second;
  a zone with at least 3 and ``--unhealthy-zone-threshold`` (55%) of its nodes
  not Ready is partially disrupted and uses ``--secondary-node-eviction-rate``
  (0 for zones of at most ``--large-cluster-size-threshold`` nodes); a fully
  disrupted zone keeps the normal rate unless every zone is fully disrupted: then
  no node gets the taint and existing ones are removed (the control plane is the
  likelier culprit). Swapping not-ready for unreachable is immediate.
- L5 A pod on a node with a NoExecute taint it does not tolerate is deleted at
  once; one tolerating it with ``tolerationSeconds`` is deleted that long after
  the taint's ``timeAdded``; a toleration without seconds keeps it forever. The
  pod first gets ``DisruptionTarget`` (reason ``DeletionByTaintManager``) and an
  event ``TaintManagerEviction`` "Marking for deletion Pod ns/name".
- L6 On a node that is not Ready and carries ``node.kubernetes.io/out-of-service``,
  terminating pods are force-deleted (phase Failed, no grace), as Kubernetes'
  pod GC does for non-graceful node shutdown; with L5 a pod there that does not
  tolerate the taint goes at once. Its attachable volumes are detached at once
  (SEMANTICS A3, storage/controllers/attachdetach.py).
- L7 (admission, storage/apiserver/admission.py) A new pod that tolerates
  neither NoExecute taint of L4 gets both with ``tolerationSeconds: 300``; the
  controllers give the pods they create the same, and DaemonSet pods tolerate
  them forever.
- L8 A pod an agent took (its finalizer) bound to a node that no longer exists
  (``kubectl delete node``) is an orphan: once the node has been gone for a quarantine of
  ``--node-monitor-grace-period`` (Kubernetes' pod GC waits 40 s, the same
  default) and a fresh read confirms it, the pod gets ``DisruptionTarget``
  (reason ``DeletionByPodGC``), phase Failed, and is deleted with no grace.

``calculate_changes`` is pure; ``NodeLifecycleReconciler`` feeds it from the
cache, applies its changes with resourceVersion preconditions and asks to be
woken at the next deadline (grace expiry, rate-limit slot, toleration expiry).
"""
from __future__ import annotations

import copy
import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping

import structlog

from storage.api.conditions import condition
from storage.api.names import NODE_AGENT_FINALIZER
from storage.api.namespaces import NODE_LEASE_NAMESPACE
from storage.api.taints import (
    DISK_PRESSURE, MEMORY_PRESSURE, NETWORK_UNAVAILABLE, NO_EXECUTE, NO_SCHEDULE, NOT_READY, OUT_OF_SERVICE,
    PID_PRESSURE, UNREACHABLE, UNSCHEDULABLE, first_toleration, node_taints, pod_tolerations,
)
from storage.api.timestamps import format_time, parse_time
from storage.controllers.base import ControllerOptions, Reconciler, Result, controller_options
from storage.controllers.owners import publish
from storage.errors import Conflict, NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

DEFAULT_GRACE_SECONDS = 40.0
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
EXCLUDE_DISRUPTION_LABEL = "node.kubernetes.io/exclude-disruption"

NORMAL, PARTIAL_DISRUPTION, FULL_DISRUPTION = "Normal", "PartialDisruption", "FullDisruption"

# Node condition -> status -> the NoSchedule taint key it means (Kubernetes' nodeConditionToTaintKeyStatusMap).
CONDITION_TAINTS: dict[str, dict[str, str]] = {
    "Ready": {"False": NOT_READY, "Unknown": UNREACHABLE},
    "MemoryPressure": {"True": MEMORY_PRESSURE},
    "DiskPressure": {"True": DISK_PRESSURE},
    "PIDPressure": {"True": PID_PRESSURE},
    "NetworkUnavailable": {"True": NETWORK_UNAVAILABLE},
}
_NO_SCHEDULE_MANAGED = frozenset({UNSCHEDULABLE, *(k for m in CONDITION_TAINTS.values() for k in m.values())})
_NO_EXECUTE_MANAGED = frozenset({NOT_READY, UNREACHABLE})
# The agent's conditions the controller turns Unknown when the agent goes silent (Kubernetes' list).
_UNKNOWN_WHEN_SILENT = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")

DISRUPTION_REASON = "DeletionByTaintManager"
DISRUPTION_MESSAGE = "Taint manager: deleting due to NoExecute taint"
PODGC_REASON = "DeletionByPodGC"
PODGC_MESSAGE = "PodGC: node no longer exists"


@dataclass(frozen=True)
class LifecycleConfig:
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    eviction_rate: float = 0.1
    secondary_eviction_rate: float = 0.01
    unhealthy_zone_threshold: float = 0.55
    large_cluster_threshold: int = 50

    @classmethod
    def from_options(cls, options: ControllerOptions) -> "LifecycleConfig":
        return cls(options.node_monitor_grace_period, options.node_eviction_rate, options.secondary_node_eviction_rate,
                   options.unhealthy_zone_threshold, options.large_cluster_size_threshold)


@dataclass(frozen=True)
class Snapshot:
    nodes: list[Obj]  # every node: zone states need them all
    pods: list[Obj]  # the pods bound to the nodes acted on
    last_seen: Mapping[str, dt.datetime]  # node -> when its Lease or heartbeat was last seen to change
    marked: frozenset[tuple[str, str]] = frozenset()  # (pod uid, node's Ready transition) already marked not ready
    act_on: frozenset[str] | None = None  # the nodes whose changes are wanted (None: all)


@dataclass
class NodeChange:
    name: str
    conditions: list[Obj] | None = None  # the new status.conditions
    taints: list[Obj] | None = None  # the new spec.taints
    went_unknown: bool = False


@dataclass(frozen=True)
class PodAction:
    kind: Literal["mark-not-ready", "evict", "force-delete", "orphan"]
    namespace: str
    name: str
    uid: str
    node: str
    episode: str = ""  # mark-not-ready: the node's Ready transition it answers
    force: bool = False  # evict: the node is out of service, so force-delete right after


@dataclass
class Changes:
    nodes: list[NodeChange] = field(default_factory=list)
    pods: list[PodAction] = field(default_factory=list)
    # pod uid -> (namespace, name, when the taint manager deletes it): a tolerated taint with tolerationSeconds
    pending: dict[str, tuple[str, str, dt.datetime]] = field(default_factory=dict)
    next_check: dt.datetime | None = None
    all_disrupted: bool = False

    def wake_at(self, moment: dt.datetime) -> None:
        if self.next_check is None or moment < self.next_check:
            self.next_check = moment


# ---- pure parts -------------------------------------------------------------------------------

def orphan_changes(node_name: str, pods: list[Obj], missing_since: dt.datetime, now: dt.datetime,
                   quarantine: dt.timedelta) -> Changes:
    """L8: the pods of a node that is gone, deleted once it has been gone for ``quarantine``. Only pods
    an agent took (its finalizer): one no agent ever started can simply be deleted, and a pod named
    to a node that never existed is left to its owner, so no timer runs for it."""
    out = Changes()
    live = [p for p in pods if (p.get("spec") or {}).get("nodeName") == node_name
            and NODE_AGENT_FINALIZER in (_meta(p).get("finalizers") or [])]
    if not live:
        return out
    if now - missing_since < quarantine:
        out.wake_at(missing_since + quarantine)
        return out
    for pod in live:
        meta = _meta(pod)
        out.pods.append(PodAction("orphan", meta.get("namespace") or "default", meta.get("name", ""),
                                  meta.get("uid", ""), node_name))
    return out


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def zone_of(node: Obj) -> str:
    """Kubernetes' zone key: region and zone labels together ("" for a node with neither)."""
    labels = _meta(node).get("labels") or {}
    region, zone = labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, "")
    return f"{region}:\x00:{zone}" if region or zone else ""


def zone_state(ready: int, not_ready: int, threshold: float) -> str:
    """Kubernetes' ComputeZoneState: no Ready node -> full disruption; more than two not Ready and at least
    ``threshold`` of the zone -> partial disruption; else normal."""
    if ready == 0 and not_ready > 0:
        return FULL_DISRUPTION
    if not_ready > 2 and not_ready / (ready + not_ready) >= threshold:
        return PARTIAL_DISRUPTION
    return NORMAL


def eviction_rate(state: str, zone_size: int, all_fully_disrupted: bool, config: LifecycleConfig) -> float:
    """Nodes per second that may get a NoExecute taint in a zone (Kubernetes' setLimiterInZone)."""
    if all_fully_disrupted:
        return 0.0
    if state == PARTIAL_DISRUPTION:
        return config.secondary_eviction_rate if zone_size > config.large_cluster_threshold else 0.0
    return config.eviction_rate  # normal, and a fully disrupted zone while others are healthy


def _cond_status(conditions: list[Obj], kind: str) -> str | None:
    for cond in conditions:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def _silent_conditions(node: Obj, now: dt.datetime) -> list[Obj] | None:
    """The conditions of a node whose agent went silent (None when nothing changes)."""
    stamp = format_time(now)
    conditions = copy.deepcopy((node.get("status") or {}).get("conditions") or [])
    changed = False
    present = {c.get("type") for c in conditions}
    for cond in conditions:
        if cond.get("type") in _UNKNOWN_WHEN_SILENT and cond.get("status") != "Unknown":
            cond.update(status="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.",
                        lastTransitionTime=stamp)
            changed = True
    if "Ready" not in present:
        conditions.append({"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                           "message": "Kubelet never posted node status.", "lastHeartbeatTime": None,
                           "lastTransitionTime": stamp})
        changed = True
    return conditions if changed else None


def _taint_key(taint: Obj) -> tuple[str, str]:
    return (str(taint.get("key") or ""), str(taint.get("effect") or ""))


def _no_schedule_wanted(node: Obj, conditions: list[Obj]) -> set[str]:
    wanted = set()
    for cond in conditions:
        key = CONDITION_TAINTS.get(str(cond.get("type")), {}).get(str(cond.get("status")))
        if key:
            wanted.add(key)
    if (node.get("spec") or {}).get("unschedulable"):
        wanted.add(UNSCHEDULABLE)
    return wanted


def _no_execute_key(ready: str | None) -> str | None:
    """A node without a Ready condition yet (just registering) gets nothing until L1 says Unknown."""
    return {"False": NOT_READY, "Unknown": UNREACHABLE}.get(ready or "")


def _excluded(node: Obj) -> bool:
    return EXCLUDE_DISRUPTION_LABEL in (_meta(node).get("labels") or {})


def _ready_since(conditions: list[Obj]) -> str:
    for cond in conditions:
        if cond.get("type") == "Ready":
            return str(cond.get("lastTransitionTime") or "")
    return ""


def _pod_condition(pod: Obj, kind: str) -> str | None:
    cond = condition(pod, kind)
    return None if cond is None else str(cond.get("status"))


def calculate_changes(snap: Snapshot, now: dt.datetime, config: LifecycleConfig) -> Changes:
    """Everything the node lifecycle controller and taint manager should do now, and when to look again."""
    out = Changes()
    grace = dt.timedelta(seconds=config.grace_seconds)
    # 1. L1: the conditions as they are after this pass.
    conditions: dict[str, list[Obj]] = {}
    changed_conditions: dict[str, list[Obj]] = {}
    for node in snap.nodes:
        name = _meta(node).get("name", "")
        current = (node.get("status") or {}).get("conditions") or []
        conditions[name] = current
        seen = snap.last_seen.get(name)
        if seen is None or _cond_status(current, "Ready") == "Unknown":
            continue
        if now - seen >= grace:
            silent = _silent_conditions(node, now)
            if silent is not None:
                conditions[name] = changed_conditions[name] = silent
        elif snap.act_on is None or name in snap.act_on:
            out.wake_at(seen + grace)

    # 2. Zone states (L4), from every node not excluded from disruption checks.
    zones: dict[str, list[Obj]] = {}
    for node in snap.nodes:
        if not _excluded(node):
            zones.setdefault(zone_of(node), []).append(node)
    states: dict[str, str] = {}
    for zone, members in zones.items():
        ready = sum(1 for n in members if _cond_status(conditions[_meta(n)["name"]], "Ready") == "True")
        states[zone] = zone_state(ready, len(members) - ready, config.unhealthy_zone_threshold)
    out.all_disrupted = bool(states) and all(s == FULL_DISRUPTION for s in states.values())

    # 3. Taints (L3, L4). The rate limiter's memory is the cluster itself: the newest timeAdded of a
    # NoExecute not-ready/unreachable taint in the zone, so a restart neither forgets nor repeats it.
    last_tainted: dict[str, dt.datetime] = {}
    for node in snap.nodes:
        for taint in node_taints(node):
            if taint.get("effect") == NO_EXECUTE and taint.get("key") in _NO_EXECUTE_MANAGED:
                added = parse_time(taint.get("timeAdded"))
                zone = zone_of(node)
                if added is not None and (zone not in last_tainted or added > last_tainted[zone]):
                    last_tainted[zone] = added
    candidates: dict[str, list[tuple[str, str]]] = {}  # zone -> [(Ready transition, name)] waiting for the taint
    for node in snap.nodes:
        name = _meta(node).get("name", "")
        ready = _cond_status(conditions[name], "Ready")
        key = _no_execute_key(ready)
        if ready == "True" or key is None or out.all_disrupted:
            continue
        has = {_taint_key(t) for t in node_taints(node)}
        opposite = NOT_READY if key == UNREACHABLE else UNREACHABLE
        if (key, NO_EXECUTE) not in has and (opposite, NO_EXECUTE) not in has:
            candidates.setdefault(zone_of(node), []).append((_ready_since(conditions[name]), name))
    allowed: set[str] = set()
    for zone, waiting in candidates.items():
        waiting.sort()
        rate = eviction_rate(states.get(zone, NORMAL), len(zones.get(zone, [])), out.all_disrupted, config)
        if rate <= 0:
            continue  # a change of zone state (a node event) brings the next look
        period = dt.timedelta(seconds=1 / rate)
        slot = now if zone not in last_tainted else max(now, last_tainted[zone] + period)
        for _, name in waiting:
            if slot <= now:
                allowed.add(name)
            elif snap.act_on is None or name in snap.act_on:
                out.wake_at(slot)
            slot += period

    stamp = format_time(now)
    taints_after: dict[str, list[Obj]] = {}
    for node in snap.nodes:
        name = _meta(node).get("name", "")
        current = node_taints(node)
        taints_after[name] = current
        if snap.act_on is not None and name not in snap.act_on:
            continue
        wanted_no_schedule = _no_schedule_wanted(node, conditions[name])
        ready = _cond_status(conditions[name], "Ready")
        # Excluded nodes only leave the zone counts: they are tainted like any other (as Kubernetes).
        no_execute = _no_execute_key(ready) if ready != "True" and not out.all_disrupted else None
        kept: list[Obj] = []
        have: set[tuple[str, str]] = set()
        for taint in current:
            key, effect = _taint_key(taint)
            if effect == NO_SCHEDULE and key in _NO_SCHEDULE_MANAGED and key not in wanted_no_schedule:
                continue
            if effect == NO_EXECUTE and key in _NO_EXECUTE_MANAGED and key != no_execute:
                continue
            if effect == NO_EXECUTE and not taint.get("timeAdded"):
                taint = {**taint, "timeAdded": stamp}  # tolerationSeconds count from here
            kept.append(taint)
            have.add((key, effect))
        for key in sorted(wanted_no_schedule):
            if (key, NO_SCHEDULE) not in have:
                kept.append({"key": key, "effect": NO_SCHEDULE, "timeAdded": stamp})
        if no_execute is not None and (no_execute, NO_EXECUTE) not in have:
            swapping = any(_taint_key(t) in ((NOT_READY, NO_EXECUTE), (UNREACHABLE, NO_EXECUTE)) for t in current)
            if swapping or name in allowed:
                kept.append({"key": no_execute, "effect": NO_EXECUTE, "timeAdded": stamp})
        change = NodeChange(name)
        if name in changed_conditions:
            change.conditions = changed_conditions[name]
            change.went_unknown = _cond_status(conditions[name], "Ready") == "Unknown"
        if kept != current:
            change.taints = kept
            taints_after[name] = kept
        if change.conditions is not None or change.taints is not None:
            out.nodes.append(change)

    # 4. Pods (L2, L5, L6).
    by_name = {_meta(n).get("name", ""): n for n in snap.nodes}
    for pod in snap.pods:
        node_name = (pod.get("spec") or {}).get("nodeName") or ""
        if node_name not in by_name or (snap.act_on is not None and node_name not in snap.act_on):
            continue
        meta = _meta(pod)
        ref = (meta.get("namespace") or "default", meta.get("name", ""), meta.get("uid", ""), node_name)
        node_conditions = conditions[node_name]
        ready = _cond_status(node_conditions, "Ready")
        if ready != "True":
            episode = _ready_since(node_conditions)
            if ((_pod_condition(pod, "Ready") == "True" or _pod_condition(pod, "ContainersReady") == "True")
                    and (ref[2], episode) not in snap.marked):
                out.pods.append(PodAction("mark-not-ready", *ref, episode=episode))
        taints = taints_after[node_name]
        out_of_service = ready != "True" and any(t.get("key") == OUT_OF_SERVICE for t in taints)
        if meta.get("deletionTimestamp"):
            if out_of_service:
                out.pods.append(PodAction("force-delete", *ref))
            continue
        due = eviction_due(pod, taints, now)
        if due is None:
            continue
        if due <= now:
            out.pods.append(PodAction("evict", *ref, force=out_of_service))
        else:
            out.pending[ref[2]] = (ref[0], ref[1], due)
            out.wake_at(due)
    return out


def eviction_due(pod: Obj, taints: list[Obj], now: dt.datetime) -> dt.datetime | None:
    """When the taint manager deletes ``pod`` from a node with ``taints``; None: never (L5).

    Each NoExecute taint is matched by the pod's first toleration that tolerates it, as Kubernetes'
    GetMatchingTolerations; an untolerated one means now, the smallest tolerationSeconds counted from
    its taint's timeAdded wins, and tolerations without seconds tolerate forever."""
    tolerations = pod_tolerations(pod)
    due: dt.datetime | None = None
    for taint in taints:
        if taint.get("effect") != NO_EXECUTE:
            continue
        toleration = first_toleration(tolerations, taint)
        if toleration is None:
            return now
        seconds = toleration.get("tolerationSeconds")
        if seconds is None:
            continue
        added = parse_time(taint.get("timeAdded")) or now
        try:
            when = added + dt.timedelta(seconds=max(0, int(seconds)))
        except (TypeError, ValueError, OverflowError):
            continue
        if due is None or when < due:
            due = when
    return due


# ---- the reconciler: snapshot in, changes out ------------------------------------------------

class NodeLifecycleReconciler(Reconciler):
    name = "node-lifecycle"
    primary = "nodes"
    # Tests may pin the grace period here; otherwise it comes from the manager's options.
    grace_seconds: float | None = None

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        options = controller_options(ctx)
        config = LifecycleConfig.from_options(options)
        if self.grace_seconds is not None:
            config = LifecycleConfig(self.grace_seconds, config.eviction_rate, config.secondary_eviction_rate,
                                     config.unhealthy_zone_threshold, config.large_cluster_threshold)
        self.config = config
        self._lock = threading.Lock()
        self._decide = threading.Lock()
        # node -> (lease renewTime, Ready heartbeat, when that pair was first seen): Kubernetes' probe timestamps.
        self._seen: dict[str, tuple[str, str, dt.datetime]] = {}
        self._missing: dict[str, dt.datetime] = {}  # node -> when it was first seen gone (L8)
        self._marked: set[tuple[str, str]] = set()
        self._pending: dict[str, tuple[str, str, str]] = {}  # pod uid -> (namespace, name, node): evictions waiting
        self._all_disrupted = False
        self._by_node: dict[str, dict[str, Obj]] = {}  # node -> pod uid -> pod
        add_handler = getattr(ctx.cache, "add_handler", None)
        self._indexed = add_handler is not None
        if add_handler is not None:
            add_handler("pods", self._index_pod)

    # -- keys
    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"leases": self._lease_node, "pods": self._pod_node, "nodes": self._unhealthy_nodes}

    @staticmethod
    def _lease_node(lease: Obj) -> list[str]:
        meta = lease.get("metadata") or {}
        return [meta["name"]] if meta.get("namespace") == NODE_LEASE_NAMESPACE else []

    def _pod_node(self, pod: Obj) -> list[str]:
        """A pod matters only on a node that is not Ready or has NoExecute taints: healthy nodes' pods
        change constantly and need nothing from this controller."""
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            return []
        node = self.ctx.cache.get("nodes", "", node_name)
        if node is None:
            return [node_name]  # bound to a node that is gone (L8)
        ready = _cond_status((node.get("status") or {}).get("conditions") or [], "Ready")
        if ready == "True" and not any(t.get("effect") == NO_EXECUTE for t in node_taints(node)):
            return []
        return [node_name]

    def _unhealthy_nodes(self, changed: Obj) -> list[str]:
        """Any node's change may move a zone's state or free a rate-limit slot for the nodes waiting;
        a deleted node's pods become orphans (L8)."""
        names = []
        changed_name = _meta(changed).get("name")
        if changed_name and self.ctx.cache.get("nodes", "", changed_name) is None:
            names.append(changed_name)
        for node in self.ctx.cache.list("nodes"):
            ready = _cond_status((node.get("status") or {}).get("conditions") or [], "Ready")
            managed = any(_taint_key(t)[0] in _NO_EXECUTE_MANAGED for t in node_taints(node))
            if ready != "True" or managed:
                names.append(_meta(node)["name"])
        return names

    def _index_pod(self, _resource: str, old: Obj | None, new: Obj | None) -> None:
        with self._lock:
            if old is not None:
                node = (old.get("spec") or {}).get("nodeName")
                if node:
                    self._by_node.get(node, {}).pop(_meta(old).get("uid", ""), None)
            if new is not None:
                node = (new.get("spec") or {}).get("nodeName")
                if node:
                    self._by_node.setdefault(node, {})[_meta(new).get("uid", "")] = new

    def _pods_on(self, node_name: str) -> list[Obj]:
        if self._indexed:
            with self._lock:
                return list(self._by_node.get(node_name, {}).values())
        return [p for p in self.ctx.cache.list("pods") if (p.get("spec") or {}).get("nodeName") == node_name]

    # -- probe timestamps
    def _signs(self, node: Obj, lease: Obj | None) -> tuple[str, str]:
        cond = condition(node, "Ready") or {}
        return (str(((lease or {}).get("spec") or {}).get("renewTime") or ""), str(cond.get("lastHeartbeatTime") or ""))

    def _observe(self, name: str, signs: tuple[str, str], now: dt.datetime) -> dt.datetime:
        with self._lock:
            known = self._seen.get(name)
            if known is None or known[:2] != signs:
                self._seen[name] = (*signs, now)
                return now
            return known[2]

    # -- reconcile
    def reconcile(self, key: str) -> Result:
        now = dt.datetime.now(dt.timezone.utc)
        # Node decisions are serialised: two nodes of one zone decided at once would both take the
        # zone's one rate-limit slot. Pod actions touch only the node's own pods and run outside.
        with self._decide:
            changes = self._decide_node(key, now)
        if changes is None:
            return Result(requeue_after=0.1)  # the cache lagged a renewal: look again with it
        for action in changes.pods:
            self._apply_pod(action)
        self._track_pending(key, changes.pending)
        if changes.next_check is None:
            return Result()
        return Result(requeue_after=max(0.05, (changes.next_check - now).total_seconds() + 0.05))

    def _decide_node(self, name: str, now: dt.datetime) -> Changes | None:
        nodes = self.ctx.cache.list("nodes")
        node = next((n for n in nodes if _meta(n).get("name") == name), None)
        if node is None:
            with self._lock:
                self._seen.pop(name, None)
                since = self._missing.setdefault(name, now)
            changes = orphan_changes(name, self._pods_on(name), since, now,
                                     dt.timedelta(seconds=self.config.grace_seconds))
            if not changes.pods and changes.next_check is None:
                with self._lock:
                    self._missing.pop(name, None)
            if changes.pods and self._node_exists(name):  # the cache lagged a re-created node
                with self._lock:
                    self._missing.pop(name, None)
                return Changes()
            return changes
        with self._lock:
            self._missing.pop(name, None)
        last_seen: dict[str, dt.datetime] = {}
        for other in nodes:
            other_name = _meta(other)["name"]
            lease = self.ctx.cache.get("leases", NODE_LEASE_NAMESPACE, other_name)
            last_seen[other_name] = self._observe(other_name, self._signs(other, lease), now)
        with self._lock:
            marked = frozenset(self._marked)
        snap = Snapshot(nodes=nodes, pods=self._pods_on(name), last_seen=last_seen, marked=marked,
                        act_on=frozenset({name}))
        changes = calculate_changes(snap, now, self.config)
        self._note_disruption(changes.all_disrupted, nodes, now)
        for change in changes.nodes:
            if change.went_unknown and not self._still_silent(change.name, now):
                return None
            self._apply_node(node, change)
        return changes

    def _note_disruption(self, disrupted: bool, nodes: list[Obj], now: dt.datetime) -> None:
        """Leaving "every zone fully disrupted" gives every node a fresh grace period, as Kubernetes does:
        the nodes were probably cut off by the control plane's own trouble and deserve time to report."""
        with self._lock:
            was, self._all_disrupted = self._all_disrupted, disrupted
            if was and not disrupted:
                for node in nodes:
                    name = _meta(node)["name"]
                    if name in self._seen:
                        self._seen[name] = (*self._seen[name][:2], now)
        if disrupted != was:
            log.info("node_lifecycle.disruption", all_zones_fully_disrupted=disrupted)

    def _still_silent(self, name: str, now: dt.datetime) -> bool:
        """The store, not the cache, decides that a node went silent: a renewal may still be on its way."""
        try:
            node = self.ctx.store.get("nodes", "", name)
        except NotFound:
            return False
        try:
            lease: Obj | None = self.ctx.store.get("leases", NODE_LEASE_NAMESPACE, name)
        except NotFound:
            lease = None
        seen = self._observe(name, self._signs(node, lease), now)
        return now - seen >= dt.timedelta(seconds=self.config.grace_seconds)

    def _apply_node(self, node: Obj, change: NodeChange) -> None:
        updated = copy.deepcopy(node)
        if change.conditions is not None:
            updated.setdefault("status", {})["conditions"] = change.conditions
        if change.taints is not None:
            spec = updated.setdefault("spec", {})
            if change.taints:
                spec["taints"] = change.taints
            else:
                spec.pop("taints", None)
        saved = publish(self.ctx.cache, "nodes", self.ctx.store.update("nodes", updated))
        if change.taints is not None:
            log.info("node_lifecycle.taints", node=change.name,
                     taints=[f"{t.get('key')}:{t.get('effect')}" for t in change.taints])
        if change.went_unknown:
            log.info("node_lifecycle.unknown", node=change.name, grace_seconds=self.config.grace_seconds)
            self.ctx.events.record(saved, "Normal", "NodeNotReady", f"Node {change.name} status is now: NodeNotReady")

    def _fresh_pod(self, action: PodAction) -> Obj | None:
        pod = self.ctx.cache.get("pods", action.namespace, action.name)
        if pod is None or _meta(pod).get("uid") != action.uid:
            return None
        return copy.deepcopy(pod)

    def _apply_pod(self, action: PodAction) -> None:
        pod = self._fresh_pod(action)
        if pod is None:
            return
        if action.kind == "mark-not-ready":
            self._mark_not_ready(pod, action)
        elif action.kind == "evict":
            self._evict(pod, action)
        elif action.kind == "orphan":
            self._collect_orphan(pod, action)
        else:
            force_delete_pod(self.ctx.store, self.ctx.cache, pod)
            log.info("node_lifecycle.force_deleted", pod=f"{action.namespace}/{action.name}", node=action.node,
                     reason="node is not ready and out of service")

    def _mark_not_ready(self, pod: Obj, action: PodAction) -> None:
        """Kubernetes' MarkPodsNotReady (L2): the agent that would say otherwise is silent or not ready."""
        stamp = format_time(dt.datetime.now(dt.timezone.utc))
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") in ("Ready", "ContainersReady") and cond.get("status") != "False":
                cond.update(status="False", lastTransitionTime=stamp)
        try:
            publish(self.ctx.cache, "pods", self.ctx.store.update("pods", pod))
        except NotFound:
            return
        with self._lock:
            self._marked.add((action.uid, action.episode))
            if len(self._marked) > 100_000:  # episodes long over; a repeat mark costs one write
                self._marked.clear()
        self.ctx.events.record(pod, "Warning", "NodeNotReady", "Node is not ready")

    def _node_exists(self, name: str) -> bool:
        try:
            self.ctx.store.get("nodes", "", name)
        except NotFound:
            return False
        return True

    def _collect_orphan(self, pod: Obj, action: PodAction) -> None:
        """Kubernetes' pod GC of an orphaned pod (L8): DisruptionTarget, Failed, deleted with no grace."""
        conditions = pod.setdefault("status", {}).setdefault("conditions", [])
        if not any(c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in conditions):
            conditions.append({"type": "DisruptionTarget", "status": "True", "reason": PODGC_REASON,
                               "message": PODGC_MESSAGE, "lastProbeTime": None,
                               "lastTransitionTime": format_time(dt.datetime.now(dt.timezone.utc))})
            try:
                pod = publish(self.ctx.cache, "pods", self.ctx.store.update("pods", pod))
            except (NotFound, Conflict):
                return  # changed meanwhile: the next event brings it back here
        force_delete_pod(self.ctx.store, self.ctx.cache, pod)
        log.info("node_lifecycle.orphan_deleted", pod=f"{action.namespace}/{action.name}", node=action.node)

    def _evict(self, pod: Obj, action: PodAction) -> None:
        """The taint manager's deletion (L5): the event, DisruptionTarget, then the delete."""
        ref = f"{action.namespace}/{action.name}"
        self.ctx.events.record(pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {ref}")
        conditions = pod.setdefault("status", {}).setdefault("conditions", [])
        target = next((c for c in conditions if c.get("type") == "DisruptionTarget"), None)
        wanted = {"type": "DisruptionTarget", "status": "True", "reason": DISRUPTION_REASON, "message": DISRUPTION_MESSAGE}
        if target is None or any(target.get(k) != v for k, v in wanted.items()):
            if target is None:
                target = {}
                conditions.append(target)
            target.update(wanted, lastProbeTime=None, lastTransitionTime=format_time(dt.datetime.now(dt.timezone.utc)))
            pod = publish(self.ctx.cache, "pods", self.ctx.store.update("pods", pod))
        last = self.ctx.store.delete("pods", action.namespace, action.name,
                                     resource_version=str(_meta(pod).get("resourceVersion") or "") or None)
        log.info("node_lifecycle.evicted", pod=ref, node=action.node)
        with self._lock:
            self._pending.pop(action.uid, None)
        if _meta(last).get("finalizers"):
            last = publish(self.ctx.cache, "pods", last)
            if action.force:
                force_delete_pod(self.ctx.store, self.ctx.cache, last)
                log.info("node_lifecycle.force_deleted", pod=ref, node=action.node,
                         reason="node is not ready and out of service")

    def _track_pending(self, node_name: str, pending: dict[str, tuple[str, str, dt.datetime]]) -> None:
        """Kubernetes' "Cancelling deletion of Pod" when a scheduled eviction is no longer due."""
        cancelled = []
        with self._lock:
            for uid, (namespace, name, on_node) in list(self._pending.items()):
                if on_node == node_name and uid not in pending:
                    del self._pending[uid]
                    cancelled.append((namespace, name, uid))
            for uid, (namespace, name, _due) in pending.items():
                self._pending[uid] = (namespace, name, node_name)
        for namespace, name, uid in cancelled:
            pod = self.ctx.cache.get("pods", namespace, name)
            if pod is not None and _meta(pod).get("uid") == uid and not _meta(pod).get("deletionTimestamp"):
                self.ctx.events.record(pod, "Normal", "TaintManagerEviction",
                                       f"Cancelling deletion of Pod {namespace}/{name}")


def force_delete_pod(store: Any, cache: Any, pod: Obj) -> None:
    """Delete a pod at once, without waiting for its agent: Kubernetes' pod GC for an out-of-service node
    marks it Failed (its agent cannot say so any more), then deletes it with grace period 0 (G2: the
    agent's finalizer no longer holds it; other finalizers still do). The agent, if it ever comes
    back, stops the containers of a pod it no longer finds."""
    meta = _meta(pod)
    namespace, name, uid = meta.get("namespace") or "default", meta.get("name", ""), meta.get("uid", "")
    for _attempt in range(5):
        try:
            current = store.get("pods", namespace, name)
        except NotFound:
            return
        if _meta(current).get("uid") != uid:
            return
        try:
            if (current.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                current = copy.deepcopy(current)
                current.setdefault("status", {})["phase"] = "Failed"
                current = store.update("pods", current)
            last = store.delete("pods", namespace, name, resource_version=_meta(current).get("resourceVersion"),
                                grace_seconds=0)
        except NotFound:
            return
        except Conflict:
            continue
        if _meta(last).get("finalizers"):
            publish(cache, "pods", last)
        return
