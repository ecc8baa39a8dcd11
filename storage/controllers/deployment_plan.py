"""What a Deployment controller does, as a pure function of what it sees (SEMANTICS D1-D4).

``calculate_changes(deployment, replica_sets, old_pods, now)`` follows
Kubernetes' deployment controller: the ReplicaSet whose template equals the
Deployment's (ignoring ``pod-template-hash``) is the new one, every other
owned set is old. RollingUpdate grows the new set while the sum of all sets'
``spec.replicas`` stays within ``replicas + maxSurge``, and shrinks old sets
while the available pods stay at least ``replicas - maxUnavailable``.
Recreate scales every old set to zero, waits until their pods are gone,
then creates the new set. A paused Deployment only follows ``replicas``.

An old set's available count is taken as ``min(status.availableReplicas,
spec.replicas)``: a set just scaled down will soon have no more pods than
its spec, and the ReplicaSet controller removes not-ready pods first, so a
status that lags a scale-down can never lead to a second, unsafe one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from statefulset.revision import revision_hash
from storage.api.timestamps import format_time, parse_time

Obj = dict[str, Any]

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
# Annotations Kubernetes never copies from a Deployment to its ReplicaSets (they describe one object).
_NOT_COPIED = {
    REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
    "kubectl.kubernetes.io/last-applied-configuration", "deprecated.deployment.rollback.to",
}
DEFAULT_PROGRESS_DEADLINE = 600


# --- actions -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CreateReplicaSet:
    replica_set: Obj


@dataclass(frozen=True)
class UpdateReplicaSet:
    """Write this version of a set (spec.replicas and/or annotations changed); carries its resourceVersion."""

    replica_set: Obj


@dataclass(frozen=True)
class DeleteReplicaSet:
    name: str
    resource_version: str


@dataclass(frozen=True)
class SetDeploymentAnnotations:
    annotations: dict[str, str]


@dataclass(frozen=True)
class SetDeploymentStatus:
    status: Obj


Action = CreateReplicaSet | UpdateReplicaSet | DeleteReplicaSet | SetDeploymentAnnotations | SetDeploymentStatus


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None


# --- small readers ------------------------------------------------------------------------------

def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def replicas_of(obj: Obj) -> int:
    value = _spec(obj).get("replicas")
    return 1 if value is None else int(value)


def revision_of(rs: Obj) -> int:
    try:
        return int((_meta(rs).get("annotations") or {}).get(REVISION) or 0)
    except ValueError:
        return 0


def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    """Kubernetes' GetScaledValueFromIntOrPercent: ``25%`` of 10 is 3 rounded up (surge), 2 down (unavailable)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        return -(-percent * total // 100) if round_up else percent * total // 100
    return int(text)


def fenceposts(deployment: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts; both zero would deadlock, so unavailable becomes 1."""
    strategy = _spec(deployment).get("strategy") or {}
    desired = replicas_of(deployment)
    if strategy.get("type") == "Recreate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, desired)


def template_without_hash(template: Obj) -> Obj:
    out = copy.deepcopy(template or {})
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
        if not labels:
            out["metadata"].pop("labels")
    if "metadata" in out and not out["metadata"]:
        out.pop("metadata")
    # An empty resources block is no resources (kubectl's rollout undo sends one): the same template either way.
    for key in ("initContainers", "containers"):
        for container in (out.get("spec") or {}).get(key) or []:
            if isinstance(container, dict) and container.get("resources") == {}:
                container.pop("resources")
    return out


def template_hash(template: Obj, collision_count: int = 0) -> str:
    return revision_hash(template_without_hash(template), collision_count)


def copied_annotations(deployment: Obj) -> dict[str, str]:
    return {k: v for k, v in (_meta(deployment).get("annotations") or {}).items() if k not in _NOT_COPIED}


def _available(rs: Obj) -> int:
    return min(int(_status(rs).get("availableReplicas") or 0), replicas_of(rs))


def _by_age(sets: list[Obj]) -> list[Obj]:
    return sorted(sets, key=lambda rs: (_meta(rs).get("creationTimestamp") or "", _meta(rs).get("name") or ""))


def split_sets(deployment: Obj, replica_sets: list[Obj]) -> tuple[Obj | None, list[Obj]]:
    """(the new set, the old ones oldest first); the oldest of several equal sets is the new one."""
    wanted = template_without_hash(_spec(deployment).get("template") or {})
    new: Obj | None = None
    old: list[Obj] = []
    for rs in _by_age(replica_sets):
        if new is None and template_without_hash(_spec(rs).get("template") or {}) == wanted:
            new = rs
        else:
            old.append(rs)
    return new, old


# --- the plan ----------------------------------------------------------------------------------

class _Work:
    """Sets as they will be after the actions so far; every change becomes one UpdateReplicaSet."""

    def __init__(self, deployment: Obj, replica_sets: list[Obj]) -> None:
        self.deployment = deployment
        self.sets: dict[str, Obj] = {_meta(rs)["name"]: rs for rs in replica_sets}
        self.actions: list[Action] = []

    def scale(self, rs: Obj, replicas: int, surge: int) -> Obj:
        name = _meta(rs)["name"]
        current = self.sets.get(name, rs)
        desired = str(replicas_of(self.deployment))
        max_total = str(replicas_of(self.deployment) + surge)
        annotations = dict(_meta(current).get("annotations") or {})
        if replicas_of(current) == replicas and annotations.get(DESIRED_REPLICAS) == desired \
                and annotations.get(MAX_REPLICAS) == max_total:
            return current
        updated = copy.deepcopy(current)
        updated["spec"]["replicas"] = replicas
        updated["metadata"]["annotations"] = {**annotations, DESIRED_REPLICAS: desired, MAX_REPLICAS: max_total}
        self.sets[name] = updated
        self.actions.append(UpdateReplicaSet(updated))
        return updated


def _new_replica_set(deployment: Obj, replicas: int, revision: int, surge: int) -> Obj:
    dmeta = _meta(deployment)
    collision = int(_status(deployment).get("collisionCount") or 0)
    template = copy.deepcopy(_spec(deployment).get("template") or {})
    pod_hash = template_hash(template, collision)
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: pod_hash}
    selector = copy.deepcopy(_spec(deployment).get("selector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
    spec: Obj = {"replicas": replicas, "selector": selector, "template": template}
    if _spec(deployment).get("minReadySeconds"):
        spec["minReadySeconds"] = _spec(deployment)["minReadySeconds"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{dmeta['name']}-{pod_hash}",
            "namespace": dmeta.get("namespace") or "default",
            "labels": dict(tmeta["labels"]),
            "annotations": {
                **copied_annotations(deployment),
                REVISION: str(revision),
                DESIRED_REPLICAS: str(replicas_of(deployment)),
                MAX_REPLICAS: str(replicas_of(deployment) + surge),
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": dmeta["name"], "uid": dmeta.get("uid", ""),
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": spec,
    }


def _rolling_new_replicas(deployment: Obj, new: Obj, all_sets: list[Obj], surge: int) -> int:
    """Kubernetes' NewRSNewReplicas for RollingUpdate."""
    desired = replicas_of(deployment)
    current = replicas_of(new)
    if current >= desired:
        return desired
    total = sum(replicas_of(rs) for rs in all_sets)
    room = desired + surge - total
    if room <= 0:
        return current
    return current + min(room, desired - current)


def _scale_down_old(work: _Work, new: Obj | None, old_names: list[str], desired: int, surge: int,
                    unavailable: int) -> None:
    """Kubernetes' reconcileOldReplicaSets: unhealthy pods first, then healthy ones within maxUnavailable."""
    old = [work.sets[n] for n in old_names]
    if sum(replicas_of(rs) for rs in old) == 0:
        return
    all_sets = old + ([work.sets[_meta(new)["name"]]] if new is not None else [])
    all_pods = sum(replicas_of(rs) for rs in all_sets)
    min_available = desired - unavailable
    new_now = work.sets[_meta(new)["name"]] if new is not None else None
    new_unavailable = (replicas_of(new_now) - _available(new_now)) if new_now is not None else 0
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return
    # Unhealthy replicas of old sets cost no availability: drop them first.
    scaled = 0
    for name in old_names:
        if scaled >= max_scaled_down:
            break
        rs = work.sets[name]
        unhealthy = replicas_of(rs) - _available(rs)
        if replicas_of(rs) == 0 or unhealthy <= 0:
            continue
        step = min(max_scaled_down - scaled, unhealthy)
        work.scale(rs, replicas_of(rs) - step, surge)
        scaled += step
    # Then healthy ones, as long as availability stays at least replicas - maxUnavailable.
    available = sum(_available(work.sets[_meta(rs)["name"]]) for rs in all_sets)
    budget = available - min_available
    if budget <= 0:
        return
    scaled = 0
    for name in old_names:
        if scaled >= budget:
            break
        rs = work.sets[name]
        if replicas_of(rs) == 0:
            continue
        step = min(replicas_of(rs), budget - scaled)
        work.scale(rs, replicas_of(rs) - step, surge)
        scaled += step


def _cleanup(work: _Work, old_names: list[str], limit: int) -> None:
    """revisionHistoryLimit: delete the oldest revisions among old sets that run nothing."""
    idle = [work.sets[n] for n in old_names if replicas_of(work.sets[n]) == 0
            and int(_status(work.sets[n]).get("replicas") or 0) == 0
            and int(_status(work.sets[n]).get("observedGeneration") or 0) >= int(_meta(work.sets[n]).get("generation") or 0)
            and not _meta(work.sets[n]).get("deletionTimestamp")]
    excess = len(idle) - limit
    if excess <= 0:
        return
    for rs in sorted(idle, key=lambda r: (revision_of(r), _meta(r).get("creationTimestamp") or ""))[:excess]:
        work.actions.append(DeleteReplicaSet(_meta(rs)["name"], str(_meta(rs).get("resourceVersion") or "")))


def _condition(status: Obj, kind: str) -> Obj | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def _set_condition(status: Obj, cond: Obj) -> None:
    conditions = status.setdefault("conditions", [])
    for i, existing in enumerate(conditions):
        if existing.get("type") == cond["type"]:
            conditions[i] = cond
            return
    conditions.append(cond)


def _new_condition(kind: str, status: str, reason: str, message: str, stamp: str, previous: Obj | None,
                   keep_update_time: bool = False) -> Obj:
    same = previous is not None and previous.get("status") == status
    return {
        "type": kind, "status": status,
        "lastUpdateTime": previous.get("lastUpdateTime", stamp) if (keep_update_time and previous) else stamp,
        "lastTransitionTime": previous.get("lastTransitionTime", stamp) if same and previous else stamp,
        "reason": reason, "message": message,
    }


def _status_of(deployment: Obj, new: Obj | None, sets: list[Obj], unavailable: int, now: datetime,
               created: str | None) -> tuple[Obj, float | None]:
    """The Deployment's next status and, while a rollout runs, when its progress deadline falls."""
    desired = replicas_of(deployment)
    old_status = _status(deployment)
    status: Obj = {
        "observedGeneration": int(_meta(deployment).get("generation") or 0),
        "replicas": sum(int(_status(rs).get("replicas") or 0) for rs in sets),
        "updatedReplicas": int(_status(new).get("replicas") or 0) if new is not None else 0,
        "readyReplicas": sum(int(_status(rs).get("readyReplicas") or 0) for rs in sets),
        "availableReplicas": sum(int(_status(rs).get("availableReplicas") or 0) for rs in sets),
    }
    status["unavailableReplicas"] = max(0, sum(replicas_of(rs) for rs in sets) - status["availableReplicas"])
    if old_status.get("collisionCount"):
        status["collisionCount"] = old_status["collisionCount"]
    status["conditions"] = copy.deepcopy(old_status.get("conditions") or [])
    stamp = format_time(now)
    previous_available = _condition(old_status, "Available")
    if status["availableReplicas"] >= desired - unavailable:
        cond = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    else:
        cond = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    if previous_available is None or (previous_available.get("status"), previous_available.get("reason")) != cond[:2]:
        _set_condition(status, _new_condition("Available", *cond, stamp, previous_available))

    previous = _condition(old_status, "Progressing")
    deadline = _spec(deployment).get("progressDeadlineSeconds")
    rs_name = _meta(new)["name"] if new is not None else ""
    requeue: float | None = None
    if _spec(deployment).get("paused"):
        if previous is None or previous.get("reason") != "DeploymentPaused":
            _set_condition(status, _new_condition("Progressing", "Unknown", "DeploymentPaused",
                                                  "Deployment is paused", stamp, previous))
        return status, None
    if previous is not None and previous.get("reason") == "DeploymentPaused":
        previous = _new_condition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", stamp, previous)
        _set_condition(status, previous)
    if deadline is None:
        return status, None
    complete = (new is not None and status["updatedReplicas"] == desired and status["replicas"] == desired
                and status["availableReplicas"] == desired and replicas_of(new) == desired)
    old_replicas_before = int(old_status.get("replicas") or 0) - int(old_status.get("updatedReplicas") or 0)
    old_replicas_now = status["replicas"] - status["updatedReplicas"]
    progressed = (status["updatedReplicas"] > int(old_status.get("updatedReplicas") or 0)
                  or status["readyReplicas"] > int(old_status.get("readyReplicas") or 0)
                  or status["availableReplicas"] > int(old_status.get("availableReplicas") or 0)
                  or old_replicas_now < old_replicas_before)
    if created is not None:
        _set_condition(status, _new_condition("Progressing", "True", "NewReplicaSetCreated",
                                              f'Created new replica set "{created}"', stamp, previous))
    elif complete:
        if previous is None or previous.get("reason") != "NewReplicaSetAvailable":
            _set_condition(status, _new_condition("Progressing", "True", "NewReplicaSetAvailable",
                                                  f'ReplicaSet "{rs_name}" has successfully progressed.', stamp, previous))
    elif progressed or previous is None or previous.get("reason") in ("DeploymentResumed", "NewReplicaSetAvailable"):
        reason = "ReplicaSetUpdated" if progressed or previous is not None else "FoundNewReplicaSet"
        message = f'ReplicaSet "{rs_name}" is progressing.' if reason == "ReplicaSetUpdated" \
            else f'Found new replica set "{rs_name}"'
        _set_condition(status, _new_condition("Progressing", "True", reason, message, stamp, previous))
    elif previous.get("reason") != "ProgressDeadlineExceeded":
        since = parse_time(previous.get("lastUpdateTime"))
        if since is not None:
            left = float(deadline) - (now - since).total_seconds()
            if left <= 0:
                _set_condition(status, _new_condition("Progressing", "False", "ProgressDeadlineExceeded",
                                                      f'ReplicaSet "{rs_name}" has timed out progressing.', stamp, previous))
            else:
                requeue = left + 1.0
    if not complete and requeue is None:
        cond = _condition(status, "Progressing")
        if cond is not None and cond.get("status") == "True":
            requeue = float(deadline) + 1.0
    return status, requeue


def calculate_changes(deployment: Obj, replica_sets: list[Obj], old_pods: dict[str, int], now: datetime) -> Plan:
    """The actions that move ``deployment`` one step towards its spec.

    ``replica_sets`` are the sets this Deployment controls (not being deleted);
    ``old_pods`` counts each set's pods that have not finished (terminating ones
    included), which Recreate waits on.
    """
    plan = Plan()
    desired = replicas_of(deployment)
    surge, unavailable = fenceposts(deployment)
    new, old = split_sets(deployment, replica_sets)
    work = _Work(deployment, replica_sets)
    paused = bool(_spec(deployment).get("paused"))
    recreate = (_spec(deployment).get("strategy") or {}).get("type") == "Recreate"
    max_old_revision = max((revision_of(rs) for rs in old), default=0)
    created: str | None = None

    # The new set carries the newest revision, also when an old template comes back (a rollback).
    if new is not None and not paused and revision_of(new) <= max_old_revision:
        updated = copy.deepcopy(work.sets[_meta(new)["name"]])
        annotations = {**(_meta(updated).get("annotations") or {}), **copied_annotations(deployment)}
        history = [h for h in (annotations.get(REVISION_HISTORY) or "").split(",") if h]
        if revision_of(new):
            history.append(str(revision_of(new)))
        annotations[REVISION] = str(max_old_revision + 1)
        if history:
            annotations[REVISION_HISTORY] = ",".join(history)
        updated["metadata"]["annotations"] = annotations
        work.sets[_meta(new)["name"]] = updated
        work.actions.append(UpdateReplicaSet(updated))
        new = updated
    elif new is not None and not paused:
        annotations = _meta(new).get("annotations") or {}
        wanted = copied_annotations(deployment)
        if any(annotations.get(k) != v for k, v in wanted.items()):
            updated = copy.deepcopy(new)
            updated["metadata"]["annotations"] = {**annotations, **wanted}
            work.sets[_meta(new)["name"]] = updated
            work.actions.append(UpdateReplicaSet(updated))
            new = updated

    old_names = [_meta(rs)["name"] for rs in old]
    if paused:
        # Follow replicas only: scale the one set that runs pods (or the new set when none does).
        active = [work.sets[n] for n in work.sets if replicas_of(work.sets[n]) > 0]
        target = active[0] if len(active) == 1 else (new if not active else None)
        if target is not None:
            work.scale(target, desired, surge)
    elif recreate:
        active_old = [work.sets[n] for n in old_names if replicas_of(work.sets[n]) > 0]
        for rs in active_old:
            work.scale(rs, 0, surge)
        running = sum(old_pods.get(n, 0) for n in old_names)
        if not active_old and running == 0:
            if new is None:
                fresh = _new_replica_set(deployment, desired, max_old_revision + 1, surge)
                work.actions.append(CreateReplicaSet(fresh))
                created = _meta(fresh)["name"]
            else:
                work.scale(new, desired, surge)
    else:
        if new is None:
            total = sum(replicas_of(rs) for rs in old)
            start = max(0, min(desired, desired + surge - total))
            fresh = _new_replica_set(deployment, start, max_old_revision + 1, surge)
            work.actions.append(CreateReplicaSet(fresh))
            created = _meta(fresh)["name"]
            new = {**fresh, "status": {}}
            work.sets[created] = new
        else:
            before = replicas_of(work.sets[_meta(new)["name"]])
            after = _rolling_new_replicas(deployment, work.sets[_meta(new)["name"]], list(work.sets.values()), surge)
            if after != before:
                work.scale(work.sets[_meta(new)["name"]], after, surge)
            if after <= before:
                # As Kubernetes: old sets shrink only in a pass that did not grow the new one.
                _scale_down_old(work, work.sets[_meta(new)["name"]], old_names, desired, surge, unavailable)

    new_now = work.sets.get(_meta(new)["name"]) if new is not None and created is None else None
    sets_now = [work.sets[n] for n in work.sets if n != created]
    done = new_now is not None and replicas_of(new_now) == desired and all(
        replicas_of(work.sets[n]) == 0 for n in old_names)
    if paused or done:
        _cleanup(work, old_names, int(_spec(deployment).get("revisionHistoryLimit", 10)))

    plan.actions.extend(work.actions)
    revision = str(max_old_revision + 1) if created is not None else (
        str(revision_of(new_now)) if new_now is not None else None)
    if revision is not None:
        annotations = dict(_meta(deployment).get("annotations") or {})
        if annotations.get(REVISION) != revision:
            annotations[REVISION] = revision
            plan.actions.append(SetDeploymentAnnotations(annotations))
    status, plan.requeue_after = _status_of(deployment, new_now, sets_now, unavailable, now, created)
    if status != _status(deployment):
        plan.actions.append(SetDeploymentStatus(status))
    return plan
