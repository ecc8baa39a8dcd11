"""Pure helpers behind ``stowage scale sts``, ``rollout status|history|undo`` for StatefulSets.

Messages match what kubectl prints for StatefulSets
(``kubectl/pkg/polymorphichelpers/rollout_status.go`` and ``history.go``).
"""
from __future__ import annotations

from typing import Any

from statefulset.identity import meta, spec
from statefulset.revision import sort_revisions, undo_patch

Obj = dict[str, Any]
CHANGE_CAUSE = "kubernetes.io/change-cause"


def scale_patch(replicas: int) -> Obj:
    """The merge patch for ``scale sts NAME --replicas N``; ValueError on a negative count."""
    if replicas < 0:
        raise ValueError(f"--replicas: Invalid value: {replicas}: must be greater than or equal to 0")
    return {"spec": {"replicas": replicas}}


def rollout_status(sts: Obj) -> tuple[str, bool]:
    """(message, done) for one look at the set, as ``kubectl rollout status sts`` prints it."""
    status = sts.get("status") or {}
    strategy = spec(sts).get("updateStrategy") or {"type": "RollingUpdate"}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        raise ValueError("rollout status is only available for RollingUpdate strategy type")
    if status.get("observedGeneration", 0) == 0 or meta(sts).get("generation", 0) > status.get("observedGeneration", 0):
        return "Waiting for statefulset spec update to be observed...\n", False
    replicas = spec(sts).get("replicas")
    replicas = 1 if replicas is None else int(replicas)
    ready = int(status.get("readyReplicas") or 0)
    if ready < replicas:
        return f"Waiting for {replicas - ready} pods to be ready...\n", False
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    if partition:
        if updated < replicas - partition:
            return (f"Waiting for partitioned roll out to finish: {updated} out of "
                    f"{replicas - partition} new pods have been updated...\n"), False
        return f"partitioned roll out complete: {updated} new pods have been updated...\n", True
    if status.get("updateRevision") != status.get("currentRevision"):
        return (f"waiting for statefulset rolling update to complete {updated} pods at revision "
                f"{status.get('updateRevision')}...\n"), False
    return (f"statefulset rolling update complete {status.get('currentReplicas', 0)} pods at revision "
            f"{status.get('currentRevision')}...\n"), True


def history_rows(revisions: list[Obj]) -> list[tuple[int, str]]:
    """(REVISION, CHANGE-CAUSE) rows, oldest first; a missing cause shows ``<none>``."""
    rows = []
    for r in sort_revisions(revisions):
        cause = (meta(r).get("annotations") or {}).get(CHANGE_CAUSE) or "<none>"
        rows.append((int(r.get("revision") or 0), cause))
    return rows


def history_table(sts: Obj, revisions: list[Obj]) -> str:
    rows = history_rows(revisions)
    width = max([len("REVISION")] + [len(str(n)) for n, _ in rows])
    lines = [f"statefulset.apps/{meta(sts)['name']}", f"{'REVISION'.ljust(width)}  CHANGE-CAUSE"]
    lines += [f"{str(n).ljust(width)}  {cause}" for n, cause in rows]
    return "\n".join(lines) + "\n"


def undo_patch_for(sts: Obj, revisions: list[Obj], to_revision: int = 0) -> Obj:
    """The patch ``rollout undo [--to-revision N]`` applies (the revision's template, ``$patch: replace``)."""
    return undo_patch(sts, revisions, to_revision)


def rolled_back_message(sts: Obj) -> str:
    return f"statefulset.apps/{meta(sts)['name']} rolled back\n"
