"""Identity kinds: ServiceAccount (core/v1), TokenRequest (authentication.k8s.io/v1, a subresource body)
and CertificateSigningRequest (certificates.k8s.io/v1)."""
from __future__ import annotations

from typing import Any

from storage.api.modelbase import WireModel
from storage.api.models.meta import Condition, LocalObjectReference, ObjectReference, Resource


class ServiceAccount(Resource):
    secrets: list[ObjectReference] | None = None
    image_pull_secrets: list[LocalObjectReference] | None = None
    automount_service_account_token: bool | None = None


class BoundObjectReference(WireModel):
    kind: str | None = None
    api_version: str | None = None
    name: str | None = None
    uid: str | None = None


class TokenRequestSpec(WireModel):
    audiences: list[str] | None = None
    expiration_seconds: int | None = None
    bound_object_ref: BoundObjectReference | None = None


class TokenRequest(Resource):
    spec: TokenRequestSpec | None = None
    status: dict[str, Any] | None = None


class CertificateSigningRequestSpec(WireModel):
    request: str | None = None
    signer_name: str | None = None
    expiration_seconds: int | None = None
    usages: list[str] | None = None
    username: str | None = None
    uid: str | None = None
    groups: list[str] | None = None
    extra: dict[str, list[str]] | None = None


class CertificateSigningRequestStatus(WireModel):
    conditions: list[Condition] | None = None
    certificate: str | None = None


class CertificateSigningRequest(Resource):
    spec: CertificateSigningRequestSpec | None = None
    status: CertificateSigningRequestStatus | None = None


__all__ = ["CertificateSigningRequest", "ServiceAccount", "TokenRequest"]
