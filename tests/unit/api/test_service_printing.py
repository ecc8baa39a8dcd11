"""`kubectl get svc`'s EXTERNAL-IP and PORT(S) as kube-apiserver's printer computes them (SEMANTICS K7)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from storage.api.printing import _svc

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)


def _row(spec: dict[str, Any], status: dict[str, Any] | None = None) -> list[str]:
    obj = {"metadata": {"name": "s", "creationTimestamp": "2026-12-07T11:00:00Z"}, "spec": spec,
           "status": status or {}}
    return _svc(obj, NOW)[1:5]


def test_k7_external_ip_and_node_ports() -> None:
    ports = [{"port": 80, "nodePort": 31234, "protocol": "TCP"}]
    assert _row({"type": "LoadBalancer", "ports": ports}) == ["LoadBalancer", "<none>", "<pending>", "80:31234/TCP"]
    ingress = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}
    assert _row({"type": "LoadBalancer", "ports": ports}, ingress)[2] == "203.0.113.10"
    many = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"hostname": "lb.example.com"}]}}
    assert _row({"type": "LoadBalancer", "ports": ports}, many)[2] == "203.0.113.10,..."
    assert _row({"type": "LoadBalancer", "ports": ports, "externalIPs": ["198.51.100.1"]})[2] == "198.51.100.1"
    assert _row({"type": "NodePort", "ports": ports}) == ["NodePort", "<none>", "<none>", "80:31234/TCP"]
    assert _row({"type": "ExternalName", "externalName": "db.example.com"})[2] == "db.example.com"
    assert _row({"ports": [{"port": 80, "protocol": "TCP"}]}) == ["ClusterIP", "<none>", "<none>", "80/TCP"]
