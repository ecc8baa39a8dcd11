"""Node selection rules shared by the scheduler, the DaemonSet controller and volume node affinity.

Follows Kubernetes' ``NodeSelectorTerm`` semantics: terms are ORed, the
expressions and fields inside one term are ANDed; an empty term list matches
nothing, a missing selector matches everything.
"""
from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def _requirement_matches(req: Obj, value_of: dict[str, str]) -> bool:
    key = req.get("key", "")
    op = req.get("operator", "")
    values = req.get("values") or []
    present = key in value_of
    value = value_of.get(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            have, want = int(str(value)), int(str(values[0]))
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def term_matches(term: Obj, node: Obj) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term selects no node, as in Kubernetes
    labels = (node.get("metadata") or {}).get("labels") or {}
    if not all(_requirement_matches(r, labels) for r in expressions):
        return False
    node_fields = {"metadata.name": (node.get("metadata") or {}).get("name", "")}
    return all(_requirement_matches(r, node_fields) for r in fields)


def node_selector_matches(selector: Obj | None, node: Obj) -> bool:
    """A ``NodeSelector`` (``nodeSelectorTerms``); None matches every node."""
    if selector is None:
        return True
    terms = selector.get("nodeSelectorTerms") or []
    return any(term_matches(t, node) for t in terms)


def node_labels_match(node_selector: dict[str, str] | None, node: Obj) -> bool:
    """A pod's plain ``spec.nodeSelector`` map."""
    if not node_selector:
        return True
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in node_selector.items())


def pod_admits_node(pod: Obj, node: Obj) -> bool:
    """``nodeSelector`` and required node affinity of a pod."""
    spec = pod.get("spec") or {}
    if not node_labels_match(spec.get("nodeSelector"), node):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    return node_selector_matches(required, node)


def volume_admits_node(pv: Obj, node: Obj) -> bool:
    """A PersistentVolume's ``spec.nodeAffinity.required``; no affinity admits every node."""
    required = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required")
    return node_selector_matches(required, node)


def hostname_affinity(node_name: str) -> Obj:
    """The node affinity a node-local volume carries."""
    return {
        "required": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}]}
            ]
        }
    }


def affinity_hostnames(pv: Obj) -> list[str]:
    """The ``kubernetes.io/hostname`` values a volume's required node affinity names."""
    terms = ((((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")) or []
    return [value for term in terms for expr in term.get("matchExpressions") or []
            if expr.get("key") == "kubernetes.io/hostname" for value in expr.get("values") or []]


def volume_in_use_on(node: Obj, pv_name: str) -> bool:
    """The node lists the volume in ``status.volumesInUse``, whose entries are unique names such as
    ``kubernetes.io~local-volume/<pv>`` (or ``kubernetes.io/csi/<driver>^<handle>``)."""
    for entry in (node.get("status") or {}).get("volumesInUse") or []:
        text = str(entry)
        if text == pv_name or text.rsplit("/", 1)[-1] == pv_name or text.rsplit("^", 1)[-1] == pv_name:
            return True
    return False
