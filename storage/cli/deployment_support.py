"""Pure helpers behind ``stowage rollout status|history|undo|pause|resume`` for Deployments.

Messages and the undo patch follow kubectl (``polymorphichelpers/rollout_status.go``,
``history.go`` and ``rollback.go``): undo copies a ReplicaSet's template
(without ``pod-template-hash``) and its annotations back onto the Deployment.
"""
from __future__ import annotations

import copy
from typing import Any

from storage.controllers.deployment_plan import (
    CHANGE_CAUSE, DESIRED_REPLICAS, MAX_REPLICAS, REVISION, REVISION_HISTORY, revision_of, template_without_hash,
)

Obj = dict[str, Any]
# kubectl's annotationsToSkip when it copies a ReplicaSet's annotations onto the Deployment.
_SKIPPED = {
    "kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _condition(deploy: Obj, kind: str) -> Obj | None:
    return next((c for c in (deploy.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def rollout_status(deploy: Obj) -> tuple[str, bool]:
    """(message, done) for one look at the Deployment, as ``kubectl rollout status deploy/x`` prints it."""
    name = _meta(deploy).get("name", "")
    status = deploy.get("status") or {}
    if int(_meta(deploy).get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return "Waiting for deployment spec update to be observed...\n", False
    progressing = _condition(deploy, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        raise ValueError(f'deployment "{name}" exceeded its progress deadline')
    replicas = (deploy.get("spec") or {}).get("replicas")
    replicas = 1 if replicas is None else int(replicas)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < replicas:
        return (f'Waiting for deployment "{name}" rollout to finish: {updated} out of {replicas} new replicas '
                "have been updated...\n"), False
    if total > updated:
        return (f'Waiting for deployment "{name}" rollout to finish: {total - updated} old replicas are pending '
                "termination...\n"), False
    if available < updated:
        return (f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated replicas '
                "are available...\n"), False
    return f'deployment "{name}" successfully rolled out\n', True


def owned_sets(deploy: Obj, replica_sets: list[Obj]) -> list[Obj]:
    uid = _meta(deploy).get("uid")
    out = []
    for rs in replica_sets:
        for ref in _meta(rs).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "Deployment" and ref.get("uid") == uid:
                out.append(rs)
                break
    return sorted(out, key=revision_of)


def history_table(deploy: Obj, replica_sets: list[Obj]) -> str:
    rows = [(revision_of(rs), (_meta(rs).get("annotations") or {}).get(CHANGE_CAUSE) or "<none>")
            for rs in owned_sets(deploy, replica_sets) if revision_of(rs)]
    width = max([len("REVISION")] + [len(str(n)) for n, _ in rows])
    lines = [f"deployment.apps/{_meta(deploy)['name']}", f"{'REVISION'.ljust(width)}  CHANGE-CAUSE"]
    lines += [f"{str(n).ljust(width)}  {cause}" for n, cause in rows]
    return "\n".join(lines) + "\n"


def revision_template(deploy: Obj, replica_sets: list[Obj], revision: int) -> Obj:
    for rs in owned_sets(deploy, replica_sets):
        if revision_of(rs) == revision:
            return template_without_hash((rs.get("spec") or {}).get("template") or {})
    raise ValueError(f"unable to find the specified revision {revision}")


def undo_target(deploy: Obj, replica_sets: list[Obj], to_revision: int = 0) -> Obj:
    """The ReplicaSet to roll back to: ``to_revision``, or the newest one older than the current revision."""
    sets = [rs for rs in owned_sets(deploy, replica_sets) if revision_of(rs)]
    if to_revision:
        for rs in sets:
            if revision_of(rs) == to_revision:
                return rs
        raise ValueError(f"unable to find specified revision {to_revision} in history")
    if len(sets) < 2:
        raise ValueError("no rollout history found for deployment " + f'"{_meta(deploy).get("name", "")}"')
    return sets[-2]


def undo_patch(deploy: Obj, target: Obj) -> list[Obj]:
    """kubectl's JSON patch: the set's template and its annotations replace the Deployment's."""
    annotations = {k: v for k, v in (_meta(deploy).get("annotations") or {}).items() if k in _SKIPPED}
    annotations.update({k: v for k, v in (_meta(target).get("annotations") or {}).items() if k not in _SKIPPED})
    template = template_without_hash(copy.deepcopy((target.get("spec") or {}).get("template") or {}))
    return [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},  # add also replaces
    ]


def template_matches(deploy: Obj, target: Obj) -> bool:
    return template_without_hash((deploy.get("spec") or {}).get("template") or {}) == \
        template_without_hash((target.get("spec") or {}).get("template") or {})
