"""SP2: a pod may not share one process namespace among its containers and use the host's at once."""
from __future__ import annotations

import json

import httpx

PODS = "/api/v1/namespaces/default/pods"


def post(api_server, body: dict) -> httpx.Response:
    return httpx.post(api_server.url + PODS, content=json.dumps(body).encode(), timeout=30, verify=api_server.verify(),
                      headers={"Authorization": f"Bearer {api_server.token}", "Content-Type": "application/json"})


def pod(name: str, **spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "debian:12"}], **spec}}


def test_sp2_share_process_namespace_with_host_pid_is_invalid_and_nothing_is_stored(api_server) -> None:
    resp = post(api_server, pod("both", shareProcessNamespace=True, hostPID=True))
    assert resp.status_code == 422, resp.text
    status = resp.json()
    assert status["reason"] == "Invalid"
    assert status["message"] == ('Pod "both" is invalid: spec.securityContext.shareProcessNamespace: Invalid value: '
                                 'true: ShareProcessNamespace and HostPID cannot both be enabled')
    assert status["details"]["causes"][0]["field"] == "spec.securityContext.shareProcessNamespace"
    got = httpx.get(api_server.url + PODS + "/both", timeout=30, verify=api_server.verify(),
                    headers={"Authorization": f"Bearer {api_server.token}"})
    assert got.status_code == 404


def test_sp2_share_process_namespace_alone_is_accepted_and_kept(api_server) -> None:
    resp = post(api_server, pod("shared", shareProcessNamespace=True))
    assert resp.status_code == 201, resp.text
    assert resp.json()["spec"]["shareProcessNamespace"] is True
