"""The official kubernetes Python client, configured only from the kubeconfig the server wrote."""
from __future__ import annotations

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from apiobjects import pv, pvc


@pytest.fixture
def core(api_server) -> k8s.CoreV1Api:
    api_client = k8s_config.new_client_from_config(config_file=str(api_server.kubeconfig))
    try:
        yield k8s.CoreV1Api(api_client)
    finally:
        api_client.close()


def test_load_kube_config_reaches_the_server(api_server) -> None:
    k8s_config.load_kube_config(config_file=str(api_server.kubeconfig))
    assert k8s.VersionApi().get_code().git_version.endswith("-stowage")


def test_volumes_and_claims_with_core_v1(core: k8s.CoreV1Api) -> None:
    made = core.create_persistent_volume(pv("vol-1", size="5Gi"))
    assert made.metadata.name == "vol-1" and made.spec.capacity["storage"] == "5Gi"
    assert core.read_persistent_volume("vol-1").metadata.uid == made.metadata.uid
    assert [v.metadata.name for v in core.list_persistent_volume().items] == ["vol-1"]

    claim = core.create_namespaced_persistent_volume_claim("default", pvc("data"))
    assert claim.metadata.namespace == "default"
    assert "kubernetes.io/pvc-protection" in claim.metadata.finalizers
    listed = core.list_namespaced_persistent_volume_claim("default", label_selector="")
    assert [c.metadata.name for c in listed.items] == ["data"]
    everywhere = core.list_persistent_volume_claim_for_all_namespaces()
    assert [c.metadata.name for c in everywhere.items] == ["data"]

    patched = core.patch_namespaced_persistent_volume_claim("data", "default", {"metadata": {"labels": {"app": "db"}}})
    assert patched.metadata.labels == {"app": "db"}

    with pytest.raises(k8s.ApiException) as info:
        core.read_namespaced_persistent_volume_claim("missing", "default")
    assert info.value.status == 404


@pytest.mark.timeout(60)
def test_watch_volumes_and_claims(core: k8s.CoreV1Api) -> None:
    core.create_persistent_volume(pv("vol-1"))
    rv = core.list_persistent_volume().metadata.resource_version
    core.create_persistent_volume(pv("vol-2"))
    w = k8s_watch.Watch()
    seen = []
    for event in w.stream(core.list_persistent_volume, resource_version=rv, timeout_seconds=30):
        seen.append((event["type"], event["object"].metadata.name))
        w.stop()
    assert seen == [("ADDED", "vol-2")]

    core.create_namespaced_persistent_volume_claim("default", pvc("data"))
    w = k8s_watch.Watch()
    claims = []
    for event in w.stream(core.list_namespaced_persistent_volume_claim, "default", timeout_seconds=30):
        claims.append((event["type"], event["object"].metadata.name, event["object"].spec.resources.requests["storage"]))
        w.stop()
    assert claims == [("ADDED", "data", "1Gi")]
