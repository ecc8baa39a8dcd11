"""Kubernetes' RBAC escalation prevention, as an admission step on roles and bindings.

A user may write a Role or ClusterRole only with permissions it holds itself
(or with the ``escalate`` verb on it), and bind a role only if it holds all of
the role's permissions where the binding applies (or has the ``bind`` verb on
that role). Without this, anyone allowed to create RoleBindings could bind
``cluster-admin`` to themselves.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Iterable

from storage.apiserver.admission import AdmissionRequest
from storage.apiserver.auth import User
from storage.apiserver.rbac import MASTERS, Attributes, Rule, rules_from
from storage.errors import Forbidden

if TYPE_CHECKING:
    from storage.apiserver.authz import Authorization

Obj = dict[str, Any]
RBAC = "rbac.authorization.k8s.io"
# The user of the request being served: admission requests carry only a name, escalation needs the groups.
CURRENT_USER: ContextVar[User | None] = ContextVar("stowage_current_user", default=None)


def _atoms(rule: Rule) -> Iterable[Rule]:
    """One rule per verb x group x resource x name (or verb x URL), as Kubernetes' BreakdownRule."""
    one = lambda v: frozenset({v})  # noqa: E731
    for verb in rule.verbs:
        for group in rule.api_groups:
            for resource in rule.resources:
                if rule.resource_names:
                    for name in rule.resource_names:
                        yield Rule(one(verb), one(group), one(resource), one(name))
                else:
                    yield Rule(one(verb), one(group), one(resource))
        for url in rule.non_resource_urls:
            yield Rule(one(verb), non_resource_urls=one(url))


def _resources_cover(owner: frozenset[str], wanted: frozenset[str]) -> bool:
    if "*" in owner or wanted <= owner:
        return True
    for resource in wanted:
        if resource in owner:
            continue
        _, slash, sub = resource.partition("/")
        if not slash or f"*/{sub}" not in owner:
            return False
    return True


def _urls_cover(owner: frozenset[str], wanted: frozenset[str]) -> bool:
    for url in wanted:
        if not any(o == "*" or o == url or (o.endswith("*") and url.startswith(o[:-1])) for o in owner):
            return False
    return True


def rule_covers(owner: Rule, atom: Rule) -> bool:
    """Kubernetes' ruleCovers: ``owner`` grants at least everything ``atom`` does."""
    verbs = "*" in owner.verbs or atom.verbs <= owner.verbs
    groups = "*" in owner.api_groups or atom.api_groups <= owner.api_groups
    if atom.resource_names:
        names = not owner.resource_names or atom.resource_names <= owner.resource_names
    else:
        names = not owner.resource_names
    return (verbs and groups and _resources_cover(owner.resources, atom.resources)
            and _urls_cover(owner.non_resource_urls, atom.non_resource_urls) and names)


def uncovered(owner: list[Rule], wanted: Iterable[Rule]) -> list[Rule]:
    """The atomic rules of ``wanted`` that no rule of ``owner`` covers."""
    return [atom for rule in wanted for atom in _atoms(rule) if not any(rule_covers(o, atom) for o in owner)]


class RBACEscalation:
    """Admission plugin: no role or binding grants more than its writer holds."""

    def __init__(self, authz: "Authorization") -> None:
        self.authz = authz

    def admit(self, req: AdmissionRequest) -> Obj:
        plural = req.resource.plural
        if plural not in ("roles", "clusterroles", "rolebindings", "clusterrolebindings"):
            return req.obj
        user = CURRENT_USER.get()
        if user is None or MASTERS in user.groups:
            return req.obj  # a write from inside the server, or from a cluster admin
        meta = req.obj.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        if plural in ("roles", "clusterroles"):
            self._role(user, plural, namespace, name, req.obj)
        else:
            self._binding(user, plural, namespace, name, req.obj)
        return req.obj

    def _allowed(self, user: User, verb: str, resource: str, namespace: str, name: str) -> bool:
        attrs = Attributes(user, verb, True, namespace, RBAC, "v1", resource, "", name)
        return self.authz.decide(attrs).allowed

    def _role(self, user: User, plural: str, namespace: str, name: str, obj: Obj) -> None:
        if self._allowed(user, "escalate", plural, namespace, name):
            return
        kind = "Role" if plural == "roles" else "ClusterRole"
        if obj.get("aggregationRule"):
            raise Forbidden(f'{plural}.{RBAC} "{name}" is forbidden: user "{user.name}" may not create or update an '
                            "aggregated ClusterRole without the escalate verb", kind=plural, name=name)
        missing = uncovered(self.authz.rbac.rules_for(user, namespace), rules_from(obj.get("rules")))
        if missing:
            raise self._escalation(user, kind, plural, name, namespace, missing)

    def _binding(self, user: User, plural: str, namespace: str, name: str, obj: Obj) -> None:
        ref = obj.get("roleRef") or {}
        role_kind, role_name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        role_plural = "roles" if role_kind == "Role" else "clusterroles"
        if self._allowed(user, "bind", role_plural, namespace, role_name):
            return
        if role_kind == "Role":
            wanted = self.authz.index.role_rules(namespace, role_name)
        else:
            wanted = self.authz.index.cluster_role_rules(role_name)
        missing = uncovered(self.authz.rbac.rules_for(user, namespace), wanted)
        if missing:
            raise self._escalation(user, "RoleBinding" if plural == "rolebindings" else "ClusterRoleBinding",
                                   plural, name, namespace, missing)

    @staticmethod
    def _escalation(user: User, kind: str, plural: str, name: str, namespace: str, missing: list[Rule]) -> Forbidden:
        shown = "; ".join(_show(r) for r in missing[:10]) + ("; ..." if len(missing) > 10 else "")
        scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        return Forbidden(f'{plural}.{RBAC} "{name}" is forbidden: user "{user.name}" (groups={list(user.groups)}) is '
                         f"attempting to grant RBAC permissions not currently held{scope}: {shown}",
                         kind=plural, name=name)


def _show(rule: Rule) -> str:
    d = rule.to_dict()
    return "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"
