"""CSIDriver tokenRequests (SEMANTICS CS21), end to end: the control plane, a real node agent, runc pods and the CSI
driver written for the tests. NodePublishVolume gets the pod's service-account tokens for the audiences the
driver asks for, in its volume context or, with serviceAccountTokenInSecrets, in its secrets, as kubelet passes
them (what the Secrets Store CSI driver and cloud identity drivers read); with requiresRepublish (CS22) the agent
calls NodePublishVolume again every sync period."""
from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_cluster import Cluster, claim, cluster, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from csi_drivers import TEST_NAME, registered_test_driver  # noqa: E402

pytestmark = pytest.mark.root

TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"


@pytest.fixture
def driver(tmp_base: Path):
    with registered_test_driver(tmp_base) as (_drv, state):
        yield state


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _publishes(state: Path) -> list[dict[str, Any]]:
    text = (state / "calls.log").read_text() if (state / "calls.log").exists() else ""
    return [c for c in map(json.loads, text.split("\n")[:-1]) if c["method"] == "NodePublishVolume"]


@pytest.mark.parametrize("in_secrets", [False, True])
def test_cs21_node_publish_gets_the_pods_tokens_for_the_drivers_audiences(cluster: Cluster, driver: Path,
                                                                          in_secrets: bool) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    spec: dict[str, Any] = {"attachRequired": False, "tokenRequests": [
        {"audience": "vault.example.com", "expirationSeconds": 3600}, {"audience": ""}]}
    if in_secrets:
        spec["serviceAccountTokenInSecrets"] = True
    cluster.apply({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": TEST_NAME},
                   "spec": spec},
                  {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"},
                   "provisioner": TEST_NAME, "volumeBindingMode": "WaitForFirstConsumer"},
                  claim("data", "16Mi", "csi"), pod("app", claims={"data": "/data"}))
    running = cluster.wait_running("app", timeout=120)
    pvc = cluster.client.get("persistentvolumeclaims", "data", "default")
    handle = cluster.client.get("persistentvolumes", pvc["spec"]["volumeName"])["spec"]["csi"]["volumeHandle"]
    context = json.loads((driver / "published" / f"{handle}.json").read_text())
    publish = _publishes(driver)[-1]
    if in_secrets:
        assert TOKENS not in context
        assert TOKENS in publish["secret_keys"]
        return  # the driver never writes secrets down; the key's presence is what it can show
    assert TOKENS not in publish["secret_keys"]
    tokens = json.loads(context[TOKENS])
    assert sorted(tokens) == ["", "vault.example.com"]
    vault = tokens["vault.example.com"]
    assert vault["expirationTimestamp"].endswith("Z")
    claims = _claims(vault["token"])
    assert claims["aud"] == ["vault.example.com"]
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["kubernetes.io"]["pod"] == {"name": "app", "uid": running["metadata"]["uid"]}
    # No audience: the API server's own, as kubelet asks for it.
    assert _claims(tokens[""]["token"])["aud"] != ["vault.example.com"]
    # The tokens reach the driver only: NodeStageVolume did not get them.
    stages = [c for c in map(json.loads, (driver / "calls.log").read_text().split("\n")[:-1])
              if c["method"] == "NodeStageVolume"]
    assert stages and all(TOKENS not in c["request"].get("volume_context", "") for c in stages)


def test_cs22_requires_republish_calls_node_publish_again(cluster: Cluster, driver: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.agent import sa_tokens

    monkeypatch.setattr(sa_tokens, "REPUBLISH_SECONDS", 0.5)  # kubelet's sync period is a minute
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": TEST_NAME},
                   "spec": {"attachRequired": False, "requiresRepublish": True,
                            "tokenRequests": [{"audience": "vault.example.com"}]}},
                  {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"},
                   "provisioner": TEST_NAME, "volumeBindingMode": "WaitForFirstConsumer"},
                  claim("data", "16Mi", "csi"), pod("app", claims={"data": "/data"}))
    cluster.wait_running("app", timeout=120)
    first = len(_publishes(driver))
    wait_until(lambda: len(_publishes(driver)) >= first + 2, "NodePublishVolume called again", timeout=30)
    assert cluster.pod("app")["status"]["phase"] == "Running"
