"""Generic ephemeral volumes (EV1-EV4): a pod's ``ephemeral`` volume stands for the claim
``<pod>-<volume>`` that the ephemeral-volume controller creates from its ``volumeClaimTemplate``,
owned by the pod. Everything that looks at a pod's claims (scheduler, binder, attach/detach, the node
agent, the node authorizer) sees such a volume as a ``persistentVolumeClaim`` reference to it."""
from __future__ import annotations

import copy
from typing import Any

from storage.api.names import PVC_PROTECTION

Obj = dict[str, Any]


def ephemeral_claim_name(pod: Obj, volume: Obj) -> str:
    return f"{(pod.get('metadata') or {}).get('name', '')}-{volume.get('name', '')}"


def claim_volumes(pod: Obj) -> list[Obj]:
    """The pod's volumes, each ``ephemeral`` one given as the ``persistentVolumeClaim`` it stands for."""
    out = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if isinstance(volume, dict) and isinstance(volume.get("ephemeral"), dict):
            volume = {"name": volume.get("name", ""),
                      "persistentVolumeClaim": {"claimName": ephemeral_claim_name(pod, volume)}}
        out.append(volume)
    return out


def claim_names(pod: Obj) -> list[str]:
    """Every claim the pod uses, its ephemeral volumes' included, in volume order."""
    return [str(v["persistentVolumeClaim"]["claimName"]) for v in claim_volumes(pod)
            if isinstance(v, dict) and isinstance(v.get("persistentVolumeClaim"), dict)
            and v["persistentVolumeClaim"].get("claimName")]


def ephemeral_claim(pod: Obj, volume: Obj) -> Obj:
    """The claim the controller creates for ``volume``: the template's labels, annotations and spec,
    in the pod's namespace, controlled by the pod (so it goes with the pod)."""
    meta = pod.get("metadata") or {}
    template = copy.deepcopy((volume.get("ephemeral") or {}).get("volumeClaimTemplate") or {})
    template_meta = template.get("metadata") or {}
    claim_meta: Obj = {"name": ephemeral_claim_name(pod, volume), "namespace": meta.get("namespace", "default"),
                       "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": meta.get("name", ""),
                                            "uid": meta.get("uid", ""), "controller": True,
                                            "blockOwnerDeletion": True}],
                       # What admission gives a claim made through the API (B11): the controller writes to the store.
                       "finalizers": [PVC_PROTECTION]}
    for key in ("labels", "annotations"):
        if template_meta.get(key):
            claim_meta[key] = dict(template_meta[key])
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": claim_meta, "spec": template.get("spec") or {}}


def owned_by(claim: Obj, pod: Obj) -> bool:
    """Whether ``claim`` is the one made for ``pod`` (its controller reference names the pod's uid)."""
    uid = (pod.get("metadata") or {}).get("uid")
    return any(ref.get("controller") and ref.get("uid") == uid and ref.get("kind") == "Pod"
               for ref in (claim.get("metadata") or {}).get("ownerReferences") or [])


def not_created_for(claim_name: str, pod: Obj) -> str:
    """Kubernetes' message when a claim of that name exists but belongs to something else."""
    return f'PVC {(pod.get("metadata") or {}).get("namespace", "default")}/{claim_name} was not created for the pod'


def foreign_ephemeral_claim(pod: Obj, claim: Obj) -> bool:
    """Whether ``claim`` has the name of one of ``pod``'s ephemeral volumes but is not the one made for
    it (EV2): such a claim is never the pod's, whoever made it."""
    name = (claim.get("metadata") or {}).get("name")
    return not owned_by(claim, pod) and any(
        isinstance(v, dict) and isinstance(v.get("ephemeral"), dict) and ephemeral_claim_name(pod, v) == name
        for v in (pod.get("spec") or {}).get("volumes") or [])
