"""Node authorization and the NodeRestriction admission plugin, after Kubernetes'.

A user ``system:node:<name>`` in group ``system:nodes`` (a node agent) may read
only the Secrets, ConfigMaps, claims and volumes that pods bound to its node
use (the node graph in ``AuthzIndex``), list and watch only its own pods, and
write only its own Node, its pods' status and its claims' status. The static
part (services, endpoints, events, ...) is Kubernetes' ``system:node`` rules.

Differences from Kubernetes, each because the agent needs it:
- a node may list and watch claims and volumes, and sees only those it may
  get (Kubernetes refuses the list; the agent watches them to notice binding
  and FileSystemResizePending without polling);
- a node may update its own pods, but only to add or remove the agent's
  finalizer (Kubernetes' kubelet needs no finalizer);
- a node may read and update the claims of node-local volumes in its pools
  (the offline growth of a volume no pod uses any more);
- a node may list and watch VolumeAttachments, and sees only those of its own
  node (Kubernetes: get only, through the graph's attachment-to-node edge; the
  agent watches them to mount a disk the moment it is attached, AD2). A get of
  another node's attachment is refused, as in Kubernetes.
"""
from __future__ import annotations

from typing import Any

from storage.api.names import NODE_AGENT_FINALIZER
from storage.api.selectors import parse_field_selector
from storage.apiserver.admission import AdmissionRequest
from storage.apiserver.authz_index import AuthzIndex
from storage.apiserver.rbac import ALLOW, NODE_PREFIX, Attributes, Decision, Rule, node_name_of, rule_allows
from storage.errors import BadRequest, Forbidden

Obj = dict[str, Any]
_READ = ("get", "list", "watch")
NODE_LEASE_NAMESPACE = "kube-node-lease"


def _rule(verbs: tuple[str, ...], groups: tuple[str, ...], resources: tuple[str, ...]) -> Rule:
    return Rule(frozenset(verbs), frozenset(groups), frozenset(resources))


# Kubernetes' bootstrap NodeRules().
NODE_RULES: tuple[Rule, ...] = (
    _rule(("create",), ("authorization.k8s.io",), ("subjectaccessreviews", "localsubjectaccessreviews")),
    _rule(_READ, ("",), ("services", "endpoints", "nodes")),
    _rule(("create", "update", "patch"), ("",), ("nodes", "nodes/status")),
    # get too (Kubernetes: none): the agent adds a repeat to the stored Event's count (SEMANTICS A8).
    _rule(("create", "get", "update", "patch"), ("",), ("events",)),
    _rule(("update", "patch"), ("",), ("pods", "pods/status")),
    # Evictions of its own pods only: the eviction endpoint checks the pod's node (NodeRestriction).
    _rule(("create",), ("",), ("pods/eviction",)),
    _rule(_READ, ("storage.k8s.io",), ("storageclasses",)),
    # RC3: the handler of a pod's RuntimeClass (Kubernetes' NodeRules).
    _rule(_READ, ("node.k8s.io",), ("runtimeclasses",)),
    _rule(("create",), ("",), ("serviceaccounts/token",)),
    _rule(("get",), ("storage.k8s.io",), ("volumeattachments",)),
    # CSI (Kubernetes' NodeRules): read drivers' CSIDriver objects; write its own CSINode (checked below).
    _rule(_READ, ("storage.k8s.io",), ("csidrivers",)),
    _rule(("get", "create", "update", "patch", "delete"), ("storage.k8s.io",), ("csinodes",)),
    # Its own serving certificate (and a renewed client one), as Kubernetes' NodeRules.
    _rule(("create", "get", "list", "watch"), ("certificates.k8s.io",), ("certificatesigningrequests",)),
)
NODE_RULE_DICTS = [r.to_dict() for r in NODE_RULES]


def _selected_node(field_selector: str) -> str | None:
    try:
        selector = parse_field_selector(field_selector) if field_selector else None
    except BadRequest:
        return None
    for req in selector.requirements if selector is not None else ():
        if req.field == "spec.nodeName" and req.operator == "=":
            return req.value
    return None


class NodeAuthorizer:
    def __init__(self, index: AuthzIndex) -> None:
        self.index = index

    def authorize(self, attrs: Attributes) -> Decision:
        node = node_name_of(attrs.user)
        if node is None:
            return Decision(False)
        if not node:
            return Decision(False, f'unknown node for user "{attrs.user.name}"')
        if not attrs.resource_request:
            return Decision(False)
        group, resource, verb = attrs.api_group, attrs.resource, attrs.verb
        if group == "coordination.k8s.io" and resource == "leases":
            # Its own heartbeat Lease only (Kubernetes' NodeRules plus NodeRestriction).
            if attrs.namespace != NODE_LEASE_NAMESPACE or verb not in ("get", "create", "update", "patch"):
                return Decision(False, f"can only use its own Lease in {NODE_LEASE_NAMESPACE}")
            if verb != "create" and attrs.name != node:
                return Decision(False, f'node "{node}" is not allowed to use the Lease "{attrs.name}"')
            return ALLOW
        if group == "":
            if resource in ("secrets", "configmaps"):
                return self._read_namespaced(node, attrs)
            if resource == "persistentvolumeclaims":
                if attrs.subresource == "status":
                    if verb not in ("get", "update", "patch"):
                        return Decision(False, "can only get, update or patch the status of this type")
                    return self._related(node, attrs)
                return self._get_or_visible(node, attrs)
            if resource == "persistentvolumes":
                return self._get_or_visible(node, attrs)
            if resource == "pods":
                return self._pods(node, attrs)
            if resource == "serviceaccounts":
                # Tokens for the service accounts its pods run as (Kubernetes' authorizeCreateToken).
                if verb != "create" or attrs.subresource != "token":
                    return Decision(False, "can only create tokens for individual service accounts")
                return self._related(node, attrs)
            if resource == "nodes" and verb in ("update", "patch") and attrs.name != node:
                return Decision(False, f'node "{node}" is not allowed to modify node "{attrs.name}"')
        if group == "storage.k8s.io" and resource == "volumeattachments":
            return self._attachments(node, attrs)
        if group == "storage.k8s.io" and resource == "csinodes" and verb != "create" and attrs.name != node:
            # NodeRestriction: a node may touch only the CSINode named after it.
            return Decision(False, f'node "{node}" is not allowed to modify CSINode "{attrs.name}"')
        if any(rule_allows(attrs, r) for r in NODE_RULES):
            return ALLOW
        return Decision(False)

    def _attachments(self, node: str, attrs: Attributes) -> Decision:
        """Only the VolumeAttachments of its own node (spec.nodeName, immutable)."""
        if attrs.subresource:
            return Decision(False, "cannot read subresource")
        if attrs.verb == "get":
            return self._related(node, attrs)
        if attrs.verb in ("list", "watch") and not attrs.name:
            # Judged on the object itself, so an attachment created a moment ago is not hidden
            # from a watch while the node graph catches up.
            return Decision(True, visible=lambda obj: ((obj.get("spec") or {}).get("nodeName")) == node)
        return Decision(False, "can only read the VolumeAttachments of its own node")

    def _related(self, node: str, attrs: Attributes) -> Decision:
        if not attrs.name:
            return Decision(False, "No Object name found")
        if self.index.node_uses(node, attrs.resource, attrs.namespace, attrs.name):
            return ALLOW
        return Decision(False, f"no relationship found between node '{node}' and this object")

    def _read_namespaced(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb not in _READ:
            return Decision(False, "can only read resources of this type")
        if attrs.subresource:
            return Decision(False, "cannot read subresource")
        if not attrs.name and attrs.verb in ("list", "watch"):
            # The agent watches these to retry a pod as soon as what it waits for appears; it is
            # shown only the objects its own pods use.
            return self._get_or_visible(node, attrs)
        if not attrs.namespace:
            return Decision(False, "can only read namespaced object of this type")
        return self._related(node, attrs)

    def _get_or_visible(self, node: str, attrs: Attributes) -> Decision:
        if attrs.subresource:
            return Decision(False, "cannot read subresource")
        if attrs.verb == "get":
            return self._related(node, attrs)
        if attrs.verb in ("list", "watch"):
            index, resource = self.index, attrs.resource

            def visible(obj: Obj) -> bool:
                meta = obj.get("metadata") or {}
                return index.node_uses(node, resource, meta.get("namespace") or "", meta.get("name") or "")

            return Decision(True, visible=visible)
        return Decision(False, "can only get individual resources of this type")

    def _pods(self, node: str, attrs: Attributes) -> Decision:
        verb, sub = attrs.verb, attrs.subresource
        if verb in ("list", "watch") and not attrs.name:
            if _selected_node(attrs.field_selector) == node:
                return ALLOW
            return Decision(False, "can only list/watch pods with spec.nodeName field selector")
        if sub == "eviction":
            return ALLOW if any(rule_allows(attrs, r) for r in NODE_RULES) else Decision(False)
        if sub not in ("", "status"):
            return Decision(False, f"cannot {verb} pods/{sub}")
        if verb in _READ or verb in ("update", "patch"):
            decision = self._related(node, attrs)
            if not decision.allowed or verb in _READ:
                return decision
        return ALLOW if any(rule_allows(attrs, r) for r in NODE_RULES) else Decision(False)


# ---- NodeRestriction ------------------------------------------------------------------------------

# Labels a node may set on itself (Kubernetes' kubeletapis.IsKubeletLabel).
_NODE_LABEL_KEYS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
})
_NODE_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _restricted_label(key: str) -> bool:
    """Kubernetes' NodeRestriction: a node may not set kubernetes.io/k8s.io labels outside the kubelet's set."""
    if key in _NODE_LABEL_KEYS:
        return False
    prefix = key.partition("/")[0] if "/" in key else ""
    if any(prefix == ns or prefix.endswith("." + ns) for ns in _NODE_LABEL_NAMESPACES):
        return False
    if prefix == "node-restriction.kubernetes.io" or prefix.endswith(".node-restriction.kubernetes.io"):
        return True
    return any(prefix == d or prefix.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))


def _node_of(user: str) -> str | None:
    # Admission sees only the user name; any ``system:node:`` name is held to a node's limits.
    return user[len(NODE_PREFIX):] if user.startswith(NODE_PREFIX) else None


def _without(obj: Obj, *meta_keys: str) -> Obj:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in meta_keys}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


class NodeRestriction:
    """Admission: what a node may change in the objects its authorization lets it write."""

    def admit(self, req: AdmissionRequest) -> Obj:
        node = _node_of(req.user)
        if node is None:
            return req.obj
        plural = req.resource.plural
        if plural == "nodes":
            self._node(node, req)
        elif plural == "pods":
            self._pod(node, req)
        elif plural == "leases" and (req.obj.get("metadata") or {}).get("name") != node:
            raise Forbidden(f'node "{node}" is not allowed to modify the Lease of another node')
        elif plural == "csinodes" and (req.obj.get("metadata") or {}).get("name") != node:
            name = (req.obj.get("metadata") or {}).get("name")
            raise Forbidden(f'node "{node}" is not allowed to modify CSINode "{name}"', kind="csinodes", name=name)
        return req.obj

    def admit_status(self, req: AdmissionRequest) -> Obj:
        node = _node_of(req.user)
        if node is None or req.resource.plural != "persistentvolumeclaims" or req.old is None:
            return req.obj
        allowed = ("capacity", "conditions", "allocatedResourceStatuses", "allocatedResources")
        new_status = {k: v for k, v in (req.obj.get("status") or {}).items() if k not in allowed}
        old_status = {k: v for k, v in (req.old.get("status") or {}).items() if k not in allowed}
        if new_status != old_status:
            raise Forbidden(f'node "{node}" is not allowed to update fields other than status.capacity and '
                            "status.conditions", kind=req.resource.plural, name=_name(req.obj))
        return req.obj

    @staticmethod
    def _node(node: str, req: AdmissionRequest) -> None:
        name = _name(req.obj)
        if name != node:
            raise Forbidden(f'node "{node}" is not allowed to modify node "{name}"', kind="nodes", name=name)
        new_labels = (req.obj.get("metadata") or {}).get("labels") or {}
        old_labels = ((req.old or {}).get("metadata") or {}).get("labels") or {}
        changed = sorted(k for k in set(new_labels) | set(old_labels)
                         if new_labels.get(k) != old_labels.get(k) and _restricted_label(k))
        if changed:
            raise Forbidden(f'node "{node}" is not allowed to modify labels: {", ".join(changed)}',
                            kind="nodes", name=name)
        if req.old is not None and (req.obj.get("spec") or {}).get("taints") != (req.old.get("spec") or {}).get("taints"):
            raise Forbidden(f'node "{node}" is not allowed to modify taints', kind="nodes", name=name)

    @staticmethod
    def _pod(node: str, req: AdmissionRequest) -> None:
        name = _name(req.obj)
        if req.operation == "CREATE" or req.old is None:
            raise Forbidden(f'node "{node}" can not create pods', kind="pods", name=name)
        if (req.old.get("spec") or {}).get("nodeName") != node:
            raise Forbidden(f'node "{node}" can only update pods bound to itself', kind="pods", name=name)
        new_fin = set((req.obj.get("metadata") or {}).get("finalizers") or [])
        old_fin = set((req.old.get("metadata") or {}).get("finalizers") or [])
        volatile = ("finalizers", "resourceVersion", "managedFields", "generation")
        if (new_fin ^ old_fin) - {NODE_AGENT_FINALIZER} or _without(req.obj, *volatile) != _without(req.old, *volatile):
            raise Forbidden(f'node "{node}" may only add or remove the {NODE_AGENT_FINALIZER} finalizer of a pod',
                            kind="pods", name=name)


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")
