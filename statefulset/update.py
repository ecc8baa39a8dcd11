"""The StatefulSet decision: from the set and what exists, the actions to take next (S1-S5, S7).

``calculate_changes`` is pure and follows Kubernetes' ``updateStatefulSet``
(``stateful_set_control.go``): scale first (OrderedReady or Parallel), then
roll out (RollingUpdate with partition and maxUnavailable, or OnDelete),
keep revision history, apply the claim retention policy, and report status.
The controller applies the actions in order and stops at the first error.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Union

from statefulset import health, identity
from statefulset.identity import meta, spec
from statefulset.revision import RevisionPlan, apply_revision, plan_revisions, revisions_to_delete
from storage.api.timestamps import format_time

Obj = dict[str, Any]

BLOCKED_CONDITION = "OrderedReadyBlocked"


@dataclass(frozen=True)
class CreateRevision:
    revision: Obj


@dataclass(frozen=True)
class RenumberRevision:
    """Rollback: an older revision's template is current again, so it gets the newest number."""

    revision: Obj


@dataclass(frozen=True)
class DeleteRevision:
    name: str


@dataclass(frozen=True)
class CreateClaim:
    claim: Obj
    pod_name: str


@dataclass(frozen=True)
class UpdateClaim:
    """Rewrite the claim's ownerReferences for the retention policy."""

    claim: Obj


@dataclass(frozen=True)
class DeleteClaim:
    name: str
    uid: str
    resource_version: str


@dataclass(frozen=True)
class CreatePod:
    pod: Obj
    ordinal: int


@dataclass(frozen=True)
class UpdatePod:
    """Restore the member's identity labels and claim volumes."""

    pod: Obj


@dataclass(frozen=True)
class DeletePod:
    name: str
    uid: str
    resource_version: str
    reason: Literal["failed", "succeeded", "scale-down", "update"]


@dataclass(frozen=True)
class UpdateStatus:
    status: Obj


@dataclass(frozen=True)
class RequeueAfter:
    """Nothing changes by itself: look again after ``seconds`` (minReadySeconds running out)."""

    seconds: float


Action = Union[
    CreateRevision, RenumberRevision, DeleteRevision, CreateClaim, UpdateClaim, DeleteClaim,
    CreatePod, UpdatePod, DeletePod, UpdateStatus, RequeueAfter,
]


def _pod_policy_parallel(sts: Obj) -> bool:
    return spec(sts).get("podManagementPolicy") == "Parallel"


def _strategy(sts: Obj) -> Obj:
    return spec(sts).get("updateStrategy") or {"type": "RollingUpdate"}


def _partition(sts: Obj) -> int:
    rolling = _strategy(sts).get("rollingUpdate") or {}
    return int(rolling.get("partition") or 0)


def max_unavailable(sts: Obj) -> int:
    """``rollingUpdate.maxUnavailable`` as a pod count: percentages round down, never below 1."""
    value = (_strategy(sts).get("rollingUpdate") or {}).get("maxUnavailable")
    if value is None:
        return 1
    if isinstance(value, str) and value.endswith("%"):
        count = math.floor(int(value[:-1]) * identity.replicas(sts) / 100)
    else:
        count = int(value)
    return max(1, count)


@dataclass
class _Pass:
    """One reconcile pass: the actions so far and the status counters upstream keeps alongside."""

    sts: Obj
    now: datetime
    current_name: str
    update_name: str
    actions: list[Action] = field(default_factory=list)
    replicas: int = 0
    ready: int = 0
    available: int = 0
    current: int = 0
    updated: int = 0
    blocker: str | None = None
    requeue: float | None = None
    deleted: set[str] = field(default_factory=set)  # members this pass deletes already

    def count(self, pod: Obj, sign: int) -> None:
        rev = identity.revision_of(pod)
        if rev == self.current_name:
            self.current += sign
        if rev == self.update_name:
            self.updated += sign

    def block(self, pod: Obj) -> None:
        if self.blocker is None:
            self.blocker = blocker_message(pod, health.min_ready_seconds(self.sts), self.now)
        remaining = health.available_in(pod, health.min_ready_seconds(self.sts), self.now)
        if health.is_running_and_ready(pod) and remaining > 0:
            self.requeue = remaining if self.requeue is None else min(self.requeue, remaining)

    def delete(self, pod: Obj, reason: Literal["failed", "succeeded", "scale-down", "update"]) -> None:
        pmeta = meta(pod)
        self.deleted.add(pmeta["name"])
        self.actions.append(DeletePod(pmeta["name"], pmeta.get("uid", ""), str(pmeta.get("resourceVersion", "")), reason))


def blocker_message(pod: Obj, min_ready: int, now: datetime) -> str:
    name = meta(pod).get("name", "")
    return f"Waiting for pod {name} to be Running and Ready: {health.why_unhealthy(pod, min_ready, now)}"


def describe_blocker(sts: Obj, pods: list[Obj], now: datetime | None = None) -> str | None:
    """Which member holds an OrderedReady set back and why (S7), or None when nothing does.

    The lowest-ordinal member of the set's range that exists and is not
    Running, Ready and available: OrderedReady makes no progress past it.
    """
    if _pod_policy_parallel(sts):
        return None
    when = now or datetime.now().astimezone()
    min_ready = health.min_ready_seconds(sts)
    wanted = identity.ordinal_range(sts)
    by_ordinal = {identity.ordinal_of(p): p for p in pods if identity.is_member_name(sts, meta(p).get("name", ""))}
    for ordinal in wanted:
        pod = by_ordinal.get(ordinal)
        if pod is None:
            return None  # creation is still due: nothing is stuck yet
        if not (health.is_running_and_available(pod, min_ready, when) and not health.is_terminating(pod)):
            return blocker_message(pod, min_ready, when)
    return None


def _claims_by_name(claims: list[Obj]) -> dict[str, Obj]:
    return {meta(c)["name"]: c for c in claims}


def _owner_refs_for(claim: Obj, sts: Obj) -> list[Obj]:
    """The claim's set/pod owner references that the retention policy governs."""
    set_uid = meta(sts).get("uid")
    return [
        r for r in meta(claim).get("ownerReferences") or []
        if (r.get("kind") == "StatefulSet" and r.get("uid") == set_uid)
        or (r.get("kind") == "Pod" and identity.is_member_name(sts, r.get("name", "")))
    ]


def _ref_key(refs: list[Obj]) -> set[tuple[str, str]]:
    return {(r.get("kind", ""), r.get("uid", "")) for r in refs}


def _claim_owner_updates(sts: Obj, pods_by_ordinal: dict[int, Obj], claims: dict[str, Obj]) -> list[Action]:
    out: list[Action] = []
    for ordinal, pod in sorted(pods_by_ordinal.items()):
        for template in identity.claim_templates(sts):
            claim = claims.get(identity.claim_name(meta(template)["name"], sts, ordinal))
            if claim is None or meta(claim).get("deletionTimestamp"):
                continue
            want = identity.desired_claim_owners(sts, ordinal, pod)
            have = _owner_refs_for(claim, sts)
            if _ref_key(want) == _ref_key(have):
                continue
            updated = copy.deepcopy(claim)
            governed = _ref_key(have)
            others = [r for r in meta(claim).get("ownerReferences") or [] if (r.get("kind", ""), r.get("uid", "")) not in governed]
            updated["metadata"]["ownerReferences"] = others + want
            if not updated["metadata"]["ownerReferences"]:
                del updated["metadata"]["ownerReferences"]
            out.append(UpdateClaim(updated))
    return out


def _new_versioned_pod(
    sts: Obj, current_set: Obj, update_set: Obj, plan: RevisionPlan, ordinal: int
) -> Obj:
    """Upstream ``newVersionedStatefulSetPod``: members below the partition stay at the current revision."""
    strategy = _strategy(sts)
    index = ordinal - identity.start_ordinal(sts)
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        if strategy.get("rollingUpdate") is None:
            stay = index < int((sts.get("status") or {}).get("currentReplicas") or 0)
        else:
            stay = index < _partition(sts)
        if stay:
            return identity.new_pod(current_set, spec(current_set).get("template") or {}, ordinal, meta(plan.current_revision)["name"])
    return identity.new_pod(update_set, spec(update_set).get("template") or {}, ordinal, meta(plan.update_revision)["name"])


def _missing_claims(sts: Obj, ordinal: int, claims: dict[str, Obj]) -> tuple[list[Obj], bool]:
    """Claims to create for a member, and whether one of its claims is still being deleted."""
    missing: list[Obj] = []
    stale = False
    for claim in identity.new_claims(sts, ordinal):
        existing = claims.get(meta(claim)["name"])
        if existing is None:
            missing.append(claim)
        elif meta(existing).get("deletionTimestamp"):
            stale = True
    return missing, stale


def calculate_changes(
    sts: Obj, pods: list[Obj], claims: list[Obj], revisions: list[Obj], now: datetime
) -> list[Action]:
    """Everything the controller should do for ``sts`` now, in order.

    ``pods`` are the set's members (controlled by it), ``claims`` the claims
    matching its selector, ``revisions`` its ControllerRevisions.
    """
    plan = plan_revisions(sts, revisions)
    p = _Pass(sts, now, meta(plan.current_revision)["name"], meta(plan.update_revision)["name"])
    if plan.create is not None:
        p.actions.append(CreateRevision(plan.create))
    if plan.renumber is not None:
        p.actions.append(RenumberRevision(plan.renumber))
    current_set = apply_revision(sts, plan.current_revision)
    update_set = apply_revision(sts, plan.update_revision)
    claim_map = _claims_by_name(claims)
    min_ready = health.min_ready_seconds(sts)

    members = [q for q in pods if identity.is_member_name(sts, meta(q).get("name", ""))]
    for pod in members:
        p.replicas += 1
        if health.is_running_and_ready(pod):
            p.ready += 1
            if health.is_running_and_available(pod, min_ready, now):
                p.available += 1
        if not health.is_terminating(pod):
            p.count(pod, +1)

    if not meta(sts).get("deletionTimestamp"):
        _scale_and_update(p, sts, current_set, update_set, plan, members, claim_map)
        by_ordinal = {identity.ordinal_of(q): q for q in members}
        p.actions.extend(_claim_owner_updates(sts, by_ordinal, claim_map))
        p.actions.extend(_scaled_claim_deletions(sts, by_ordinal, claim_map))

    status = _status(sts, p, plan)
    live_revisions = revisions + ([plan.create] if plan.create is not None else [])
    for old in revisions_to_delete(sts, members, live_revisions, status["currentRevision"], p.update_name):
        p.actions.append(DeleteRevision(meta(old)["name"]))
    if status != _comparable_status(sts):
        p.actions.append(UpdateStatus(status))
    if p.requeue is not None:
        p.actions.append(RequeueAfter(p.requeue))
    return p.actions


def _scale_and_update(
    p: _Pass, sts: Obj, current_set: Obj, update_set: Obj, plan: RevisionPlan,
    members: list[Obj], claims: dict[str, Obj],
) -> None:
    monotonic = not _pod_policy_parallel(sts)
    wanted = identity.ordinal_range(sts)
    min_ready = health.min_ready_seconds(sts)
    replicas: dict[int, Obj | None] = {o: None for o in wanted}
    condemned: list[Obj] = []
    for pod in members:
        ordinal = identity.ordinal_of(pod)
        if ordinal in replicas:
            replicas[ordinal] = pod
        elif ordinal >= 0:
            condemned.append(pod)
    condemned.sort(key=identity.ordinal_of)

    for ordinal in wanted:
        pod = replicas[ordinal]
        if pod is not None and (health.is_failed(pod) or health.is_succeeded(pod)) and not health.is_terminating(pod):
            # Recreated under the same name with the same claims once the old one is gone;
            # the deletion's watch event brings the next pass (level-triggered).
            p.delete(pod, "failed" if health.is_failed(pod) else "succeeded")
            p.replicas -= 1
            p.count(pod, -1)
            if monotonic:
                p.blocker = p.blocker or blocker_message(pod, min_ready, p.now)
                return
            continue
        if pod is None:
            new = _new_versioned_pod(sts, current_set, update_set, plan, ordinal)
            missing, stale = _missing_claims(sts, ordinal, claims)
            if stale:
                # A claim of this ordinal is still being deleted: a new pod would bind the dying claim.
                if monotonic:
                    return
                continue
            for claim in missing:
                p.actions.append(CreateClaim(claim, meta(new)["name"]))
            p.actions.append(CreatePod(new, ordinal))
            p.replicas += 1
            p.count(new, +1)
            if monotonic:
                return
            continue
        if health.phase(pod) == "Pending":
            missing, _ = _missing_claims(sts, ordinal, claims)
            for claim in missing:
                p.actions.append(CreateClaim(claim, meta(pod)["name"]))
        if monotonic and (health.is_terminating(pod) or not health.is_running_and_available(pod, min_ready, p.now)):
            p.block(pod)
            return
        if not (identity.identity_matches(update_set, pod) and identity.storage_matches(update_set, pod)):
            fixed = copy.deepcopy(pod)
            identity.apply_identity(update_set, fixed, ordinal)
            identity.apply_storage(update_set, fixed, ordinal)
            p.actions.append(UpdatePod(fixed))

    # Scale down: highest ordinal first, each fully gone before the next in OrderedReady.
    for pod in reversed(condemned):
        if health.is_terminating(pod):
            if monotonic:
                return
            continue
        p.delete(pod, "scale-down")
        p.replicas -= 1
        p.count(pod, -1)
        if monotonic:
            return

    if _strategy(sts).get("type") == "OnDelete":
        return
    _rolling_update(p, sts, [replicas[o] for o in wanted])


def _rolling_update(p: _Pass, sts: Obj, replicas: list[Obj | None]) -> None:
    """Replace members at another revision, highest index first, at most maxUnavailable down (S4).

    Parallel (S8): a member that is not healthy and runs an old revision is replaced whatever the
    budget says: it is unavailable already, so replacing it costs nothing, and a template that
    never becomes Ready heals once it is reverted, without deleting pods by hand (Kubernetes'
    Parallel rollout replaces such members too). OrderedReady keeps waiting on them (S7).
    """
    parallel = _pod_policy_parallel(sts)
    limit = max_unavailable(sts)
    partition = _partition(sts)
    unavailable = sum(1 for pod in replicas if pod is None or not health.is_healthy(pod))
    if parallel:
        for index in range(len(replicas) - 1, partition - 1, -1):
            pod = replicas[index]
            if (pod is not None and not health.is_healthy(pod) and identity.revision_of(pod) != p.update_name
                    and not health.is_terminating(pod) and meta(pod)["name"] not in p.deleted):
                p.delete(pod, "update")
                p.count(pod, -1)
    if unavailable >= limit:
        for pod in replicas if not parallel else []:
            if pod is not None and not health.is_healthy(pod):
                p.block(pod)
                break
        return
    budget = limit - unavailable
    for index in range(len(replicas) - 1, partition - 1, -1):
        pod = replicas[index]
        if budget <= 0 or pod is None:
            break
        if (identity.revision_of(pod) != p.update_name and not health.is_terminating(pod)
                and meta(pod)["name"] not in p.deleted):
            p.delete(pod, "update")
            p.count(pod, -1)
            budget -= 1


def _scaled_claim_deletions(sts: Obj, by_ordinal: dict[int, Obj], claims: dict[str, Obj]) -> list[Action]:
    """``whenScaled: Delete``: claims of ordinals removed by scale-down, once their pod is gone (S5)."""
    _, when_scaled = identity.retention_policy(sts)
    if when_scaled != "Delete":
        return []
    wanted = identity.ordinal_range(sts)
    names = {meta(t)["name"] for t in identity.claim_templates(sts)}
    out: list[Action] = []
    for name, claim in sorted(claims.items()):
        if meta(claim).get("deletionTimestamp"):
            continue
        for template in names:
            prefix = f"{template}-"
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if not identity.is_member_name(sts, rest):
                continue
            ordinal = identity.ordinal_of({"metadata": {"name": rest}})
            if ordinal in wanted or ordinal in by_ordinal:
                continue
            cmeta = meta(claim)
            out.append(DeleteClaim(name, cmeta.get("uid", ""), str(cmeta.get("resourceVersion", ""))))
            break
    return out


def _status(sts: Obj, p: _Pass, plan: RevisionPlan) -> Obj:
    old = sts.get("status") or {}
    status: Obj = {
        "observedGeneration": meta(sts).get("generation", 0),
        "replicas": max(0, p.replicas),
        "readyReplicas": p.ready,
        "currentReplicas": max(0, p.current),
        "updatedReplicas": max(0, p.updated),
        "availableReplicas": p.available,
        "currentRevision": p.current_name,
        "updateRevision": p.update_name,
        "collisionCount": int(old.get("collisionCount") or 0),
    }
    # Upstream ``completeRollingUpdate``: once every member runs the update revision, it is current.
    if (
        _strategy(sts).get("type", "RollingUpdate") == "RollingUpdate"
        and status["updatedReplicas"] == status["replicas"]
        and status["readyReplicas"] == status["replicas"]
    ):
        status["currentReplicas"] = status["updatedReplicas"]
        status["currentRevision"] = status["updateRevision"]
    conditions = [c for c in old.get("conditions") or [] if c.get("type") != BLOCKED_CONDITION]
    if p.blocker is not None:
        previous = next((c for c in old.get("conditions") or [] if c.get("type") == BLOCKED_CONDITION), None)
        since = (previous or {}).get("lastTransitionTime") if (previous or {}).get("message") == p.blocker else None
        conditions.append({
            "type": BLOCKED_CONDITION,
            "status": "True",
            "reason": "MemberNotReady",
            "message": p.blocker,
            "lastTransitionTime": since or format_time(p.now),
        })
    if conditions:
        status["conditions"] = conditions
    return status


def _comparable_status(sts: Obj) -> Obj:
    return dict(sts.get("status") or {})
