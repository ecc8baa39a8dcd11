"""SC1-SC2: the scheduler's FailedScheduling and PodScheduled=False messages, worded as Kubernetes' scheduler
words them: node predicates counted per node, failures found before any node is tried said once, and what
Kubernetes' preemption appends."""
from __future__ import annotations

import itertools
from typing import Any

from storage.controllers.scheduler import NO_NODES, Snapshot, place

Obj = dict[str, Any]
_uids = itertools.count()

NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"


def node(name: str, *, labels: dict[str, str] | None = None, taints: list[Obj] | None = None,
         unschedulable: bool = False) -> Obj:
    spec: Obj = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}}, "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, *, claims: tuple[str, ...] = (), node_name: str = "", labels: dict[str, str] | None = None,
        **spec: Any) -> Obj:
    body: Obj = {"containers": [{"name": "c", "image": "x"}],
                 "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims], **spec}
    if node_name:
        body["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": "default", "uid": f"u{next(_uids)}", "labels": labels or {}},
            "spec": body, "status": {"phase": "Running" if node_name else "Pending"}}


def claim(name: str, *, cls: str = "late", volume: str = "", phase: str = "Pending", deleting: bool = False) -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "annotations": {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "storageClassName": cls, "resources": {"requests": {"storage": "1Gi"}}}
    if volume:
        spec["volumeName"] = volume
    if phase == "Bound":
        meta["annotations"]["pv.kubernetes.io/bind-completed"] = "yes"  # what the binder writes (B6)
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def static_pv(name: str, host: str, *, cls: str = "late", claim_name: str = "") -> Obj:
    spec: Obj = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                 "local": {"path": f"/mnt/{name}"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}}
    if claim_name:
        spec["claimRef"] = {"namespace": "default", "name": claim_name}
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": "Bound" if claim_name else "Available"}}


CLASSES = {
    "late": {"metadata": {"name": "late"}, "provisioner": "kubernetes.io/no-provisioner",
             "volumeBindingMode": "WaitForFirstConsumer"},
    "now": {"metadata": {"name": "now"}, "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"},
}


def snap(nodes: list[Obj], pods: list[Obj] = (), claims: list[Obj] = (), volumes: list[Obj] = ()) -> Snapshot:
    return Snapshot(nodes=list(nodes), pods=list(pods), claims={("default", c["metadata"]["name"]): c for c in claims},
                    volumes={v["metadata"]["name"]: v for v in volumes}, classes=dict(CLASSES))


def failure(p: Obj, s: Snapshot) -> str:
    result = place(p, s)
    assert result.node is None
    return result.failure


def test_sc2_node_predicates_are_counted_per_node_and_preemption_is_not_helpful() -> None:
    """The brief's example: a bound volume on n2 while the pod selects ssd nodes n1 and n3."""
    nodes = [node("n1", labels={"disk": "ssd"}), node("n2"), node("n3", labels={"disk": "ssd"})]
    bound = claim("data", volume="pv-a", phase="Bound")
    s = snap(nodes, claims=[bound], volumes=[static_pv("pv-a", "n2", claim_name="data")])
    assert failure(pod("p", claims=("data",), nodeSelector={"disk": "ssd"}), s) == (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 node(s) had volume node affinity conflict. "
        f"preemption: 0/3 nodes are available: 3 {NOT_HELPFUL}.")


def test_sc2_no_static_volume_for_a_late_claim() -> None:
    s = snap([node("n1"), node("n2")], claims=[claim("data")], volumes=[static_pv("pv-x", "n9")])
    assert failure(pod("p", claims=("data",)), s) == (
        "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind. "
        f"preemption: 0/2 nodes are available: 2 {NOT_HELPFUL}.")


def test_sc2_taints_and_cordons() -> None:
    nodes = [node("n1", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
             node("n2", unschedulable=True)]
    assert failure(pod("p"), snap(nodes)) == (
        "0/2 nodes are available: 1 node(s) had untolerated taint(s), 1 node(s) were unschedulable. "
        f"preemption: 0/2 nodes are available: 2 {NOT_HELPFUL}.")


def test_sc2_anti_affinity_could_be_fixed_by_an_eviction_so_no_victims_were_found() -> None:
    """Kubernetes reports (anti-)affinity with other pods as Unschedulable, not Unresolvable: its preemption
    looks for victims there and, among pods of equal priority, finds none."""
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    nodes = [node("n1"), node("n2"), node("n3", taints=[{"key": "k", "effect": "NoExecute"}])]
    placed = [pod("db-0", node_name="n1", labels={"app": "db"}), pod("db-1", node_name="n2", labels={"app": "db"})]
    assert failure(pod("db-2", labels={"app": "db"}, affinity=anti), snap(nodes, placed)) == (
        "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 node(s) didn't match pod anti-affinity rules. "
        f"preemption: 0/3 nodes are available: 1 {NOT_HELPFUL}, 2 {NO_VICTIMS}.")


def test_sc2_an_existing_pods_anti_affinity_has_its_own_reason() -> None:
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    placed = [pod("cache-0", node_name="n1", affinity=anti)]
    assert failure(pod("web-0", labels={"app": "web"}), snap([node("n1")], placed)) == (
        "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules. "
        f"preemption: 0/1 nodes are available: 1 {NO_VICTIMS}.")


def test_sc2_a_pod_that_may_not_preempt_says_so() -> None:
    assert failure(pod("p", nodeSelector={"x": "y"}, preemptionPolicy="Never"), snap([node("n1")])) == (
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
        "preemption: not eligible due to preemptionPolicy=Never.")


def test_sc1_claim_failures_are_said_once_not_per_node() -> None:
    """Kubernetes' VolumeBinding PreFilter: the reason once, then preemption over every node."""
    nodes = [node("n1"), node("n2"), node("n3")]
    tail = f" preemption: 0/3 nodes are available: 3 {NOT_HELPFUL}."
    assert failure(pod("p", claims=("gone",)), snap(nodes)) == (
        '0/3 nodes are available: persistentvolumeclaim "gone" not found.' + tail)
    assert failure(pod("p", claims=("im",)), snap(nodes, claims=[claim("im", cls="now")])) == (
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims." + tail)
    assert failure(pod("p", claims=("dying",)), snap(nodes, claims=[claim("dying", deleting=True)])) == (
        '0/3 nodes are available: persistentvolumeclaim "dying" is being deleted.' + tail)
    lost = claim("lost", volume="pv-gone", phase="Lost")
    assert failure(pod("p", claims=("lost",)), snap(nodes, claims=[lost])) == (
        '0/3 nodes are available: persistentvolumeclaim "lost" bound to non-existent persistentvolume "pv-gone".'
        + tail)


def test_sc1_an_ephemeral_claim_not_made_yet_is_waited_for() -> None:
    template = {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "late",
                                                 "resources": {"requests": {"storage": "1Gi"}}}}}
    p = pod("app", volumes=[{"name": "scratch", "ephemeral": template}])
    assert failure(p, snap([node("n1")])) == (
        '0/1 nodes are available: waiting for ephemeral volume controller to create the persistentvolumeclaim '
        f'"app-scratch". preemption: 0/1 nodes are available: 1 {NOT_HELPFUL}.')


def test_sc1_without_nodes_nothing_else_is_looked_at() -> None:
    assert failure(pod("p", claims=("gone",)), snap([])) == NO_NODES == "no nodes available to schedule pods"


def test_sc1_b12_a_claim_naming_its_volume_waits_for_the_binder_whatever_its_class() -> None:
    """Kubernetes counts a claim with ``spec.volumeName`` but no completed binding among the immediate ones:
    the pod is not placed while the binder refuses the claim (B12), even under WaitForFirstConsumer."""
    nodes = [node("n1"), node("n2")]
    named = claim("named", volume="pv-small")  # not bound: the volume refuses it, say
    s = snap(nodes, claims=[named], volumes=[static_pv("pv-small", "n1")])
    assert failure(pod("p", claims=("named",)), s) == (
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. "
        f"preemption: 0/2 nodes are available: 2 {NOT_HELPFUL}.")
    bound = claim("named", volume="pv-small", phase="Bound")
    s = snap(nodes, claims=[bound], volumes=[static_pv("pv-small", "n1", claim_name="named")])
    assert place(pod("p", claims=("named",)), s).node == "n1"


def test_sc2_a_bound_claims_missing_volume_is_counted_per_node() -> None:
    s = snap([node("n1")], claims=[claim("orphan", volume="pv-gone", phase="Bound")])
    assert failure(pod("p", claims=("orphan",)), s) == (
        "0/1 nodes are available: 1 node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s). "
        f"preemption: 0/1 nodes are available: 1 {NOT_HELPFUL}.")
