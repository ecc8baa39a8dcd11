"""Authorization of every request: attributes from the path, Node + RBAC decisions, access reviews.

``request_attributes`` is Kubernetes' RequestInfoFactory: it reads the verb,
group, resource, subresource, namespace and name off the path before any
routing, so an unknown path is refused as readily as a known one.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, Mapping
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool

from storage.api.selectors import parse_field_selector
from storage.api.validation import validate_review
from storage.apiserver.auth import User
from storage.apiserver.authz_index import AuthzIndex
from storage.apiserver.bootstrap import AggregationController, reconcile_bootstrap_policy
from storage.apiserver.node_authz import NODE_RULES, NodeAuthorizer
from storage.apiserver.rbac import (
    AUTHENTICATED,
    MASTERS,
    SA_GROUP,
    Attributes,
    Decision,
    RBACAuthorizer,
    Rule,
    Union,
    forbidden_message,
    node_name_of,
    service_account_of,
)
from storage.errors import BadRequest, Forbidden
from storage.store.base import Store

Obj = dict[str, Any]
# How long a denied request waits for the index to read writes made before it (read-your-writes).
CATCH_UP_SECONDS = 2.0
_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@functools.lru_cache(maxsize=4096)
def authenticated(user: User) -> User:
    """Every authenticated user is in ``system:authenticated``; a service account also in its groups."""
    groups = list(user.groups)
    extra = [AUTHENTICATED]
    sa = service_account_of(user)
    if sa is not None:
        extra = [SA_GROUP, f"{SA_GROUP}:{sa[0]}", AUTHENTICATED]
    groups.extend(g for g in extra if g not in groups)
    return user if len(groups) == len(user.groups) else replace(user, groups=tuple(groups))


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def request_attributes(user: User, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    verb = _VERBS.get(method, method.lower())
    parts = [p for p in path.strip("/").split("/")]
    if parts and parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts and parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Attributes(user, verb, resource_request=False, path=path)
    if rest and rest[0] == "watch":
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces":
        if len(rest) > 1:
            namespace = rest[1]
            if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
                rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    field_selector = query.get("fieldSelector") or ""
    if not name and verb == "get":
        verb = "watch" if _truthy(query.get("watch")) else "list"
    if not name and verb in ("list", "watch") and field_selector:
        try:
            for req in parse_field_selector(field_selector).requirements:
                if req.field == "metadata.name" and req.operator == "=" and "/" not in req.value:
                    name = req.value
        except BadRequest:
            pass  # the handler reports the bad selector
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(user, verb, True, namespace, group, version, resource, subresource, name, path,
                      field_selector)


def forbidden(attrs: Attributes, reason: str = "") -> Forbidden:
    return Forbidden(forbidden_message(attrs, reason), kind=attrs.resource, name=attrs.name)


class Authorization:
    """The server's authorizer (``Node,RBAC``), its index, the default policy and role aggregation."""

    def __init__(self, store: Store, *, bootstrap: bool = True) -> None:
        self.store = store
        self.index = AuthzIndex(store)
        self.rbac = RBACAuthorizer(self.index)
        self.nodes = NodeAuthorizer(self.index)
        self.authorizer = Union(self.nodes, self.rbac)
        self.aggregation = AggregationController(store, self.index)
        self._bootstrap = bootstrap

    def start(self) -> "Authorization":
        # A database that failed its integrity check refuses writes: the policy already stored
        # (if any) is what there is to serve until it is restored.
        writable = not getattr(self.store, "corrupt", None)
        if self._bootstrap and writable:
            reconcile_bootstrap_policy(self.store)
        self.index.start()
        # Serve no request before the default roles hold their aggregated rules (a view user would
        # otherwise be refused everything for the first moments).
        for _ in range(5 if writable else 0):
            if not self.aggregation.sync_once():
                break
            self.index.wait_for(self.store.current_revision(), CATCH_UP_SECONDS)
        self.aggregation.start()
        return self

    def close(self) -> None:
        self.aggregation.close()
        self.index.close()

    def decide(self, attrs: Attributes) -> Decision:
        return self.authorizer.authorize(attrs)

    def decide_current(self, attrs: Attributes) -> Decision:
        """A decision on an index that has read every write made so far (blocking; for a worker thread)."""
        decision = self.decide(attrs)
        if decision.allowed:
            return decision
        self.index.wait_for(self.store.current_revision(), CATCH_UP_SECONDS)
        return self.decide(attrs)

    async def check(self, attrs: Attributes) -> Decision:
        """The decision, or ``Forbidden`` with Kubernetes' message."""
        if MASTERS in attrs.user.groups:
            return Decision(True)
        decision = self.decide(attrs)
        if not decision.allowed:
            decision = await run_in_threadpool(self.decide_current, attrs)
        if not decision.allowed:
            raise forbidden(attrs, decision.reason)
        return decision

    # ---- reviews ---------------------------------------------------------------------------

    def rules_review(self, user: User, namespace: str) -> Obj:
        rules = self.rbac.rules_for(user, namespace)
        incomplete = False
        if MASTERS in user.groups:
            rules = [Rule(frozenset({"*"}), frozenset({"*"}), frozenset({"*"})),
                     Rule(frozenset({"*"}), non_resource_urls=frozenset({"*"})), *rules]
        if node_name_of(user) is not None:
            rules = [*NODE_RULES, *rules]
            incomplete = True  # the node graph's per-object grants are not rules
        resource_rules, non_resource_rules = [], []
        for rule in rules:
            d = rule.to_dict()
            if rule.non_resource_urls:
                entry = {"verbs": d["verbs"], "nonResourceURLs": d["nonResourceURLs"]}
                if entry not in non_resource_rules:
                    non_resource_rules.append(entry)
            else:
                entry = {k: d[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if k in d}
                if entry not in resource_rules:
                    resource_rules.append(entry)
        return {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": incomplete}


async def impersonated(authz: Authorization, user: User, headers: Any) -> User:
    """The user a request acts as: ``Impersonate-User`` / ``Impersonate-Group`` / ``Impersonate-Uid`` /
    ``Impersonate-Extra-<key>`` (``kubectl --as``, ``--as-group``, ``--as-uid``, ``--as-user-extra``),
    each allowed by the ``impersonate`` verb on users, groups or service accounts, uids and userextras,
    as Kubernetes checks it. Extras are checked, then not carried: nothing here reads a user's extras."""
    target = headers.get("impersonate-user")
    groups = headers.getlist("impersonate-group") if hasattr(headers, "getlist") else []
    uid = headers.get("impersonate-uid")
    extras = [(k[len("impersonate-extra-"):], v) for k, v in headers.items()
              if k.lower().startswith("impersonate-extra-")]
    if target is None:
        if groups or uid is not None or extras:
            asked = [*groups, *([f"uid {uid}"] if uid is not None else []), *(f"extra {k}" for k, _ in extras)]
            raise BadRequest(f"requested {asked} without impersonating a user")
        return user
    sa = service_account_of(User(target))
    if sa is not None:
        checks = [Attributes(user, "impersonate", True, sa[0], "", "v1", "serviceaccounts", "", sa[1])]
    else:
        checks = [Attributes(user, "impersonate", True, "", "", "v1", "users", "", target)]
    checks += [Attributes(user, "impersonate", True, "", "", "v1", "groups", "", g) for g in groups]
    if uid is not None:
        checks.append(Attributes(user, "impersonate", True, "", "authentication.k8s.io", "v1", "uids", "", uid))
    checks += [Attributes(user, "impersonate", True, "", "authentication.k8s.io", "v1", "userextras", unquote(key), value)
               for key, value in extras]
    for attrs in checks:
        await authz.check(attrs)
    return authenticated(User(target, uid or "", tuple(groups)))


def review_attributes(user: User, spec: Obj, namespace: str | None = None) -> Attributes:
    """The attributes a SubjectAccessReview's spec asks about."""
    res = spec.get("resourceAttributes")
    non_res = spec.get("nonResourceAttributes")
    if isinstance(res, dict):
        ns = res.get("namespace") or ""
        if namespace is not None:
            if ns and ns != namespace:
                raise BadRequest("spec.resourceAttributes.namespace must match namespace: "
                                 f'"{ns}" does not match "{namespace}"')
            ns = namespace
        return Attributes(user, str(res.get("verb") or ""), True, str(ns), str(res.get("group") or ""),
                          str(res.get("version") or ""), str(res.get("resource") or ""),
                          str(res.get("subresource") or ""), str(res.get("name") or ""))
    if isinstance(non_res, dict):
        if namespace is not None:
            raise BadRequest("spec.nonResourceAttributes: Forbidden: disallowed on this kind of request")
        return Attributes(user, str(non_res.get("verb") or ""), False, path=str(non_res.get("path") or ""))
    raise BadRequest("spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified")


def review_user(spec: Obj) -> User:
    name = str(spec.get("user") or "")
    groups = tuple(str(g) for g in spec.get("groups") or [])
    if not name and not groups:
        raise BadRequest('spec.user: Invalid value: "": at least one of user or group must be specified')
    return User(name, str(spec.get("uid") or ""), groups)


async def answer_review(authz: Authorization, kind: str, body: Obj, requester: User, namespace: str | None) -> Obj:
    """The review with its ``status`` filled in (nothing is stored)."""
    # Checked against the review's model first: a field of the wrong type (groups: 5) failed in here with a 500.
    body = validate_review(body, kind)
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    out: Obj = {"kind": kind, "apiVersion": body["apiVersion"], "metadata": body.get("metadata") or {},
                "spec": spec}
    if kind == "SelfSubjectReview":
        out.pop("spec")
        out["status"] = {"userInfo": {"username": requester.name, **({"uid": requester.uid} if requester.uid else {}),
                                      "groups": list(requester.groups)}}
        return out
    if kind == "SelfSubjectRulesReview":
        ns = str(spec.get("namespace") or "")
        out["status"] = authz.rules_review(requester, ns)
        return out
    if kind == "SelfSubjectAccessReview":
        user = requester
    else:
        user = review_user(spec)  # a review names the groups itself: none are added
    attrs = review_attributes(user, spec, namespace if kind == "LocalSubjectAccessReview" else None)
    if MASTERS in user.groups:
        decision = Decision(True)
    else:
        decision = await run_in_threadpool(authz.decide_current, attrs)
    status: Obj = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    out["status"] = status
    return out
