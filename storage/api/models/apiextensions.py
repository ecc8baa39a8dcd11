"""apiextensions.k8s.io/v1 CustomResourceDefinition: the shape kube-apiserver reads. Stowage accepts only the
definitions of kinds it serves built in (the snapshot API, ReferenceGrant): SEMANTICS CRD1-CRD4."""
from __future__ import annotations

from typing import Any

from storage.api.modelbase import WireModel
from storage.api.models.meta import Resource, alias


class CustomResourceDefinitionNames(WireModel):
    plural: str | None = None
    singular: str | None = None
    kind: str | None = None
    list_kind: str | None = None
    short_names: list[str] | None = None
    categories: list[str] | None = None


class CustomResourceValidation(WireModel):
    # A JSON schema: any nesting, keys such as "x-kubernetes-preserve-unknown-fields" kept as sent.
    open_apiv3_schema: dict[str, Any] | None = alias("openAPIV3Schema")


class CustomResourceDefinitionVersion(WireModel):
    name: str | None = None
    served: bool | None = None
    storage: bool | None = None
    deprecated: bool | None = None
    deprecation_warning: str | None = None
    schema_: CustomResourceValidation | None = alias("schema")
    subresources: dict[str, Any] | None = None
    additional_printer_columns: list[dict[str, Any]] | None = None
    selectable_fields: list[dict[str, Any]] | None = None


class CustomResourceDefinitionSpec(WireModel):
    group: str | None = None
    names: CustomResourceDefinitionNames | None = None
    scope: str | None = None
    versions: list[CustomResourceDefinitionVersion] | None = None
    conversion: dict[str, Any] | None = None
    preserve_unknown_fields: bool | None = None


class CustomResourceDefinitionStatus(WireModel):
    conditions: list[dict[str, Any]] | None = None
    accepted_names: CustomResourceDefinitionNames | None = None
    stored_versions: list[str] | None = None


class CustomResourceDefinition(Resource):
    spec: CustomResourceDefinitionSpec | None = None
    status: CustomResourceDefinitionStatus | None = None
