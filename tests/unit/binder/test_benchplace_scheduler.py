"""The scheduler's pure ``place()`` with performance requirements (SEMANTICS BP8-BP14, BP19)."""
from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.api.bench_figures import label_node_annotations
from storage.controllers.scheduler import Snapshot, place

MiB = 1 << 20
_uids = itertools.count()


def node(name: str, figures: dict | None = None, *, ready: bool = True, cls: str = "fast") -> dict:
    annotations = label_node_annotations(cls, figures) if figures else {}
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}, "annotations": annotations},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "storagePools": [{"name": "default", "path": f"/pools/{name}", "totalBytes": 1024 * MiB}]}}


def pod(name: str, claims: list[str], node_name: str | None = None) -> dict:
    spec = {"containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": "default", "uid": f"u{next(_uids)}"}, "spec": spec,
            "status": {"phase": "Running" if node_name else "Pending"}}


def claim(name: str, cls: str = "fast", volume: str | None = None) -> dict:
    spec = {"accessModes": ["ReadWriteOnce"], "storageClassName": cls, "resources": {"requests": {"storage": "100Mi"}}}
    annotations = {}
    if volume:
        spec["volumeName"] = volume
        annotations["pv.kubernetes.io/bind-completed"] = "yes"  # bound, as the binder writes it (B6)
    return {"metadata": {"name": name, "namespace": "default", "annotations": annotations}, "spec": spec}


def storage_class(name: str, **params: str) -> dict:
    return {"metadata": {"name": name}, "provisioner": "stowage.io/local", "volumeBindingMode": "WaitForFirstConsumer",
            "parameters": params}


def snap(nodes: list[dict], claims: list[dict], classes: list[dict], pods: list[dict] = (), volumes: list[dict] = ()) -> Snapshot:
    return Snapshot(nodes=nodes, pods=list(pods), claims={("default", c["metadata"]["name"]): c for c in claims},
                    volumes={v["metadata"]["name"]: v for v in volumes},
                    classes={c["metadata"]["name"]: c for c in classes})


SLOW = {"randWriteIOPS": 800, "writeLatencyP99Us": 9000}
MEDIUM = {"randWriteIOPS": 12000, "writeLatencyP99Us": 3000}
FAST = {"randWriteIOPS": 90000, "writeLatencyP99Us": 400}


def test_bp9_required_places_on_the_only_node_that_meets_it() -> None:
    nodes = [node("slow", SLOW), node("medium", MEDIUM), node("fast", FAST)]
    cls = storage_class("fast", minRandomWriteIOPS="50000")
    result = place(pod("p", ["data"]), snap(nodes, [claim("data")], [cls]))
    assert result.node == "fast"
    assert result.select_claims == [("default", "data")]  # BP19: selected-node only for the node that fits


def test_bp10_no_node_fits_says_why_per_reason() -> None:
    nodes = [node("slow", SLOW), node("medium", MEDIUM), node("bare")]
    cls = storage_class("fast", minRandomWriteIOPS="50000", maxWriteLatencyP99="2ms")
    result = place(pod("p", ["data"]), snap(nodes, [claim("data")], [cls]))
    assert result.node is None and result.select_claims == []
    assert result.message == (
        "0/3 nodes are available: "
        "1 node(s) had no measured figures for storage class fast; run stowage bench --storage-class fast "
        "--label-nodes, "
        "2 node(s) had random write IOPS below minRandomWriteIOPS=50000 of storage class fast, "
        "2 node(s) had write latency p99 above maxWriteLatencyP99=2ms of storage class fast.")


def test_bp9_other_predicates_report_first() -> None:
    """BP9: a not-ready node is reported as not ready, not for its figures."""
    nodes = [node("down", FAST, ready=False), node("slow", SLOW)]
    result = place(pod("p", ["data"]), snap(nodes, [claim("data")], [storage_class("fast", minRandomWriteIOPS="50000")]))
    assert result.message == ("0/2 nodes are available: 1 node(s) had random write IOPS below "
                              "minRandomWriteIOPS=50000 of storage class fast, 1 node(s) were not ready.")


def test_bp12_preferred_never_filters_and_picks_the_best_measured_node() -> None:
    nodes = [node("slow", SLOW), node("bare"), node("medium", MEDIUM), node("fast", FAST)]
    cls = storage_class("fast", minRandomWriteIOPS="200000", maxWriteLatencyP99="1ms", benchPlacement="Preferred")
    assert place(pod("p", ["data"]), snap(nodes, [claim("data")], [cls])).node == "fast"  # meets 1 of 2, best figures
    # None measured: still placed (emptiest node first, then by name), never Pending for figures.
    bare = [node("b"), node("a")]
    busy = [pod("other", [], node_name="a")]
    assert place(pod("p", ["data"]), snap(bare, [claim("data")], [cls], busy)).node == "b"


def test_bp12_preferred_more_requirements_met_beats_a_bigger_figure() -> None:
    """BP12: meeting both requirements ranks above a node with many more IOPS that misses the latency."""
    nodes = [node("iops", {"randWriteIOPS": 500000, "writeLatencyP99Us": 5000}),
             node("both", {"randWriteIOPS": 11000, "writeLatencyP99Us": 900})]
    cls = storage_class("fast", minRandomWriteIOPS="10000", maxWriteLatencyP99="1ms", benchPlacement="Preferred")
    assert place(pod("p", ["data"]), snap(nodes, [claim("data")], [cls])).node == "both"


def test_bp8_bound_volumes_and_classes_without_requirements_are_not_judged() -> None:
    nodes = [node("slow", SLOW), node("fast", FAST)]
    plain = storage_class("fast")
    assert place(pod("p", ["data"]), snap(nodes, [claim("data")], [plain])).node == "fast"  # by name, as before
    strict = storage_class("fast", minRandomWriteIOPS="50000")
    pv = {"metadata": {"name": "pv-1"}, "spec": {"capacity": {"storage": "100Mi"}, "accessModes": ["ReadWriteOnce"],
          "storageClassName": "fast", "local": {"path": "/pools/slow/v"}, "claimRef": {"namespace": "default", "name": "data"},
          "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
              {"key": "kubernetes.io/hostname", "operator": "In", "values": ["slow"]}]}]}}}}
    bound = snap(nodes, [claim("data", volume="pv-1")], [strict], volumes=[pv])
    assert place(pod("p", ["data"]), bound).node == "slow"  # the volume lives there: no choice


def test_bp13_requirements_of_two_classes_apply_together() -> None:
    logs = {"fsyncLatencyP99Us": 100}
    nodes = [node("a", FAST), node("b", FAST)]
    nodes[1]["metadata"]["annotations"].update(label_node_annotations("logs", logs))
    classes = [storage_class("fast", minRandomWriteIOPS="50000"), storage_class("logs", maxFsyncLatencyP99="1ms")]
    claims = [claim("data"), claim("wal", cls="logs")]
    result = place(pod("p", ["data", "wal"]), snap(nodes, claims, classes))
    assert result.node == "b"
    assert sorted(result.select_claims) == [("default", "data"), ("default", "wal")]


def test_bp14_unreadable_parameters_keep_the_pod_waiting_with_the_reason() -> None:
    cls = storage_class("fast", minRandomWriteIOPS="lots")
    result = place(pod("p", ["data"]), snap([node("fast", FAST)], [claim("data")], [cls]))
    assert result.node is None
    assert result.waiting_reason == ("storage class fast has an invalid performance parameter: parameter "
                                     "minRandomWriteIOPS='lots': must be a non-negative number (e.g. 20000)")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 200000), min_size=1, max_size=6), st.integers(0, 200000))
def test_bp9_bp12_required_and_preferred_agree_with_the_figures(iops: list[int], minimum: int) -> None:
    """BP9: Required picks a node meeting the minimum exactly when one exists. BP12: Preferred picks a node with
    the most IOPS (figures beyond 100x or under 1/100 of the minimum rank alike)."""
    nodes = [node(f"n{i}", {"randWriteIOPS": v}) for i, v in enumerate(iops)]
    c = [claim("data")]
    required = place(pod("p", ["data"]), snap(nodes, c, [storage_class("fast", minRandomWriteIOPS=str(minimum))]))
    if any(v >= minimum for v in iops):
        assert required.node is not None and iops[int(required.node[1:])] >= minimum
    else:
        assert required.node is None and f"{len(iops)} node(s) had random write IOPS below" in required.message
    preferred = place(pod("p", ["data"]), snap(nodes, c, [storage_class(
        "fast", minRandomWriteIOPS=str(minimum), benchPlacement="Preferred")]))
    assert preferred.node is not None
    def clamp(v: int) -> float:
        return min(max(v, 0.01 * minimum), 100 * minimum)
    assert clamp(iops[int(preferred.node[1:])]) == clamp(max(iops))
