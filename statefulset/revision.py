"""ControllerRevisions of a StatefulSet: naming, equality, history limit and rollback (S4).

A revision stores the set's pod template as the patch Kubernetes stores
(``{"spec": {"template": {..., "$patch": "replace"}}}``), so ``kubectl
rollout undo`` and ``stowage rollout undo`` apply the same document.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from statefulset.identity import REVISION_LABEL, meta, owner_reference, revision_of, selector_labels, spec

Obj = dict[str, Any]

DEFAULT_HISTORY_LIMIT = 10
# rand.SafeEncodeString's alphabet: no vowels (no words), no 0/1/3 (look like letters).
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_patch(sts: Obj) -> Obj:
    template = copy.deepcopy(spec(sts).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def template_of(revision: Obj) -> Obj:
    """The pod template a revision records."""
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


def apply_revision(sts: Obj, revision: Obj) -> Obj:
    """A copy of the set whose template is the revision's (upstream ``ApplyRevision``)."""
    out = copy.deepcopy(sts)
    out.setdefault("spec", {})["template"] = template_of(revision)
    return out


def _canonical(data: Obj) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def revision_hash(data: Obj, collision_count: int = 0) -> str:
    """Short, stable, DNS-safe hash of the patch; the collision count perturbs it on a name clash."""
    h = _fnv32a(_canonical(data) + (str(collision_count).encode() if collision_count else b""))
    return "".join(_SAFE_ALPHABET[int(ch) % len(_SAFE_ALPHABET)] for ch in str(h))


def revision_number(revision: Obj) -> int:
    return int(revision.get("revision") or 0)


def sort_revisions(revisions: list[Obj]) -> list[Obj]:
    """Oldest first; ties broken by creation time then name, as upstream's ``byRevision``."""
    return sorted(
        revisions,
        key=lambda r: (revision_number(r), meta(r).get("creationTimestamp") or "", meta(r).get("name", "")),
    )


def next_revision_number(revisions: list[Obj]) -> int:
    return max((revision_number(r) for r in revisions), default=0) + 1


def new_revision(sts: Obj, number: int, collision_count: int = 0) -> Obj:
    data = template_patch(sts)
    digest = revision_hash(data, collision_count)
    labels = dict((meta(sts).get("labels") or {}))
    labels.update(selector_labels(sts))
    labels[REVISION_LABEL] = digest
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"{meta(sts)['name']}-{digest}",
            "namespace": meta(sts).get("namespace") or "default",
            "labels": labels,
            "ownerReferences": [owner_reference(sts, api_version="apps/v1", kind="StatefulSet")],
        },
        "data": data,
        "revision": number,
    }


def equal_revision(a: Obj, b: Obj) -> bool:
    return _canonical(a.get("data") or {}) == _canonical(b.get("data") or {})


@dataclass(frozen=True)
class RevisionPlan:
    """What the controller must write so the set's current template has a revision.

    ``create``: a new revision to create; ``renumber``: an existing revision
    whose number must become ``update_revision['revision']`` (a rollback to it).
    """

    update_revision: Obj
    current_revision: Obj
    create: Obj | None = None
    renumber: Obj | None = None


def plan_revisions(sts: Obj, revisions: list[Obj]) -> RevisionPlan:
    """Upstream ``getStatefulSetRevisions``: reuse, renumber (rollback) or create the update revision."""
    ordered = sort_revisions(revisions)
    collision_count = int((sts.get("status") or {}).get("collisionCount") or 0)
    candidate = new_revision(sts, next_revision_number(ordered), collision_count)
    equal = [r for r in ordered if equal_revision(r, candidate)]
    create: Obj | None = None
    renumber: Obj | None = None
    if equal and ordered and meta(equal[-1]).get("name") == meta(ordered[-1]).get("name"):
        update = ordered[-1]
    elif equal:
        # The template went back to an older revision: it becomes the newest again.
        update = copy.deepcopy(equal[-1])
        update["revision"] = candidate["revision"]
        renumber = update
    else:
        update = candidate
        create = candidate
    current_name = (sts.get("status") or {}).get("currentRevision")
    current = next((r for r in ordered if meta(r).get("name") == current_name), None)
    if current is None or meta(current).get("name") == meta(update).get("name"):
        current = update
    return RevisionPlan(update_revision=update, current_revision=current, create=create, renumber=renumber)


def history_limit(sts: Obj) -> int:
    value = spec(sts).get("revisionHistoryLimit")
    return DEFAULT_HISTORY_LIMIT if value is None else int(value)


def revisions_to_delete(sts: Obj, pods: list[Obj], revisions: list[Obj], current: str, update: str) -> list[Obj]:
    """Oldest non-live revisions beyond ``revisionHistoryLimit`` (upstream ``truncateHistory``).

    Live ones (current, update, and any a pod still runs) are never deleted.
    """
    live = {current, update} | {revision_of(p) for p in pods}
    history = [r for r in sort_revisions(revisions) if meta(r).get("name") not in live]
    excess = len(history) - history_limit(sts)
    return history[:excess] if excess > 0 else []


def undo_patch(sts: Obj, revisions: list[Obj], to_revision: int = 0) -> Obj:
    """The patch ``rollout undo [--to-revision N]`` applies to the set.

    ``to_revision`` 0 means the revision before the newest. Raises ValueError
    naming the revision when it does not exist or there is nothing to undo.
    """
    ordered = sort_revisions(revisions)
    if to_revision:
        match = [r for r in ordered if revision_number(r) == to_revision]
        if not match:
            raise ValueError(f"unable to find specified revision {to_revision} in history")
        target = match[-1]
    else:
        if len(ordered) < 2:
            raise ValueError("no rollout history found for statefulset " + repr(meta(sts).get("name")))
        target = ordered[-2]
    return copy.deepcopy(target.get("data") or {})
