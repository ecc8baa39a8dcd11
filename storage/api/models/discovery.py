"""``discovery.k8s.io/v1`` EndpointSlice (SEMANTICS EPS1–EPS5): the pods behind a Service, as Kubernetes'
EndpointSlice controller writes them for Services with a selector. Like Endpoints, a slice keeps its fields
at the top level (no ``spec``)."""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.meta import ObjectReference, Resource


class EndpointConditions(WireModel):
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class ForZone(WireModel):
    name: str | None = None


class ForNode(WireModel):
    name: str | None = None


class EndpointHints(WireModel):
    for_zones: list[ForZone] | None = None
    for_nodes: list[ForNode] | None = None


class Endpoint(WireModel):
    addresses: list[str] | None = None
    conditions: EndpointConditions | None = None
    hostname: str | None = None
    target_ref: ObjectReference | None = None
    deprecated_topology: dict[str, str] | None = None
    node_name: str | None = None
    zone: str | None = None
    hints: EndpointHints | None = None


class EndpointPort(WireModel):
    name: str | None = None
    protocol: str | None = None
    port: int | None = None
    app_protocol: str | None = None


class EndpointSlice(Resource):
    address_type: str | None = None
    endpoints: list[Endpoint] | None = None
    ports: list[EndpointPort] | None = None
