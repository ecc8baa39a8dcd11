"""``kubectl drain``, ``cordon`` and ``uncordon`` (the real kubectl) against two real node agents running real
runc pods: evictions within a PodDisruptionBudget, StatefulSet pods coming back on the other node, and a
budget that stops the drain (rules E9, E12-E14)."""
from __future__ import annotations

import os
import subprocess
from typing import Any

from agent_cluster import Cluster, condition, wait_until
from support import kubectl_binary

Obj = dict[str, Any]
SCRIPT = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"
REFUSED = ('(will retry after 5s): Cannot evict pod as it would violate the pod\'s disruption budget.')


def kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["KUBECONFIG"] = str(cluster.server.kubeconfig)
    return subprocess.run([kubectl_binary(), *args], capture_output=True, text=True, timeout=300, env=env)


def template(app: str) -> Obj:
    return {"metadata": {"labels": {"app": app}}, "spec": {
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", SCRIPT],
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
        "volumes": [{"name": "scratch", "emptyDir": {}}]}}


def web_pods(cluster: Cluster) -> dict[str, Obj]:
    """The StatefulSet's pods that are Running and Ready, by name."""
    items, _ = cluster.client.list("pods", "default", label_selector="app=web")
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") == "Running" and condition(p, "Ready") == "True"}


def budget_status(cluster: Cluster, **wanted: Any) -> Obj:
    def check() -> Obj | None:
        status = cluster.client.get("poddisruptionbudgets", "web", "default").get("status") or {}
        return status if all(status.get(k) == v for k, v in wanted.items()) else None
    return wait_until(check, f"the budget's status {wanted}", timeout=60)


def test_E9_E12_E13_E14_kubectl_drain_evicts_within_the_budget_and_a_tight_budget_stops_it(cluster: Cluster) -> None:
    cluster.start_controllers()
    for name in ("n1", "n2"):
        cluster.add_agent(name)
    for name in ("n1", "n2"):
        wait_until(lambda n=name: condition(cluster.client.get("nodes", n), "Ready") == "True", f"{name} Ready")
    cluster.apply(
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "logger", "namespace": "default"},
         "spec": {"selector": {"matchLabels": {"app": "logger"}}, "template": template("logger")}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"replicas": 2, "serviceName": "web", "podManagementPolicy": "Parallel",
                  "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}},
    )
    wait_until(lambda: len(web_pods(cluster)) == 2, "web-0 and web-1 Running and Ready", timeout=120)
    budget_status(cluster, currentHealthy=2, desiredHealthy=1, disruptionsAllowed=1)
    before = web_pods(cluster)
    drained = before["web-0"]["spec"]["nodeName"]
    other = "n2" if drained == "n1" else "n1"
    leaving = sorted(n for n, p in before.items() if p["spec"]["nodeName"] == drained)

    # Drain web-0's node: its StatefulSet pods are evicted (one at a time if both are there: the budget
    # keeps one Ready) and come back on the other node; the DaemonSet's pod stays.
    done = kubectl(cluster, "drain", drained, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=180s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"node/{drained} cordoned" in done.stdout
    # kubectl before 1.21 ends with "node/NAME evicted" where later ones say "drained".
    assert f"node/{drained} drained" in done.stdout or f"node/{drained} evicted" in done.stdout
    for name in leaving:
        assert f"evicting pod default/{name}" in done.stdout and f"pod/{name} evicted" in done.stdout
    assert "ignoring DaemonSet-managed Pods: default/logger-" in done.stderr
    node = cluster.client.get("nodes", drained)
    assert node["spec"].get("unschedulable") is True
    wait_until(lambda: ("node.kubernetes.io/unschedulable", "NoSchedule") in
               [(t["key"], t["effect"]) for t in cluster.client.get("nodes", drained)["spec"].get("taints") or []],
               "the unschedulable taint")
    wait_until(lambda: len(web_pods(cluster)) == 2, "the StatefulSet back to two Ready pods", timeout=120)
    after = web_pods(cluster)
    assert {p["spec"]["nodeName"] for p in after.values()} == {other}
    for name in leaving:
        assert after[name]["metadata"]["uid"] != before[name]["metadata"]["uid"]  # a new pod, same identity
    loggers, _ = cluster.client.list("pods", "default", label_selector="app=logger")
    assert sorted(p["spec"]["nodeName"] for p in loggers if not p["metadata"].get("deletionTimestamp")) == ["n1", "n2"]

    out = kubectl(cluster, "uncordon", drained)
    assert out.returncode == 0 and out.stdout.strip() == f"node/{drained} uncordoned", out.stderr
    wait_until(lambda: not cluster.client.get("nodes", drained)["spec"].get("taints"), "the taint removed")

    # A budget that allows no disruption: kubectl drain retries each eviction every 5 s until its timeout.
    out = kubectl(cluster, "patch", "pdb", "web", "--type=merge", "-p", '{"spec":{"minAvailable":2}}')
    assert out.returncode == 0, out.stderr
    budget_status(cluster, observedGeneration=2, desiredHealthy=2, disruptionsAllowed=0)
    stuck = kubectl(cluster, "drain", other, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=12s")
    assert stuck.returncode != 0
    for name in ("web-0", "web-1"):
        assert f'error when evicting pods/"{name}" -n "default" {REFUSED}' in stuck.stderr
        assert f'error when evicting pods/"{name}" -n "default": global timeout reached: 12s' in stuck.stderr
    assert web_pods(cluster).keys() == {"web-0", "web-1"}
    assert {p["metadata"]["uid"] for p in web_pods(cluster).values()} == {p["metadata"]["uid"] for p in after.values()}
    out = kubectl(cluster, "uncordon", other)
    assert out.returncode == 0, out.stderr
    assert not cluster.client.get("nodes", other)["spec"].get("unschedulable")
