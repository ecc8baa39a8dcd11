"""``rbac.authorization.k8s.io/v1``, ``authorization.k8s.io/v1`` and ``authentication.k8s.io/v1`` kinds."""
from __future__ import annotations

from typing import Any

from storage.api.modelbase import WireModel
from storage.api.models.meta import Resource, alias
from storage.api.selectors import LabelSelector


class PolicyRule(WireModel):
    verbs: list[str] | None = None
    api_groups: list[str] | None = None
    resources: list[str] | None = None
    resource_names: list[str] | None = None
    non_resource_urls: list[str] | None = alias("nonResourceURLs")


class AggregationRule(WireModel):
    cluster_role_selectors: list[LabelSelector] | None = None


class Role(Resource):
    rules: list[PolicyRule] | None = None


class ClusterRole(Resource):
    rules: list[PolicyRule] | None = None
    aggregation_rule: AggregationRule | None = None


class Subject(WireModel):
    kind: str | None = None
    api_group: str | None = None
    name: str | None = None
    namespace: str | None = None


class RoleRef(WireModel):
    api_group: str | None = None
    kind: str | None = None
    name: str | None = None


class RoleBinding(Resource):
    subjects: list[Subject] | None = None
    role_ref: RoleRef | None = None


class ClusterRoleBinding(Resource):
    subjects: list[Subject] | None = None
    role_ref: RoleRef | None = None


# ---- reviews: create-only, answered by the API server, never stored ---------------------------

class ResourceAttributes(WireModel):
    namespace: str | None = None
    verb: str | None = None
    group: str | None = None
    version: str | None = None
    resource: str | None = None
    subresource: str | None = None
    name: str | None = None


class NonResourceAttributes(WireModel):
    path: str | None = None
    verb: str | None = None


class SubjectAccessReviewSpec(WireModel):
    resource_attributes: ResourceAttributes | None = None
    non_resource_attributes: NonResourceAttributes | None = None
    user: str | None = None
    groups: list[str] | None = None
    uid: str | None = None
    extra: dict[str, list[str]] | None = None


class SelfSubjectAccessReviewSpec(WireModel):
    resource_attributes: ResourceAttributes | None = None
    non_resource_attributes: NonResourceAttributes | None = None


class SubjectAccessReviewStatus(WireModel):
    allowed: bool | None = None
    denied: bool | None = None
    reason: str | None = None
    evaluation_error: str | None = None


class SubjectAccessReview(Resource):
    spec: SubjectAccessReviewSpec | None = None
    status: SubjectAccessReviewStatus | None = None


class LocalSubjectAccessReview(Resource):
    spec: SubjectAccessReviewSpec | None = None
    status: SubjectAccessReviewStatus | None = None


class SelfSubjectAccessReview(Resource):
    spec: SelfSubjectAccessReviewSpec | None = None
    status: SubjectAccessReviewStatus | None = None


class SelfSubjectRulesReviewSpec(WireModel):
    namespace: str | None = None


class SelfSubjectRulesReview(Resource):
    spec: SelfSubjectRulesReviewSpec | None = None
    status: dict[str, Any] | None = None


class UserInfo(WireModel):
    username: str | None = None
    uid: str | None = None
    groups: list[str] | None = None
    extra: dict[str, list[str]] | None = None


class SelfSubjectReviewStatus(WireModel):
    user_info: UserInfo | None = None


class SelfSubjectReview(Resource):
    status: SelfSubjectReviewStatus | None = None


__all__ = [
    "ClusterRole", "ClusterRoleBinding", "LocalSubjectAccessReview", "PolicyRule", "Role", "RoleBinding",
    "SelfSubjectAccessReview", "SelfSubjectReview", "SelfSubjectRulesReview", "SubjectAccessReview",
]
