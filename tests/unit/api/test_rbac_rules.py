"""The RBAC evaluator against Kubernetes' semantics (rbac/v1 RuleAllows, appliesTo, RoleBinding scoping),
request attributes as Kubernetes' RequestInfoFactory reads them, and the failed-authentication limiter."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import pytest

from storage.apiserver.auth import User
from storage.apiserver.authz import authenticated, request_attributes
from storage.apiserver.bootstrap import aggregated_rules, cluster_roles
from storage.apiserver.rbac import (
    Attributes,
    RBACAuthorizer,
    RoleRef,
    Rule,
    Union,
    applies_to,
    forbidden_message,
    rule_allows,
    rules_from,
    subject_keys,
)
from storage.apiserver.ratelimit import FailureLimiter

ALICE = User("alice", groups=("dev", "system:authenticated"))


def rule(**kw: Any) -> Rule:
    return rules_from([{k: v for k, v in kw.items()}])[0]


def res(verb: str, resource: str, *, group: str = "", sub: str = "", name: str = "", ns: str = "ns1",
        user: User = ALICE) -> Attributes:
    return Attributes(user, verb, True, ns, group, "v1", resource, sub, name)


def url(verb: str, path: str, user: User = ALICE) -> Attributes:
    return Attributes(user, verb, False, path=path)


@pytest.mark.parametrize("r, attrs, allowed", [
    (rule(verbs=["get"], apiGroups=[""], resources=["pods"]), res("get", "pods"), True),
    (rule(verbs=["get"], apiGroups=[""], resources=["pods"]), res("list", "pods"), False),
    (rule(verbs=["*"], apiGroups=[""], resources=["pods"]), res("deletecollection", "pods"), True),
    (rule(verbs=["get"], apiGroups=["apps"], resources=["pods"]), res("get", "pods"), False),
    (rule(verbs=["get"], apiGroups=["*"], resources=["statefulsets"]), res("get", "statefulsets", group="apps"), True),
    (rule(verbs=["get"], apiGroups=[""], resources=["*"]), res("get", "secrets"), True),
    # A resource rule does not grant its subresources, and a subresource rule not the resource.
    (rule(verbs=["get"], apiGroups=[""], resources=["pods"]), res("get", "pods", sub="log"), False),
    (rule(verbs=["get"], apiGroups=[""], resources=["pods/log"]), res("get", "pods", sub="log"), True),
    (rule(verbs=["get"], apiGroups=[""], resources=["pods/log"]), res("get", "pods"), False),
    (rule(verbs=["update"], apiGroups=[""], resources=["*/status"]), res("update", "nodes", sub="status"), True),
    (rule(verbs=["update"], apiGroups=[""], resources=["*/status"]), res("update", "nodes"), False),
    (rule(verbs=["get"], apiGroups=[""], resources=["*"]), res("get", "pods", sub="log"), True),
    # resourceNames limit to named objects; a list has no name, so it is not granted.
    (rule(verbs=["get", "list"], apiGroups=[""], resources=["secrets"], resourceNames=["a"]), res("get", "secrets", name="a"), True),
    (rule(verbs=["get", "list"], apiGroups=[""], resources=["secrets"], resourceNames=["a"]), res("get", "secrets", name="b"), False),
    (rule(verbs=["get", "list"], apiGroups=[""], resources=["secrets"], resourceNames=["a"]), res("list", "secrets"), False),
    # Non-resource URLs: exact, or a trailing * as a prefix; never a resource request.
    (rule(verbs=["get"], nonResourceURLs=["/healthz"]), url("get", "/healthz"), True),
    (rule(verbs=["get"], nonResourceURLs=["/healthz"]), url("get", "/healthz/etcd"), False),
    (rule(verbs=["get"], nonResourceURLs=["/apis/*"]), url("get", "/apis/apps/v1"), True),
    (rule(verbs=["get"], nonResourceURLs=["/apis/*"]), url("get", "/apis"), False),
    (rule(verbs=["get"], nonResourceURLs=["*"]), url("get", "/anything"), True),
    (rule(verbs=["get"], nonResourceURLs=["*"]), res("get", "pods"), False),
    (rule(verbs=["get"], apiGroups=["*"], resources=["*"]), url("get", "/api"), False),
])
def test_rule_allows(r: Rule, attrs: Attributes, allowed: bool) -> None:
    assert rule_allows(attrs, r) is allowed


def test_subjects_apply_as_in_kubernetes() -> None:
    sa = User("system:serviceaccount:ns1:robot", groups=("system:serviceaccounts", "system:serviceaccounts:ns1"))
    assert applies_to({"kind": "User", "name": "alice"}, ALICE, "ns1")
    assert applies_to({"kind": "Group", "name": "dev"}, ALICE, "ns1")
    assert not applies_to({"kind": "User", "name": "dev"}, ALICE, "ns1")  # kinds never mix
    # A ServiceAccount subject without namespace means the binding's namespace.
    assert applies_to({"kind": "ServiceAccount", "name": "robot"}, sa, "ns1")
    assert not applies_to({"kind": "ServiceAccount", "name": "robot"}, sa, "ns2")
    assert applies_to({"kind": "ServiceAccount", "name": "robot", "namespace": "ns1"}, sa, "")
    assert not applies_to({"kind": "User", "name": "robot"}, sa, "ns1")
    assert applies_to({"kind": "Group", "name": "system:serviceaccounts:ns1"}, sa, "")
    assert ("ServiceAccount", "ns1", "robot") in subject_keys(sa)


def test_authentication_adds_kubernetes_groups() -> None:
    assert authenticated(User("bob")).groups == ("system:authenticated",)
    sa = authenticated(User("system:serviceaccount:ns1:robot"))
    assert sa.groups == ("system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated")
    assert authenticated(ALICE) is ALICE


@dataclass
class _Policy:
    cluster_roles: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    roles: dict[tuple[str, str], tuple[Rule, ...]] = field(default_factory=dict)
    cluster_bindings: list[tuple[dict[str, Any], RoleRef]] = field(default_factory=list)
    bindings: list[tuple[dict[str, Any], RoleRef]] = field(default_factory=list)

    def cluster_role_rules(self, name: str) -> tuple[Rule, ...]:
        return self.cluster_roles.get(name, ())

    def role_rules(self, namespace: str, name: str) -> tuple[Rule, ...]:
        return self.roles.get((namespace, name), ())

    def cluster_bindings_for(self, user: User) -> Iterable[RoleRef]:
        return [ref for subject, ref in self.cluster_bindings if applies_to(subject, user, "")]

    def namespace_bindings_for(self, namespace: str, user: User) -> Iterable[RoleRef]:
        return [ref for subject, ref in self.bindings if ref.namespace == namespace and applies_to(subject, user, namespace)]


def test_role_binding_to_a_cluster_role_grants_only_in_its_namespace() -> None:
    view = rules_from([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "nodes"]}])
    policy = _Policy(cluster_roles={"view": view},
                     bindings=[({"kind": "User", "name": "alice"}, RoleRef("ClusterRole", "view", "ns1"))])
    rbac = RBACAuthorizer(policy)
    assert rbac.authorize(res("list", "pods")).allowed
    assert not rbac.authorize(res("list", "pods", ns="ns2")).allowed
    assert not rbac.authorize(res("list", "pods", ns="")).allowed  # all namespaces
    assert not rbac.authorize(res("get", "nodes", ns="", name="n1")).allowed  # cluster-scoped stays out of reach
    policy.cluster_bindings.append(({"kind": "Group", "name": "dev"}, RoleRef("ClusterRole", "view", "")))
    assert rbac.authorize(res("list", "pods", ns="ns2")).allowed
    assert rbac.authorize(res("get", "nodes", ns="", name="n1")).allowed


def test_a_role_applies_in_its_namespace_and_a_missing_role_grants_nothing() -> None:
    policy = _Policy(roles={("ns1", "r"): rules_from([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])},
                     bindings=[({"kind": "User", "name": "alice"}, RoleRef("Role", "r", "ns1")),
                               ({"kind": "User", "name": "alice"}, RoleRef("Role", "absent", "ns2"))])
    rbac = RBACAuthorizer(policy)
    assert rbac.authorize(res("delete", "secrets", name="x")).allowed
    assert not rbac.authorize(res("get", "secrets", name="x", ns="ns2")).allowed


def test_system_masters_is_always_allowed() -> None:
    root = User("root", groups=("system:masters",))
    assert Union(RBACAuthorizer(_Policy())).authorize(res("delete", "nodes", ns="", user=root)).allowed
    assert not Union(RBACAuthorizer(_Policy())).authorize(res("get", "pods")).allowed


def test_forbidden_messages_are_kubernetes_wording() -> None:
    assert forbidden_message(res("get", "secrets", name="x")) == (
        'secrets "x" is forbidden: User "alice" cannot get resource "secrets" in API group "" in the namespace "ns1"')
    assert forbidden_message(res("list", "statefulsets", group="apps", ns="")) == (
        'statefulsets.apps is forbidden: User "alice" cannot list resource "statefulsets" in API group "apps" '
        "at the cluster scope")
    assert forbidden_message(res("get", "pods", sub="log", name="p"), "why") == (
        'pods "p" is forbidden: User "alice" cannot get resource "pods/log" in API group "" in the namespace '
        '"ns1": why')
    assert forbidden_message(url("get", "/metrics")) == 'forbidden: User "alice" cannot get path "/metrics"'


@pytest.mark.parametrize("method, path, query, expected", [
    ("GET", "/api/v1/namespaces/ns1/pods", {}, ("list", "", "pods", "", "ns1", "")),
    ("GET", "/api/v1/namespaces/ns1/pods", {"watch": "true"}, ("watch", "", "pods", "", "ns1", "")),
    ("GET", "/api/v1/watch/namespaces/ns1/pods", {}, ("watch", "", "pods", "", "ns1", "")),
    ("GET", "/api/v1/namespaces/ns1/pods/p/log", {}, ("get", "", "pods", "log", "ns1", "p")),
    ("PUT", "/api/v1/namespaces/ns1/pods/p/status", {}, ("update", "", "pods", "status", "ns1", "p")),
    ("DELETE", "/api/v1/namespaces/ns1/pods", {}, ("deletecollection", "", "pods", "", "ns1", "")),
    ("DELETE", "/api/v1/namespaces/ns1/pods/p", {}, ("delete", "", "pods", "", "ns1", "p")),
    ("PATCH", "/apis/apps/v1/namespaces/ns1/statefulsets/s", {}, ("patch", "apps", "statefulsets", "", "ns1", "s")),
    ("POST", "/apis/storage.k8s.io/v1/storageclasses", {}, ("create", "storage.k8s.io", "storageclasses", "", "", "")),
    ("GET", "/api/v1/namespaces/ns1", {}, ("get", "", "namespaces", "", "ns1", "ns1")),
    ("PUT", "/api/v1/namespaces/ns1/status", {}, ("update", "", "namespaces", "status", "ns1", "ns1")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
    ("GET", "/api/v1/namespaces/ns1/secrets", {"fieldSelector": "metadata.name=s"}, ("list", "", "secrets", "", "ns1", "s")),
])
def test_request_attributes(method: str, path: str, query: dict[str, str], expected: tuple[str, ...]) -> None:
    a = request_attributes(ALICE, method, path, query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == expected


@pytest.mark.parametrize("path", ["/api", "/apis", "/api/v1", "/apis/apps", "/apis/apps/v1", "/version", "/openapi/v2"])
def test_discovery_paths_are_non_resource_requests(path: str) -> None:
    a = request_attributes(ALICE, "GET", path, {})
    assert not a.resource_request and a.verb == "get" and a.path == path


def test_aggregation_unions_selected_roles_and_view_never_reads_secrets() -> None:
    roles = {r["metadata"]["name"]: r for r in cluster_roles()}
    view = aggregated_rules(roles["view"], list(roles.values()))
    assert view is not None and view == roles["system:aggregate-to-view"]["rules"]
    assert not any("secrets" in r.get("resources", []) for r in view)
    edit = aggregated_rules(roles["edit"], [*roles.values(), {**roles["view"], "rules": view}])
    assert edit is not None and all(r in edit for r in view)
    assert any("secrets" in r.get("resources", []) and "get" in r["verbs"] for r in edit)
    assert aggregated_rules(roles["cluster-admin"], list(roles.values())) is None


def test_failure_limiter_is_a_token_bucket_per_address() -> None:
    now = [0.0]
    limiter = FailureLimiter(burst=3, per_second=0.5, clock=lambda: now[0])
    assert [limiter.failed("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.failed("a") == 2  # empty: one token needs 2 s at 0.5/s
    assert limiter.failed("b") == 0  # another address has its own bucket
    now[0] += 2.0
    assert limiter.retry_after("a") == 0 and limiter.failed("a") == 0
    assert limiter.failed("a") > 0


def test_escalation_coverage_is_kubernetes_covers() -> None:
    from storage.apiserver.rbac_escalation import uncovered

    owner = list(rules_from([
        {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/status"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]},
        {"verbs": ["get"], "nonResourceURLs": ["/apis/*"]},
    ]))
    assert not uncovered(owner, rules_from([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "nodes/status"]}]))
    assert not uncovered(owner, rules_from([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"],
                                             "resourceNames": ["a"]}]))
    assert not uncovered(owner, rules_from([{"verbs": ["get"], "nonResourceURLs": ["/apis/apps"]}]))
    # A name-limited owner rule does not cover the whole resource; a missing verb or group is missing.
    assert len(uncovered(owner, rules_from([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]))) == 1
    assert len(uncovered(owner, rules_from([{"verbs": ["get", "delete"], "apiGroups": ["", "apps"],
                                             "resources": ["pods"]}]))) == 3
    assert uncovered(owner, rules_from([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]))
    assert uncovered(owner, rules_from([{"verbs": ["get"], "nonResourceURLs": ["/api"]}]))


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_protobuf_reviews_decode_as_kubectl_sends_them() -> None:
    from storage.api.k8s_protobuf import MAGIC, decode_object
    from storage.errors import BadRequest

    def decode_review(body: bytes, kind: str) -> dict:
        return decode_object(body, "authorization.k8s.io/v1", kind)

    attrs = _field(1, b"ns1") + _field(2, b"get") + _field(5, b"secrets") + _field(7, b"s")
    raw = _field(2, _field(1, attrs))  # spec.resourceAttributes
    envelope = MAGIC + _field(1, _field(1, b"authorization.k8s.io/v1") + _field(2, b"SelfSubjectAccessReview")) + _field(2, raw)
    assert decode_review(envelope, "SelfSubjectAccessReview") == {
        "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "spec": {"resourceAttributes": {"namespace": "ns1", "verb": "get", "resource": "secrets", "name": "s"}},
        # Fields Go always writes (a struct, a bool without omitempty) come out as their zero values.
        "metadata": {}, "status": {"allowed": False}}
    sar = MAGIC + _field(2, _field(2, _field(3, b"bob") + _field(4, b"g1") + _field(4, b"g2")))
    assert decode_review(sar, "SubjectAccessReview")["spec"] == {"user": "bob", "groups": ["g1", "g2"]}
    with pytest.raises(BadRequest):
        decode_review(b"{}", "SelfSubjectAccessReview")
    with pytest.raises(BadRequest):
        decode_review(MAGIC + b"\x12\x7f", "SelfSubjectAccessReview")  # a length past the end
