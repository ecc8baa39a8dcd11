"""Why is a claim Pending? One human sentence for ``stowage describe pvc``."""
from __future__ import annotations

from typing import Any, Iterable

from storage.controllers.binder import ANN_SELECTED_NODE
from storage.controllers.binder_index import (
    SelectorError, access_modes, claim_ref, claim_request, contains_all_modes, find_best_volume_linear, is_deleting,
    object_class, selector_matches, volume_capacity, volume_mode, volume_phase,
)


def explain_pending_claim(claim: dict[str, Any], volumes: Iterable[dict[str, Any]], classes: Iterable[dict[str, Any]],
                          events: Iterable[dict[str, Any]] = ()) -> str:
    """The reason a claim is not Bound, from the same rules the binder applies.

    ``events`` are the claim's Events (newest last); a provisioning failure is
    reported with the backend's own message.
    """
    phase = (claim.get("status") or {}).get("phase") or "Pending"
    spec = claim.get("spec") or {}
    if phase == "Bound":
        return f'bound to volume "{spec.get("volumeName", "")}"'
    if phase == "Lost":
        return f'lost: its volume "{spec.get("volumeName", "")}" is gone or bound to another claim'
    volumes = sorted(volumes, key=lambda v: v["metadata"]["name"])
    classes_by_name = {c["metadata"]["name"]: c for c in classes}
    klass = object_class(claim)
    requested = spec.get("volumeName")
    if requested:
        volume = next((v for v in volumes if v["metadata"]["name"] == requested), None)
        if volume is None:
            return f'waiting for the requested volume "{requested}", which does not exist'
        ref = claim_ref(volume)
        if ref and ref.get("name") != claim["metadata"]["name"]:
            return f'the requested volume "{requested}" is already bound to claim "{ref.get("namespace")}/{ref.get("name")}"'
        if volume_capacity(volume) < claim_request(claim):
            return f'the requested volume "{requested}" is too small'
        if object_class(volume) != klass:
            return f'the requested volume "{requested}" has storage class "{object_class(volume)}", the claim wants "{klass}"'

    storage_class = classes_by_name.get(klass) if klass else None
    if storage_class and storage_class.get("volumeBindingMode") == "WaitForFirstConsumer" and \
            ANN_SELECTED_NODE not in ((claim.get("metadata") or {}).get("annotations") or {}):
        return "waiting for first consumer: no pod using this claim has been scheduled yet"

    for event in reversed(list(events)):
        if event.get("reason") == "ProvisioningFailed":
            return f"provisioning failed: {event.get('message', '')}"

    if find_best_volume_linear(claim, volumes, False) is not None:
        return "a matching volume exists; the binder has not bound it yet"

    same_class = [v for v in volumes if object_class(v) == klass]
    if not same_class:
        if klass and storage_class is None:
            return f'no volume of storage class "{klass}", and that StorageClass does not exist'
        if klass:
            return f'no volume of storage class "{klass}" yet; waiting for provisioner "{storage_class.get("provisioner", "")}"'
        return 'no volume with an empty storage class exists, and the claim names no storage class'
    free = [v for v in same_class if claim_ref(v) is None and volume_phase(v) == "Available" and not is_deleting(v)]
    if not free:
        return f'every volume of storage class "{klass}" is bound, released or being deleted'
    moded = [v for v in free if contains_all_modes(access_modes(v), access_modes(claim))]
    if not moded:
        return f'no free volume of storage class "{klass}" offers access modes {", ".join(access_modes(claim))}'
    moded = [v for v in moded if volume_mode(v) == volume_mode(claim)]
    if not moded:
        return f'no free volume of storage class "{klass}" has volumeMode {volume_mode(claim)}'
    big = [v for v in moded if volume_capacity(v) >= claim_request(claim)]
    if not big:
        largest = max(moded, key=volume_capacity)
        return (f'every free volume of storage class "{klass}" is too small (largest: "{largest["metadata"]["name"]}" '
                f'with {largest["spec"]["capacity"]["storage"]}, requested {spec["resources"]["requests"]["storage"]})')
    selector = spec.get("selector")
    try:
        if selector is not None and not any(selector_matches(selector, v["metadata"].get("labels")) for v in big):
            return f'no free volume of storage class "{klass}" matches the claim\'s selector'
    except SelectorError as exc:
        return f"the claim's selector is invalid: {exc}"
    return "no matching volume"
