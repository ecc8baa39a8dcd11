"""A StatefulSet member's stable identity: names, ordinals, labels, DNS, and its pod and claims (S1).

Everything here is pure: it builds wire-form dicts from the set, its
template and a revision name, as Kubernetes' ``stateful_set_utils.go`` does.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from storage.api.names import PVC_PROTECTION

Obj = dict[str, Any]

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = "controller-revision-hash"
CLUSTER_DOMAIN = "cluster.local"

_ORDINAL_RE = re.compile(r"^(.*)-([0-9]+)$")


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def start_ordinal(sts: Obj) -> int:
    return int((spec(sts).get("ordinals") or {}).get("start") or 0)


def replicas(sts: Obj) -> int:
    value = spec(sts).get("replicas")
    return 1 if value is None else int(value)


def ordinal_range(sts: Obj) -> range:
    """The ordinals the set should have now: ``[start, start + replicas)``."""
    start = start_ordinal(sts)
    return range(start, start + replicas(sts))


def pod_name(sts: Obj, ordinal: int) -> str:
    return f"{meta(sts)['name']}-{ordinal}"


def claim_name(template_name: str, sts: Obj, ordinal: int) -> str:
    return f"{template_name}-{meta(sts)['name']}-{ordinal}"


def parse_ordinal(name: str) -> tuple[str, int] | None:
    """``"web-2"`` -> ("web", 2); None when the name has no ordinal suffix."""
    match = _ORDINAL_RE.match(name)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def ordinal_of(pod: Obj) -> int:
    """The pod's ordinal, or -1 when its name carries none (such a pod is ignored, as upstream does)."""
    parsed = parse_ordinal(meta(pod).get("name", ""))
    return -1 if parsed is None else parsed[1]


def is_member_name(sts: Obj, name: str) -> bool:
    parsed = parse_ordinal(name)
    return parsed is not None and parsed[0] == meta(sts).get("name")


def dns_name(pod: str, service: str, namespace: str) -> str:
    return f"{pod}.{service}.{namespace}.svc.{CLUSTER_DOMAIN}"


def member_dns_name(sts: Obj, ordinal: int) -> str | None:
    service = spec(sts).get("serviceName")
    if not service:
        return None
    return dns_name(pod_name(sts, ordinal), service, meta(sts).get("namespace") or "default")


def owner_reference(owner: Obj, *, api_version: str, kind: str, controller: bool = True) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta(owner)["name"],
        "uid": meta(owner).get("uid", ""),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def set_owner_reference(sts: Obj) -> Obj:
    return owner_reference(sts, api_version="apps/v1", kind="StatefulSet")


def selector_labels(sts: Obj) -> dict[str, str]:
    return dict((spec(sts).get("selector") or {}).get("matchLabels") or {})


def claim_templates(sts: Obj) -> list[Obj]:
    return list(spec(sts).get("volumeClaimTemplates") or [])


def retention_policy(sts: Obj) -> tuple[str, str]:
    """(whenDeleted, whenScaled); Retain/Retain when unset (S5)."""
    policy = spec(sts).get("persistentVolumeClaimRetentionPolicy") or {}
    return policy.get("whenDeleted") or "Retain", policy.get("whenScaled") or "Retain"


def desired_claim_owners(sts: Obj, ordinal: int, pod: Obj | None) -> list[Obj]:
    """The set/pod ownerReferences a member's claim should carry under the retention policy.

    As Kubernetes does: ``whenDeleted: Delete`` makes the set an owner, so the
    garbage collector removes the claim with the set; ``whenScaled: Delete``
    makes the pod an owner once its ordinal is condemned by a scale-down.
    Neither is a controller reference: a claim has no controller.
    """
    when_deleted, when_scaled = retention_policy(sts)
    owners: list[Obj] = []
    if when_deleted == "Delete":
        owners.append(owner_reference(sts, api_version="apps/v1", kind="StatefulSet", controller=False))
    condemned = ordinal not in ordinal_range(sts)
    if when_scaled == "Delete" and condemned and pod is not None and meta(pod).get("uid"):
        owners.append(owner_reference(pod, api_version="v1", kind="Pod", controller=False))
    return owners


def new_claim(sts: Obj, template: Obj, ordinal: int) -> Obj:
    """A member's claim from one volumeClaimTemplate, labelled with the selector's matchLabels."""
    tmeta = meta(template)
    labels = dict(tmeta.get("labels") or {})
    labels.update(selector_labels(sts))
    claim_meta: Obj = {
        "name": claim_name(tmeta["name"], sts, ordinal),
        "namespace": meta(sts).get("namespace") or "default",
        "labels": labels,
        # What admission gives a claim made through the API (B11, S10): the controller writes to the store,
        # so without it an unbound member claim deleted while its pod exists would go at once.
        "finalizers": [PVC_PROTECTION],
    }
    if tmeta.get("annotations"):
        claim_meta["annotations"] = dict(tmeta["annotations"])
    owners = desired_claim_owners(sts, ordinal, None)
    if owners:
        claim_meta["ownerReferences"] = owners
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": claim_meta,
        "spec": copy.deepcopy(spec(template)),
    }


def new_claims(sts: Obj, ordinal: int) -> list[Obj]:
    return [new_claim(sts, t, ordinal) for t in claim_templates(sts)]


def apply_identity(sts: Obj, pod: Obj, ordinal: int) -> None:
    """Name, namespace, identity labels, hostname and subdomain (upstream ``updateIdentity``)."""
    name = pod_name(sts, ordinal)
    pmeta = pod.setdefault("metadata", {})
    pmeta["name"] = name
    pmeta["namespace"] = meta(sts).get("namespace") or "default"
    labels = pmeta.setdefault("labels", {})
    labels[POD_NAME_LABEL] = name
    labels[POD_INDEX_LABEL] = str(ordinal)
    pspec = pod.setdefault("spec", {})
    pspec["hostname"] = name
    service = spec(sts).get("serviceName")
    if service:
        pspec["subdomain"] = service


def apply_storage(sts: Obj, pod: Obj, ordinal: int) -> None:
    """Point the pod's volumes named after claim templates at the member's claims; add missing ones."""
    pspec = pod.setdefault("spec", {})
    volumes: list[Obj] = list(pspec.get("volumes") or [])
    wanted = {meta(t)["name"]: claim_name(meta(t)["name"], sts, ordinal) for t in claim_templates(sts)}
    out: list[Obj] = []
    for volume in volumes:
        vname = volume.get("name")
        if vname in wanted:
            out.append({"name": vname, "persistentVolumeClaim": {"claimName": wanted.pop(vname)}})
        else:
            out.append(volume)
    for vname, cname in wanted.items():
        out.append({"name": vname, "persistentVolumeClaim": {"claimName": cname}})
    if out:
        pspec["volumes"] = out


def new_pod(sts: Obj, template: Obj, ordinal: int, revision: str) -> Obj:
    """A member pod from ``template`` (the current or update revision's) and that revision's name."""
    tmeta = meta(template)
    pod_meta: Obj = {
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [set_owner_reference(sts)],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        pod_meta["finalizers"] = list(tmeta["finalizers"])
    # Written to the store directly, so given the status the API server gives every new pod.
    pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": copy.deepcopy(spec(template)),
                "status": {"phase": "Pending"}}
    apply_identity(sts, pod, ordinal)
    apply_storage(sts, pod, ordinal)
    if revision:
        pod_meta["labels"][REVISION_LABEL] = revision
    return pod


def identity_matches(sts: Obj, pod: Obj) -> bool:
    pmeta = meta(pod)
    parsed = parse_ordinal(pmeta.get("name", ""))
    if parsed is None or parsed[0] != meta(sts).get("name"):
        return False
    labels = pmeta.get("labels") or {}
    return (
        pmeta.get("namespace") == (meta(sts).get("namespace") or "default")
        and labels.get(POD_NAME_LABEL) == pmeta.get("name")
        and labels.get(POD_INDEX_LABEL) == str(parsed[1])
    )


def storage_matches(sts: Obj, pod: Obj) -> bool:
    ordinal = ordinal_of(pod)
    volumes = {v.get("name"): v for v in spec(pod).get("volumes") or []}
    for template in claim_templates(sts):
        tname = meta(template)["name"]
        volume = volumes.get(tname)
        source = (volume or {}).get("persistentVolumeClaim") or {}
        if source.get("claimName") != claim_name(tname, sts, ordinal):
            return False
    return True


def revision_of(pod: Obj) -> str:
    return (meta(pod).get("labels") or {}).get(REVISION_LABEL, "")


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    uid = meta(owner).get("uid")
    return any(r.get("controller") and r.get("uid") == uid for r in meta(obj).get("ownerReferences") or [])


def controller_of(obj: Obj) -> Obj | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None
