"""``networking.k8s.io/v1`` kinds: Ingress and IngressClass (SEMANTICS IN1–IN6), NetworkPolicy (NP1–NP3).

Stowage stores and validates them as Kubernetes' API server does; like Kubernetes itself it runs no
ingress controller, so an Ingress's ``status`` is whatever a controller writes there.
"""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.meta import Resource, TypedLocalObjectReference, alias
from storage.api.selectors import LabelSelector


class ServiceBackendPort(WireModel):
    name: str | None = None
    number: int | None = None


class IngressServiceBackend(WireModel):
    name: str | None = None
    port: ServiceBackendPort | None = None


class IngressBackend(WireModel):
    service: IngressServiceBackend | None = None
    resource: TypedLocalObjectReference | None = None


class HTTPIngressPath(WireModel):
    path: str | None = None
    path_type: str | None = None
    backend: IngressBackend | None = None


class HTTPIngressRuleValue(WireModel):
    paths: list[HTTPIngressPath] | None = None


class IngressRule(WireModel):
    host: str | None = None
    http: HTTPIngressRuleValue | None = None


class IngressTLS(WireModel):
    hosts: list[str] | None = None
    secret_name: str | None = None


class IngressSpec(WireModel):
    ingress_class_name: str | None = None
    default_backend: IngressBackend | None = None
    tls: list[IngressTLS] | None = None
    rules: list[IngressRule] | None = None


class IngressPortStatus(WireModel):
    port: int | None = None
    protocol: str | None = None
    error: str | None = None


class IngressLoadBalancerIngress(WireModel):
    ip: str | None = None
    hostname: str | None = None
    ports: list[IngressPortStatus] | None = None


class IngressLoadBalancerStatus(WireModel):
    ingress: list[IngressLoadBalancerIngress] | None = None


class IngressStatus(WireModel):
    load_balancer: IngressLoadBalancerStatus | None = None


class Ingress(Resource):
    spec: IngressSpec | None = None
    status: IngressStatus | None = None


class IngressClassParametersReference(WireModel):
    api_group: str | None = None
    kind: str | None = None
    name: str | None = None
    scope: str | None = None
    namespace: str | None = None


class IngressClassSpec(WireModel):
    controller: str | None = None
    parameters: IngressClassParametersReference | None = None


class IngressClass(Resource):
    spec: IngressClassSpec | None = None


__all__ = ["Ingress", "IngressClass"]


class IPBlock(WireModel):
    cidr: str | None = None
    except_: list[str] | None = alias("except")


class NetworkPolicyPeer(WireModel):
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


class NetworkPolicyPort(WireModel):
    protocol: str | None = None
    port: int | str | None = None
    end_port: int | None = None


class NetworkPolicyIngressRule(WireModel):
    ports: list[NetworkPolicyPort] | None = None
    from_: list[NetworkPolicyPeer] | None = alias("from")


class NetworkPolicyEgressRule(WireModel):
    ports: list[NetworkPolicyPort] | None = None
    to: list[NetworkPolicyPeer] | None = None


class NetworkPolicySpec(WireModel):
    pod_selector: LabelSelector | None = None
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None
    policy_types: list[str] | None = None


class NetworkPolicy(Resource):
    spec: NetworkPolicySpec | None = None
