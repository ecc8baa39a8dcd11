"""Pod priority (SEMANTICS PC1–PC5): PriorityClasses and Kubernetes' Priority admission.

A pod's ``priorityClassName`` is resolved to ``spec.priority`` and ``spec.preemptionPolicy`` when it is
created, through the API server or by a controller; a pod naming no class gets the global default class's
(the lowest-valued one if several claim to be), else 0 and PreemptLowerPriority. The two system classes
exist in every cluster and cannot be deleted.
"""
from __future__ import annotations

from typing import Any, Protocol

from storage.errors import Forbidden, NotFound

Obj = dict[str, Any]
SYSTEM_PREFIX = "system-"
HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
SYSTEM_CRITICAL_PRIORITY = 2 * HIGHEST_USER_DEFINABLE_PRIORITY
PREEMPT_LOWER_PRIORITY = "PreemptLowerPriority"
PREEMPTION_POLICIES = ("Never", PREEMPT_LOWER_PRIORITY)
# kube-apiserver creates these at start (scheduling's post-start hook) with these values and descriptions.
SYSTEM_CLASSES: dict[str, tuple[int, str]] = {
    "system-node-critical": (SYSTEM_CRITICAL_PRIORITY + 1000,
                             "Used for system critical pods that must not be moved from their current node."),
    "system-cluster-critical": (SYSTEM_CRITICAL_PRIORITY,
                                "Used for system critical pods that must run in the cluster, but can be moved to "
                                "another node if necessary."),
}
RESOURCE = "priorityclasses.scheduling.k8s.io"


class Reader(Protocol):
    """The store's reads the admission needs."""

    def get(self, resource: str, namespace: str, name: str) -> Obj: ...

    def list(self, resource: str, namespace: str | None = None) -> tuple[list[Obj], Any]: ...


def system_classes() -> list[Obj]:
    return [{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
             "value": value, "description": description, "preemptionPolicy": PREEMPT_LOWER_PRIORITY}
            for name, (value, description) in SYSTEM_CLASSES.items()]


def system_class_error(name: str, value: Any, global_default: Any) -> str | None:
    """Kubernetes' IsKnownSystemPriorityClass: why a ``system-`` class is not one of the system ones."""
    known = SYSTEM_CLASSES.get(name)
    if known is None:
        return f"{name} is not a known system priority class"
    if value != known[0]:
        return f"value of {name} PriorityClass must be {known[0]}"
    if bool(global_default):
        return f"globalDefault of {name} PriorityClass must be false"
    return None


def default_class(reader: Reader) -> Obj | None:
    """Kubernetes' getDefaultPriorityClass: among the classes marked globalDefault, the lowest value."""
    classes, _ = reader.list("priorityclasses")
    defaults = [c for c in classes if c.get("globalDefault") is True]
    return min(defaults, key=lambda c: (int(c.get("value") or 0), c["metadata"]["name"])) if defaults else None


def default_conflict(reader: Reader, obj: Obj, creating: bool) -> str | None:
    """Kubernetes' validatePriorityClass admission: only one class may be the global default."""
    if obj.get("globalDefault") is not True:
        return None
    current = default_class(reader)
    if current is None:
        return None
    name = current["metadata"]["name"]
    if creating or name != (obj.get("metadata") or {}).get("name"):
        return f"PriorityClass {name} is already marked as default. Only one default can exist"
    return None


def admit_pod_create(reader: Reader, pod: Obj) -> Obj:
    """Kubernetes' Priority admission of a new pod: ``spec.priority`` and ``spec.preemptionPolicy`` from its
    class (or the default). Forbidden, named by the pod, for an unknown class or a priority or policy
    the pod states that its class does not give."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    name = str((pod.get("metadata") or {}).get("name") or "")
    class_name = spec.get("priorityClassName") or ""
    if class_name:
        try:
            chosen: Obj | None = reader.get("priorityclasses", "", str(class_name))
        except NotFound:
            raise Forbidden(f'pods "{name}" is forbidden: no PriorityClass with name {class_name} was found',
                            kind="pods", name=name) from None
    else:
        chosen = default_class(reader)
    if chosen is None:
        priority, policy = 0, PREEMPT_LOWER_PRIORITY
    else:
        class_name = chosen["metadata"]["name"]
        priority, policy = int(chosen.get("value") or 0), chosen.get("preemptionPolicy")
    stated = spec.get("priority")
    if stated is not None and stated != priority:
        raise Forbidden(f'pods "{name}" is forbidden: the integer value of priority ({stated}) must not be provided '
                        f"in pod spec; priority admission controller computed {priority} from the given "
                        "PriorityClass name", kind="pods", name=name)
    updated = {**spec, "priority": priority}
    if class_name:
        updated["priorityClassName"] = class_name
    if policy is not None:
        if spec.get("preemptionPolicy") is not None and spec["preemptionPolicy"] != policy:
            raise Forbidden(f'pods "{name}" is forbidden: the string value of PreemptionPolicy '
                            f"({spec['preemptionPolicy']}) must not be provided in pod spec; priority admission "
                            f"controller computed {policy} from the given PriorityClass name", kind="pods", name=name)
        updated["preemptionPolicy"] = policy
    return {**pod, "spec": updated}


def admit_pod_update(pod: Obj, old: Obj) -> Obj:
    """An update that drops the priority keeps the stored one, as Kubernetes' admission does."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else None
    old_spec = old.get("spec") or {}
    if spec is None:
        return pod
    kept = {k: old_spec[k] for k in ("priority", "preemptionPolicy") if spec.get(k) is None and k in old_spec}
    return {**pod, "spec": {**spec, **kept}} if kept else pod
