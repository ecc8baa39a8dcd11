"""CSIDriver and CSINode through the API server: validation, immutability, and what a node may touch (CS12)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from serverutil import running_server  # noqa: E402
from storage.apiserver.auth import User  # noqa: E402
from storage.apiserver.authz_index import AuthzIndex  # noqa: E402
from storage.apiserver.node_authz import NodeAuthorizer  # noqa: E402
from storage.apiserver.rbac import Attributes  # noqa: E402
from storage.errors import Invalid  # noqa: E402

DRIVER = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": "x.csi.example.com"},
          "spec": {"attachRequired": False, "podInfoOnMount": True, "fsGroupPolicy": "File",
                   "volumeLifecycleModes": ["Persistent", "Ephemeral"]}}


def test_csidriver_validation_and_immutability(tmp_path: Path) -> None:
    """CS12: fsGroupPolicy and volumeLifecycleModes values are checked; attachRequired cannot change;
    podInfoOnMount can."""
    with running_server(tmp_path) as server, server.client() as client:
        created = client.create(DRIVER)
        assert created["spec"]["fsGroupPolicy"] == "File"
        with pytest.raises(Invalid, match="fsGroupPolicy"):
            client.create({**DRIVER, "metadata": {"name": "y.csi.example.com"}, "spec": {"fsGroupPolicy": "Sometimes"}})
        with pytest.raises(Invalid, match="volumeLifecycleModes"):
            client.create({**DRIVER, "metadata": {"name": "z.csi.example.com"},
                           "spec": {"volumeLifecycleModes": ["Forever"]}})
        changed = client.get("csidrivers", "x.csi.example.com")
        changed["spec"]["attachRequired"] = True
        with pytest.raises(Invalid, match="attachRequired"):
            client.update(changed)
        changed = client.get("csidrivers", "x.csi.example.com")
        changed["spec"]["podInfoOnMount"] = False
        assert client.update(changed)["spec"]["podInfoOnMount"] is False


def test_csinode_validation(tmp_path: Path) -> None:
    """CS11: drivers need a name and a nodeID, once each; the count is not negative."""
    with running_server(tmp_path) as server, server.client() as client:
        node = {"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": {"name": "n1"},
                "spec": {"drivers": [{"name": "a", "nodeID": "id-1", "topologyKeys": ["zone"],
                                      "allocatable": {"count": 3}}]}}
        assert client.create(node)["spec"]["drivers"][0]["nodeID"] == "id-1"
        bad = {**node, "metadata": {"name": "n2"},
               "spec": {"drivers": [{"name": "a", "nodeID": "x"}, {"name": "a"}]}}
        with pytest.raises(Invalid) as info:
            client.create(bad)
        assert "Duplicate" in str(info.value) and "nodeID" in str(info.value)


def test_a_node_touches_only_its_own_csinode(tmp_path: Path) -> None:
    """CS12: Kubernetes' NodeRules for CSI and NodeRestriction: CSIDriver readable, CSINode of its own name only."""
    with running_server(tmp_path) as server:
        authz = NodeAuthorizer(AuthzIndex(server.store))
        _check_node_rules(authz)


def _check_node_rules(authz: NodeAuthorizer) -> None:
    user = User("system:node:n1", groups=("system:nodes",))

    def may(verb: str, resource: str, name: str = "") -> bool:
        return authz.authorize(Attributes(user, verb, api_group="storage.k8s.io", api_version="v1",
                                          resource=resource, name=name)).allowed

    assert may("get", "csidrivers", "x") and may("list", "csidrivers")
    assert may("update", "csinodes", "n1") and may("get", "csinodes", "n1") and may("create", "csinodes")
    assert not may("update", "csinodes", "n2") and not may("delete", "csinodes", "n2")
    assert not may("create", "csidrivers")
