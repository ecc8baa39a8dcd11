"""PS1: the pods controllers write to the store themselves are held to their namespace's Pod Security
``enforce`` level, as Kubernetes' are at its API server. Before, a user who could create any workload (the
``edit`` role) got a hostPath-of-``/``, host-network pod from it in a ``baseline`` namespace, where the same
pod sent directly was refused: a way onto the host."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from serverutil import running_server
from storage.controllers.base import ControllerOptions
from support import get_or_none, running_controllers, wait_for

HOST = {"hostNetwork": True, "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}],
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}
VIOLATION = ('violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), '
             'hostPath volumes (volume "root")')


def template(restart: str = "Always") -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": {**HOST, "restartPolicy": restart}}


def workloads() -> list[tuple[str, dict[str, Any]]]:
    selector = {"matchLabels": {"app": "x"}}
    return [
        ("/apis/apps/v1/namespaces/{ns}/replicasets", {"apiVersion": "apps/v1", "kind": "ReplicaSet",
         "metadata": {"name": "rs"}, "spec": {"replicas": 1, "selector": selector, "template": template()}}),
        ("/apis/apps/v1/namespaces/{ns}/deployments", {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "deploy"}, "spec": {"replicas": 1, "selector": selector, "template": template()}}),
        ("/apis/apps/v1/namespaces/{ns}/statefulsets", {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": {"name": "sts"}, "spec": {"replicas": 1, "serviceName": "sts", "selector": selector,
                                               "template": template()}}),
        ("/apis/apps/v1/namespaces/{ns}/daemonsets", {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "ds"}, "spec": {"selector": selector, "template": template()}}),
        ("/api/v1/namespaces/{ns}/replicationcontrollers", {"apiVersion": "v1", "kind": "ReplicationController",
         "metadata": {"name": "rc"}, "spec": {"replicas": 1, "selector": {"app": "x"}, "template": template()}}),
        ("/apis/batch/v1/namespaces/{ns}/jobs", {"apiVersion": "batch/v1", "kind": "Job",
         "metadata": {"name": "job"}, "spec": {"template": template("Never")}}),
    ]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Any, httpx.Client]]:
    with running_server(tmp_path) as server, running_controllers(server.store):
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60,
                          verify=server.verify()) as http:
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}}
            assert http.post("/api/v1/nodes", json=node).status_code == 201  # so the DaemonSet has somewhere to go
            yield server, http


def make_namespace(http: httpx.Client, name: str, level: str | None) -> None:
    labels = {"pod-security.kubernetes.io/enforce": level} if level else {}
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    assert http.post("/api/v1/namespaces", json=body).status_code == 201


def events(server: Any, namespace: str) -> list[str]:
    return [str(e.get("message")) for e in server.store.list("events", namespace)[0] if e.get("reason") == "FailedCreate"]


def pods(server: Any, namespace: str) -> list[dict[str, Any]]:
    return server.store.list("pods", namespace)[0]


def test_ps1_no_workload_controller_makes_a_pod_its_namespace_refuses(cluster: tuple[Any, httpx.Client]) -> None:
    server, http = cluster
    make_namespace(http, "team", None)  # the server's default level: baseline
    for path, body in workloads():
        made = http.post(path.format(ns="team"), json=body)
        assert made.status_code == 201, made.text
        assert "would violate PodSecurity" in made.headers.get("warning", "")  # warned, as Kubernetes warns
    # Each controller (the Deployment's through its ReplicaSet) reports the refusal instead of making the pod.
    def refused_by() -> set[str]:
        return {f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}"
                for e in server.store.list("events", "team")[0]
                if e.get("reason") == "FailedCreate" and VIOLATION in str(e.get("message"))}

    wait_for(lambda: len(refused_by()) >= len(workloads()) or None, "a refusal from every controller")
    refusals = [m for m in events(server, "team") if VIOLATION in m]
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
               "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template("Never")}}}}
    made = http.post("/apis/batch/v1/namespaces/team/cronjobs", json=cronjob)
    assert made.status_code == 201 and "would violate PodSecurity" in made.headers.get("warning", "")
    # The refused pod is named by its generated name, as Kubernetes' validating admission sees it.
    assert any(re.match(r'Error creating: pods "rs-[a-z0-9]{5}" is forbidden', m) for m in refusals), refusals
    assert any(m.startswith("create Pod sts-0 in StatefulSet sts failed error: pods \"sts-0\" is forbidden") for m in refusals), refusals
    assert pods(server, "team") == []


def test_ps1_a_privileged_namespace_still_gets_its_pods(cluster: tuple[Any, httpx.Client]) -> None:
    server, http = cluster
    make_namespace(http, "infra", "privileged")
    path, body = workloads()[0]
    assert http.post(path.format(ns="infra"), json=body).status_code == 201
    made = wait_for(lambda: pods(server, "infra") or None, "the ReplicaSet's pod")
    assert made[0]["spec"]["hostNetwork"] is True and not events(server, "infra")


def test_ps1_controllers_follow_the_servers_default_level(tmp_path: Path) -> None:
    """An administrator who sets the server's default to privileged gets the same from the controllers."""
    with running_server(tmp_path) as server, running_controllers(
            server.store, options=ControllerOptions(pod_security_default="privileged")):
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job", "namespace": "default"},
               "spec": {"template": template("Never")}}
        server.store.create("jobs", job)  # as the API server would have admitted it with that default
        assert wait_for(lambda: get_or_none(server.store, "jobs", "default", "job") and pods(server, "default") or None,
                        "the job's pod")


def test_ps2_controllers_pods_run_as_their_service_account_with_its_token(cluster: tuple[Any, httpx.Client]) -> None:
    """As any pod through the API server: ``serviceAccountName`` defaulted, the kube-api-access volume mounted,
    none when the template opts out."""
    server, http = cluster
    make_namespace(http, "apps", None)
    plain = {"containers": [{"name": "c", "image": "busybox"}]}
    for name, spec_ in (("with", plain), ("without", {**plain, "automountServiceAccountToken": False})):
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec_}}}
        assert http.post("/apis/apps/v1/namespaces/apps/replicasets", json=rs).status_code == 201
    def by_app() -> dict[str, dict[str, Any]] | None:
        found = {p["metadata"]["labels"]["app"]: p for p in pods(server, "apps")}
        return found if len(found) == 2 else None

    made = wait_for(by_app, "both ReplicaSets' pods")
    with_token, without = made["with"]["spec"], made["without"]["spec"]
    assert with_token["serviceAccountName"] == without["serviceAccountName"] == "default"
    [volume] = with_token["volumes"]
    assert volume["name"].startswith("kube-api-access-") and "projected" in volume
    assert with_token["containers"][0]["volumeMounts"] == [
        {"name": volume["name"], "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    assert "volumes" not in without and "volumeMounts" not in without["containers"][0]
