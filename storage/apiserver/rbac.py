"""Kubernetes' RBAC semantics: request attributes, rule matching, subject matching, the authorizer.

Everything here is pure: the policy comes from a ``Policy`` (the watch-fed
``AuthzIndex`` in the server, a plain dict-backed one in tests), so each rule
of Kubernetes' ``rbac/v1`` evaluation can be checked on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from storage.apiserver.auth import User

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Attributes:
    """What one request asks to do (Kubernetes' ``authorizer.Attributes``)."""

    user: User
    verb: str
    resource_request: bool = True
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""
    field_selector: str = ""  # raw, for authorizers that allow a list/watch scoped by a selector

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    # Set when a list or watch is allowed for only some objects: the server shows only those.
    visible: Callable[[Obj], bool] | None = field(default=None, compare=False)


DENY = Decision(False)
ALLOW = Decision(True)


@dataclass(frozen=True)
class Rule:
    """A ``PolicyRule`` with its lists as frozensets (matching is set membership)."""

    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, rule: Obj) -> "Rule":
        def s(key: str) -> frozenset[str]:
            return frozenset(str(v) for v in rule.get(key) or ())
        return cls(s("verbs"), s("apiGroups"), s("resources"), s("resourceNames"), s("nonResourceURLs"))

    def to_dict(self) -> Obj:
        out: Obj = {"verbs": sorted(self.verbs)}
        for key, values in (("apiGroups", self.api_groups), ("resources", self.resources),
                            ("resourceNames", self.resource_names), ("nonResourceURLs", self.non_resource_urls)):
            if values:
                out[key] = sorted(values)
        return out


def rules_from(rules: Iterable[Any] | None) -> tuple[Rule, ...]:
    return tuple(Rule.from_dict(r) for r in rules or () if isinstance(r, dict))


def verb_matches(rule: Rule, verb: str) -> bool:
    return "*" in rule.verbs or verb in rule.verbs


def api_group_matches(rule: Rule, group: str) -> bool:
    return "*" in rule.api_groups or group in rule.api_groups


def resource_matches(rule: Rule, combined: str, subresource: str) -> bool:
    """``*``, the exact ``resource[/subresource]``, or ``*/subresource`` for any resource's subresource."""
    if "*" in rule.resources or combined in rule.resources:
        return True
    return bool(subresource) and f"*/{subresource}" in rule.resources


def resource_name_matches(rule: Rule, name: str) -> bool:
    return not rule.resource_names or name in rule.resource_names


def non_resource_url_matches(rule: Rule, path: str) -> bool:
    for url in rule.non_resource_urls:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Rule) -> bool:
    if attrs.resource_request:
        return (verb_matches(rule, attrs.verb) and api_group_matches(rule, attrs.api_group)
                and resource_matches(rule, attrs.combined_resource, attrs.subresource)
                and resource_name_matches(rule, attrs.name))
    return verb_matches(rule, attrs.verb) and non_resource_url_matches(rule, attrs.path)


def service_account_of(user: User) -> tuple[str, str] | None:
    """(namespace, name) for ``system:serviceaccount:<ns>:<name>``."""
    if not user.name.startswith(SA_PREFIX):
        return None
    namespace, sep, name = user.name[len(SA_PREFIX):].partition(":")
    return (namespace, name) if sep and namespace and name and ":" not in name else None


def node_name_of(user: User) -> str | None:
    """The node a ``system:node:<name>`` user in group ``system:nodes`` speaks for (Kubernetes' NodeIdentity)."""
    if NODES_GROUP not in user.groups or not user.name.startswith(NODE_PREFIX):
        return None
    return user.name[len(NODE_PREFIX):]


def subject_keys(user: User) -> list[tuple[str, ...]]:
    """The index keys of every binding subject that can name this user."""
    keys: list[tuple[str, ...]] = [("User", user.name)]
    keys.extend(("Group", g) for g in user.groups)
    sa = service_account_of(user)
    if sa is not None:
        keys.append(("ServiceAccount", *sa))
    return keys


def subject_key(subject: Obj, binding_namespace: str) -> tuple[str, ...] | None:
    kind, name = subject.get("kind"), subject.get("name") or ""
    if kind == "ServiceAccount":
        # A RoleBinding's ServiceAccount subject without a namespace means the binding's own.
        return ("ServiceAccount", subject.get("namespace") or binding_namespace, name)
    if kind in ("User", "Group"):
        return (kind, name)
    return None


def applies_to(subject: Obj, user: User, binding_namespace: str) -> bool:
    key = subject_key(subject, binding_namespace)
    return key is not None and key in subject_keys(user)


@dataclass(frozen=True)
class RoleRef:
    kind: str  # Role or ClusterRole
    name: str
    namespace: str  # the binding's namespace ("" for a ClusterRoleBinding)


class Policy(Protocol):
    def cluster_role_rules(self, name: str) -> tuple[Rule, ...]: ...

    def role_rules(self, namespace: str, name: str) -> tuple[Rule, ...]: ...

    def cluster_bindings_for(self, user: User) -> Iterable[RoleRef]: ...

    def namespace_bindings_for(self, namespace: str, user: User) -> Iterable[RoleRef]: ...


def rules_of(policy: Policy, ref: RoleRef) -> tuple[Rule, ...]:
    if ref.kind == "ClusterRole":
        return policy.cluster_role_rules(ref.name)
    return policy.role_rules(ref.namespace, ref.name)


class RBACAuthorizer:
    """ClusterRoleBindings everywhere; RoleBindings (to a Role or a ClusterRole) only in their namespace."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def authorize(self, attrs: Attributes) -> Decision:
        for ref in self.policy.cluster_bindings_for(attrs.user):
            if any(rule_allows(attrs, r) for r in rules_of(self.policy, ref)):
                return ALLOW
        if attrs.namespace:
            for ref in self.policy.namespace_bindings_for(attrs.namespace, attrs.user):
                if any(rule_allows(attrs, r) for r in rules_of(self.policy, ref)):
                    return ALLOW
        return DENY

    def rules_for(self, user: User, namespace: str) -> list[Rule]:
        """Every rule that applies to ``user`` in ``namespace`` (SelfSubjectRulesReview)."""
        rules: list[Rule] = []
        for ref in self.policy.cluster_bindings_for(user):
            rules.extend(rules_of(self.policy, ref))
        if namespace:
            for ref in self.policy.namespace_bindings_for(namespace, user):
                rules.extend(rules_of(self.policy, ref))
        return rules


class Authorizer(Protocol):
    def authorize(self, attrs: Attributes) -> Decision: ...


class Union:
    """``--authorization-mode=Node,RBAC``: ``system:masters`` first, then each authorizer until one allows."""

    def __init__(self, *authorizers: Authorizer) -> None:
        self.authorizers = authorizers

    def authorize(self, attrs: Attributes) -> Decision:
        if MASTERS in attrs.user.groups:
            return ALLOW
        reasons: list[str] = []
        for authorizer in self.authorizers:
            decision = authorizer.authorize(attrs)
            if decision.allowed:
                return decision
            if decision.reason:
                reasons.append(decision.reason)
        return Decision(False, ", ".join(reasons))


def forbidden_message(attrs: Attributes, reason: str = "") -> str:
    """Kubernetes' wording: ``secrets "x" is forbidden: User "alice" cannot get resource ...``."""
    user = attrs.user.name
    if not attrs.resource_request:
        detail = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        where = (f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope")
        detail = (f'User "{user}" cannot {attrs.verb} resource "{attrs.combined_resource}" '
                  f'in API group "{attrs.api_group}" {where}')
    if reason:
        detail = f"{detail}: {reason}"
    if not attrs.resource_request or not attrs.resource:
        return f"forbidden: {detail}"
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    if attrs.name:
        return f'{qualified} "{attrs.name}" is forbidden: {detail}'
    return f"{qualified} is forbidden: {detail}"
