"""Performance-aware placement end to end: a real API server, the real scheduler in the controller manager, three
nodes carrying measured figures as `stowage bench --label-nodes` writes them, the real kubectl and the real
``stowage`` console script (SEMANTICS BP5, BP9-BP12, BP15).

The nodes are API objects (their agents play no part in where a pod goes); the pods are never started.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any, Iterator

import pytest
from cliutil import Cli
from support import kubectl_binary, running_controllers, wait_for

from storage.api.bench_figures import label_node_annotations
from storage.controllers.scheduler import SchedulerReconciler

FIGURES = {
    "slow": {"randWriteIOPS": 800, "randReadIOPS": 2000, "writeLatencyP99Us": 9000, "fioVersion": "fio-3.33"},
    "medium": {"randWriteIOPS": 12000, "randReadIOPS": 30000, "writeLatencyP99Us": 3000, "fioVersion": "fio-3.33"},
    "fast": {"randWriteIOPS": 90000, "randReadIOPS": 250000, "writeLatencyP99Us": 400, "fioVersion": "fio-3.33"},
}
CLASSES = {"nvme-required": {"minRandomWriteIOPS": "50000"},
           "nvme-preferred": {"minRandomWriteIOPS": "200000", "maxWriteLatencyP99": "1ms", "benchPlacement": "Preferred"},
           "nvme-impossible": {"minRandomWriteIOPS": "1000000", "maxWriteLatencyP99": "100us"}}


def _node(name: str) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    for cls in CLASSES:
        if cls != "nvme-impossible":  # no node was benchmarked on this class except one, later
            annotations.update(label_node_annotations(cls, FIGURES[name]))
    annotations.update(label_node_annotations("nvme-impossible", FIGURES[name]) if name != "slow" else {})
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}, "annotations": annotations},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       # Room for every claim here: the local provisioner's pool check passes on each node.
                       "storagePools": [{"name": "default", "path": f"/pools/{name}", "totalBytes": 1 << 30,
                                         "freeBytes": 1 << 30}]}}


def _class(name: str, params: dict[str, str], mode: str = "WaitForFirstConsumer") -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "stowage.io/local", "volumeBindingMode": mode, "parameters": params}


def _claim(name: str, cls: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"storageClassName": cls, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "64Mi"}}}}


def _pod(name: str, claim: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "db", "image": "debian:12", "command": ["sleep", "1d"],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}


@pytest.fixture
def placed(cli: Cli) -> Iterator[Cli]:
    """The cluster with nodes, classes, and the scheduler running."""
    client = cli.client()
    for name in FIGURES:
        node = client.create(_node(name))
        node["status"] = _node(name)["status"]
        client.update_status(node)
    for name, params in CLASSES.items():
        client.create(_class(name, params))
    with running_controllers(cli.server.store, [SchedulerReconciler]):
        yield cli


def _kubectl(cli: Cli, version: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cli.kubeconfig)}
    return subprocess.run([kubectl_binary(version), *args], input=stdin, capture_output=True, text=True,
                          timeout=120, env=env, cwd=cli.cwd, check=False)


def _node_of(cli: Cli, pod: str) -> str:
    client = cli.client()
    return wait_for(lambda: (client.get("pods", pod, "default").get("spec") or {}).get("nodeName"),
                    f"pod {pod} to be placed", 30)


def test_bp9_bp12_required_and_preferred_place_on_the_fast_node(placed: Cli) -> None:
    """BP9: Required puts the pod on the only node with enough IOPS, and only that node is selected for the claim.
    BP12: Preferred (no node meets 200000 IOPS) still places the pod, on the best-measured node."""
    client = placed.client()
    client.create(_claim("data-req", "nvme-required"))
    client.create(_pod("req", "data-req"))
    assert _node_of(placed, "req") == "fast"
    claim = client.get("persistentvolumeclaims", "data-req", "default")
    assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "fast"

    # The fast node now has a pod; Preferred still ranks figures before spreading.
    client.create(_claim("data-pref", "nvme-preferred"))
    client.create(_pod("pref", "data-pref"))
    assert _node_of(placed, "pref") == "fast"


def test_bp10_bp11_no_node_fits_reason_in_kubectl_and_stowage_describe(placed: Cli, kubectl_version: str) -> None:
    """BP10: nothing fits, so the pod is Pending with Kubernetes' summary, per reason, in both describe pages.
    BP11: once a node is measured fast enough, the pending pod is placed there without being touched."""
    client = placed.client()
    client.create(_claim("data-x", "nvme-impossible"))
    client.create(_pod("x", "data-x"))
    expected = ("0/3 nodes are available: "
                "1 node(s) had no measured figures for storage class nvme-impossible; run stowage bench "
                "--storage-class nvme-impossible --label-nodes, "
                "2 node(s) had random write IOPS below minRandomWriteIOPS=1000000 of storage class nvme-impossible, "
                "2 node(s) had write latency p99 above maxWriteLatencyP99=100us of storage class nvme-impossible. "
                "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")  # SC2

    def condition() -> dict[str, Any] | None:
        pod = client.get("pods", "x", "default")
        return next((c for c in (pod.get("status") or {}).get("conditions") or []
                     if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)
    cond = wait_for(condition, "PodScheduled=False on pod x", 30)
    assert cond["reason"] == "Unschedulable" and cond["message"] == expected

    described = _kubectl(placed, kubectl_version, "describe", "pod", "x")
    assert described.returncode == 0, described.stderr
    flat = " ".join(described.stdout.split())  # kubectl wraps long event messages in its table
    assert "FailedScheduling" in described.stdout
    assert " ".join(expected.split()) in flat, described.stdout
    assert re.search(r"^\s+PodScheduled\s+False\s*$", described.stdout, re.MULTILINE), described.stdout

    ours = placed.ok("describe", "pod", "x")
    assert "FailedScheduling" in ours and " ".join(expected.split()) in " ".join(ours.split()), ours

    # A new measurement (what `stowage bench --label-nodes` patches) on "medium" makes it fit.
    annotations = label_node_annotations("nvme-impossible", {"randWriteIOPS": 1_200_000, "writeLatencyP99Us": 60})
    (key, value), = annotations.items()
    out = _kubectl(placed, kubectl_version, "annotate", "--overwrite", "node", "medium", f"{key}={value}")
    assert out.returncode == 0, out.stderr
    assert _node_of(placed, "x") == "medium"


def test_bp5_bad_parameters_refused_naming_the_parameter(placed: Cli) -> None:
    """BP5: kubectl and stowage get a 422 naming parameters.<name> and the reason; nothing is stored."""
    bad = _class("bad-latency", {"maxWriteLatencyP99": "2"})
    out = _kubectl(placed, "1.37", "create", "-f", "-", stdin=json.dumps(bad))
    assert out.returncode != 0
    assert "parameters.maxWriteLatencyP99" in out.stderr and "must be a duration with a unit" in out.stderr, out.stderr

    typo = _class("typo", {"minRandomWriteIops": "5000"})
    result = placed.run("apply", "-f", "-", stdin=json.dumps(typo))
    assert result.code != 0
    assert "parameters.minRandomWriteIops" in result.err and "did you mean minRandomWriteIOPS" in result.err, result.err

    immediate = _class("immediate", {"minRandomWriteIOPS": "5000"}, mode="Immediate")
    out = _kubectl(placed, "1.37", "create", "-f", "-", stdin=json.dumps(immediate))
    assert out.returncode != 0 and "parameters.minRandomWriteIOPS" in out.stderr
    assert "WaitForFirstConsumer" in out.stderr, out.stderr

    names = {c["metadata"]["name"] for c in placed.client().list("storageclasses")[0]}
    assert not names & {"bad-latency", "typo", "immediate"}


def test_bp15_describe_node_shows_measured_storage(placed: Cli) -> None:
    out = placed.ok("describe", "node", "fast")
    section = out.split("Measured Storage:\n", 1)[1]
    block = section.split("  nvme-required:\n", 1)[1].split("\n  nvme-", 1)[0]
    assert re.search(r"^\s+Random write:\s+90000 IOPS$", block, re.MULTILINE), out
    assert re.search(r"^\s+Write latency p99:\s+400 us$", block, re.MULTILINE), out
    assert re.search(r"^\s+fio:\s+fio-3.33$", block, re.MULTILINE), out
    assert "Measured Storage:  <none>" not in out
