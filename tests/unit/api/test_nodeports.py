"""Service node ports (SEMANTICS K7): what an update keeps or drops, and what a Service is given."""
from __future__ import annotations

from typing import Any

import pytest

from storage.api import nodeports
from storage.errors import Invalid, StowageError


def _svc(stype: str, *ports: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "s", "namespace": "default"},
            "spec": {"type": stype, "ports": [dict(p) for p in ports], **spec}}


def test_k7_an_update_without_node_ports_keeps_them_by_port_name() -> None:
    old = _svc("NodePort", {"name": "a", "port": 80, "nodePort": 30001}, {"name": "b", "port": 81, "nodePort": 30002})
    new = _svc("NodePort", {"name": "b", "port": 81}, {"name": "a", "port": 80}, {"name": "c", "port": 82})
    nodeports.prepare_update(new, old)
    assert [p.get("nodePort") for p in new["spec"]["ports"]] == [30002, 30001, None]
    # A port now used by another port is not handed back to the one that had it.
    new = _svc("NodePort", {"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30001})
    nodeports.prepare_update(new, old)
    assert [p.get("nodePort") for p in new["spec"]["ports"]] == [None, 30001]


def test_k7_leaving_nodeport_drops_what_the_write_left_unchanged() -> None:
    old = _svc("LoadBalancer", {"port": 80, "nodePort": 30001}, externalTrafficPolicy="Local",
               healthCheckNodePort=30002, allocateLoadBalancerNodePorts=True)
    new = _svc("ClusterIP", {"port": 80, "nodePort": 30001}, externalTrafficPolicy="Local",
               healthCheckNodePort=30002, allocateLoadBalancerNodePorts=True)
    nodeports.prepare_update(new, old)
    assert new["spec"] == {"type": "ClusterIP", "ports": [{"port": 80}]}
    # A node port the write asks for anew is left for validation to refuse.
    new = _svc("ClusterIP", {"port": 80, "nodePort": 30009})
    nodeports.prepare_update(new, old)
    assert new["spec"]["ports"] == [{"port": 80, "nodePort": 30009}]


def test_k7_assign_fills_checks_and_shares_by_port_number() -> None:
    svc = _svc("NodePort", {"name": "t", "port": 53}, {"name": "u", "port": 53, "protocol": "UDP"},
               {"name": "h", "port": 80, "nodePort": 30080})
    new = nodeports.assign(svc, None, {30081})
    first, second, third = (p["nodePort"] for p in svc["spec"]["ports"])
    assert first == second and third == 30080 and new == {first, 30080} and first != 30081
    with pytest.raises(Invalid) as refused:
        nodeports.assign(_svc("NodePort", {"port": 80, "nodePort": 80}), None, set())
    assert str(refused.value) == ('Service "s" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided '
                                  "port is not in the valid range. The range of valid ports is 30000-32767")
    with pytest.raises(Invalid, match="provided port is already allocated"):
        nodeports.assign(_svc("NodePort", {"port": 80, "nodePort": 30081}), None, {30081})
    # Held ports stay the Service's own on update, whoever else is listed.
    old = _svc("NodePort", {"port": 80, "nodePort": 30081})
    assert nodeports.assign(_svc("NodePort", {"port": 80, "nodePort": 30081}), old, {30081}) == set()
    # A LoadBalancer that allocates none still gets what it asks for; Local gets a health check port.
    lb = _svc("LoadBalancer", {"port": 80}, {"port": 81, "nodePort": 30090}, allocateLoadBalancerNodePorts=False,
              externalTrafficPolicy="Local")
    new = nodeports.assign(lb, None, set())
    health = lb["spec"]["healthCheckNodePort"]
    assert "nodePort" not in lb["spec"]["ports"][0] and new == {30090, health} and health != 30090
    # Drawn above the static band (30000-30085) while it has room, as Kubernetes 1.29+.
    assert all(nodeports.assign(_svc("NodePort", {"port": 80}), None, set()).pop() >= 30086 for _ in range(50))
    upper = set(range(30086, nodeports.LAST + 1))
    assert nodeports.assign(_svc("NodePort", {"port": 80}), None, upper).pop() < 30086
    full = set(range(nodeports.FIRST, nodeports.LAST + 1))
    with pytest.raises(StowageError, match="failed to allocate a nodePort: range is full"):
        nodeports.assign(_svc("NodePort", {"port": 80}), None, full)
