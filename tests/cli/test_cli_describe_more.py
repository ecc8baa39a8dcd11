"""``stowage describe`` pages for StatefulSets, claims, pods and nodes, through the real console script.

Objects and their statuses are written through the API as the controllers and
the agent would write them; the assertions read the key lines a user reads.
"""
from __future__ import annotations

import re
from typing import Any

import pytest

from cliutil import Cli

GiB = 1024 ** 3

STS = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, labels: {tier: db}}
spec:
  replicas: 2
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: "debian:12"
        command: [sleep, 1d]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data, labels: {app: web}}
    spec:
      storageClassName: fast
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"""


def _line(text: str, key: str) -> str:
    """The value on the ``Key:  value`` line, failing clearly when the page has no such line."""
    for line in text.splitlines():
        match = re.match(rf"^\s*{re.escape(key)}:\s*(.*)$", line)
        if match:
            return match.group(1).rstrip()
    raise AssertionError(f"no {key!r} line in:\n{text}")


def _running(name: str, ready: bool, waiting: str | None = None) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {"startedAt": "2024-05-01T10:00:00Z"}}
    return {
        "phase": "Pending" if waiting else "Running",
        "hostIP": "10.0.0.5",
        "podIP": f"127.1.0.{2 if name.endswith('1') else 1}",
        "startTime": "2024-05-01T10:00:00Z",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False",
             "lastTransitionTime": "2024-05-01T10:00:00Z"},
        ],
        "containerStatuses": [{"name": "main", "ready": ready, "restartCount": 0 if ready else 2, "image": "debian:12",
                               "imageID": "", "state": state}],
    }


def _member(cli: Cli, sts: dict[str, Any], ordinal: int, status: dict[str, Any]) -> None:
    client = cli.client()
    name = f"web-{ordinal}"
    client.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                          "uid": sts["metadata"]["uid"], "controller": True}]},
        "spec": {"nodeName": "n1", "containers": [{
            "name": "main", "image": "debian:12", "command": ["sleep", "1d"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"data-web-{ordinal}"}}]},
    })
    pod = client.get("pods", name, "default")
    pod["status"] = status
    client.update_status(pod)


@pytest.fixture
def cluster(cli: Cli) -> Cli:
    """A node, a two-member set whose second member is stuck creating, and a Pending claim it uses."""
    client = cli.client()
    client.create({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "stowage agent is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "n1"}],
            "capacity": {"cpu": "2", "pods": "110"},
            "allocatable": {"cpu": "2", "pods": "110"},
            "storagePools": [{"name": "default", "path": "/var/lib/pool", "totalBytes": 20 * GiB,
                              "freeBytes": 15 * GiB}],
            "volumesInUse": ["pvc-1234"],
        },
    })
    cli.ok("apply", "-f", "-", stdin=STS)
    sts = client.get("statefulsets", "web", "default")
    _member(cli, sts, 0, _running("web-0", True))
    _member(cli, sts, 1, _running("web-1", False, waiting="ContainerCreating"))
    cli.ok("apply", "-f", "-", stdin="""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-web-1}
spec:
  storageClassName: fast
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
""")
    client.create({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "involvedObject": {"kind": "StatefulSet", "name": "web", "namespace": "default",
                           "uid": sts["metadata"]["uid"], "apiVersion": "apps/v1"},
        "reason": "SuccessfulCreate", "message": "create Pod web-1 in StatefulSet web successful",
        "type": "Normal", "source": {"component": "statefulset-controller"},
        "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": "2024-05-01T10:00:00Z", "count": 1,
    })
    return cli


def test_describe_sts_summarises_the_set(cluster: Cli) -> None:
    out = cluster.ok("describe", "sts", "web")
    assert _line(out, "Name") == "web"
    assert _line(out, "Namespace") == "default"
    assert _line(out, "Selector") == "app=web"
    assert _line(out, "Labels") == "tier=db"
    assert _line(out, "Replicas") == "2 desired | 0 total"
    assert _line(out, "Update Strategy") == "RollingUpdate"
    assert _line(out, "Partition") == "0"
    assert _line(out, "Pods Status") == "1 Running / 1 Waiting / 0 Succeeded / 0 Failed"
    template = out.split("Pod Template:\n", 1)[1].split("Volume Claims:", 1)[0]
    assert _line(template, "Image") == "debian:12"
    assert _line(template, "Mounts") == "/data from data (rw)"
    claims = out.split("Volume Claims:\n", 1)[1].split("Events:", 1)[0]
    assert _line(claims, "Name") == "data"
    assert _line(claims, "StorageClass") == "fast"
    assert _line(claims, "Labels") == "app=web"
    assert _line(claims, "Capacity") == "1Gi"
    assert _line(claims, "Access Modes") == "[ReadWriteOnce]"
    assert "SuccessfulCreate" in out.split("Events:", 1)[1]
    assert "create Pod web-1 in StatefulSet web successful" in out


def test_describe_sts_names_the_member_blocking_the_rollout(cluster: Cli) -> None:
    """S7: describe says which member holds an OrderedReady set back, and why."""
    out = cluster.ok("describe", "sts", "web")
    assert _line(out, "Rollout Blocked") == (
        "Waiting for pod web-1 to be Running and Ready: container main is waiting: ContainerCreating")
    # Fixed member: nothing blocks any more, and the page says nothing about a blocker.
    client = cluster.client()
    pod = client.get("pods", "web-1", "default")
    pod["status"] = _running("web-1", True)
    client.update_status(pod)
    healed = cluster.ok("describe", "sts", "web")
    assert "Rollout Blocked" not in healed
    assert _line(healed, "Pods Status") == "2 Running / 0 Waiting / 0 Succeeded / 0 Failed"


def test_describe_pvc_shows_users_and_why_it_is_pending(cluster: Cli) -> None:
    out = cluster.ok("describe", "pvc", "data-web-1")
    assert _line(out, "Status") == "Pending"
    assert _line(out, "StorageClass") == "fast"
    assert _line(out, "Used By") == "web-1"
    # The binder's explanation (B7/P2): the class "fast" does not exist.
    assert _line(out, "Pending Reason") == 'no volume of storage class "fast", and that StorageClass does not exist'


def test_describe_pod_shows_node_containers_conditions_and_volumes(cluster: Cli) -> None:
    out = cluster.ok("describe", "pod", "web-1")
    assert _line(out, "Node") == "n1/10.0.0.5"
    assert _line(out, "IP") == "127.1.0.2"
    assert _line(out, "Status") == "ContainerCreating"
    assert _line(out, "Controlled By") == "StatefulSet/web"
    containers = out.split("Containers:\n", 1)[1].split("Conditions:", 1)[0]
    assert _line(containers, "State") == "Waiting"
    assert _line(containers, "Reason") == "ContainerCreating"
    assert _line(containers, "Ready") == "False"
    assert _line(containers, "Restart Count") == "2"
    assert _line(containers, "Mounts") == "/data from data (rw)"
    conditions = out.split("Conditions:\n", 1)[1].split("Volumes:", 1)[0]
    assert re.search(r"^\s+Ready\s+False\s*$", conditions, re.M), conditions
    volumes = out.split("Volumes:\n", 1)[1].split("Events:", 1)[0]
    assert _line(volumes, "ClaimName") == "data-web-1"
    assert _line(volumes, "Type").startswith("PersistentVolumeClaim")


def test_describe_node_shows_pools_volumes_and_pods(cluster: Cli) -> None:
    out = cluster.ok("describe", "node", "n1")
    assert _line(out, "Status") == "Ready"
    assert _line(out, "InternalIP") == "10.0.0.5"
    assert re.search(r"^\s+Ready\s+True\s+\S*\s*KubeletReady\s+stowage agent is posting ready status$", out, re.M), out
    capacity = out.split("Capacity:\n", 1)[1].split("Allocatable:", 1)[0]
    assert _line(capacity, "pods") == "110"
    pools = out.split("Storage Pools:\n", 1)[1].split("Volumes In Use:", 1)[0]
    assert re.search(r"^\s+default\s+20Gi\s+15Gi\s+/var/lib/pool$", pools, re.M), pools
    assert _line(out, "Volumes In Use") == "pvc-1234"
    assert "Non-terminated Pods:  (2 in total)" in out
    pods = out.split("Non-terminated Pods:", 1)[1]
    assert re.search(r"^\s+default\s+web-0\s+Running\s", pods, re.M), pods
    assert re.search(r"^\s+default\s+web-1\s+ContainerCreating\s", pods, re.M), pods
