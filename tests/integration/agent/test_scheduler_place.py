"""The scheduler's pure ``place()`` (SEMANTICS B8, A2): predicates, messages, pool accounting."""
from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.controllers.scheduler import SELECTED_NODE, Snapshot, place, pool_free_bytes

MiB = 1 << 20
_uids = itertools.count()


def node(name: str, *, ready: bool = True, zone: str = "z1", pool_bytes: int = 1024 * MiB, labels: dict | None = None) -> dict:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone,
                                                  **(labels or {})}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}],
                       "storagePools": [{"name": "default", "path": f"/pools/{name}", "totalBytes": pool_bytes,
                                         "freeBytes": pool_bytes}]}}


def pod(name: str, *, claims: list[str] = (), node_name: str | None = None, labels: dict | None = None, **spec) -> dict:
    body = {"containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims], **spec}
    if node_name:
        body["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": "default", "uid": f"u{next(_uids)}", "labels": labels or {}},
            "spec": body, "status": {"phase": "Running" if node_name else "Pending"}}


def claim(name: str, size: int = 100 * MiB, *, cls: str = "local", volume: str | None = None, modes=("ReadWriteOnce",),
          selected: str | None = None) -> dict:
    c = {"metadata": {"name": name, "namespace": "default", "annotations": {}},
         "spec": {"accessModes": list(modes), "storageClassName": cls, "resources": {"requests": {"storage": str(size)}}}}
    if volume:
        c["spec"]["volumeName"] = volume
        c["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = "yes"  # bound, as the binder writes it (B6)
    if selected:
        c["metadata"]["annotations"][SELECTED_NODE] = selected
    return c


def local_pv(name: str, node_name: str, size: int, claim_name: str | None = None) -> dict:
    spec = {"capacity": {"storage": str(size)}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local",
            "local": {"path": f"/pools/{node_name}/volumes/{name}.img"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}]}]}}}
    if claim_name:
        spec["claimRef"] = {"namespace": "default", "name": claim_name}
    return {"metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": "stowage.io/local"}},
            "spec": spec, "status": {"phase": "Bound" if claim_name else "Available"}}


CLASSES = {"local": {"metadata": {"name": "local"}, "provisioner": "stowage.io/local",
                     "volumeBindingMode": "WaitForFirstConsumer"},
           "fast": {"metadata": {"name": "fast"}, "provisioner": "stowage.io/local", "volumeBindingMode": "Immediate"}}


def snap(nodes, pods=(), claims=(), volumes=()) -> Snapshot:
    return Snapshot(nodes=list(nodes), pods=list(pods),
                    claims={("default", c["metadata"]["name"]): c for c in claims},
                    volumes={v["metadata"]["name"]: v for v in volumes}, classes=dict(CLASSES))


def test_node_selector_and_not_ready_nodes() -> None:
    nodes = [node("n1", labels={"disk": "ssd"}), node("n2"), node("n3", ready=False, labels={"disk": "ssd"})]
    result = place(pod("p", nodeSelector={"disk": "ssd"}), snap(nodes))
    assert result.node == "n1"
    result = place(pod("p", nodeSelector={"disk": "nvme"}), snap(nodes))
    assert result.node is None
    assert result.message == ("0/3 nodes are available: 1 node(s) were not ready, "
                              "2 node(s) didn't match Pod's node affinity/selector.")


def test_required_node_affinity() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z2"]}]}]}}}
    nodes = [node("n1"), node("n2", zone="z2"), node("n3")]
    assert place(pod("p", affinity=affinity), snap(nodes)).node == "n2"


def test_required_pod_anti_affinity_on_hostname_spreads() -> None:
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    nodes = [node("n1"), node("n2")]
    placed = [pod("db-0", node_name="n1", labels={"app": "db"}, affinity=anti)]
    assert place(pod("db-1", labels={"app": "db"}, affinity=anti), snap(nodes, placed)).node == "n2"
    placed.append(pod("db-1", node_name="n2", labels={"app": "db"}, affinity=anti))
    result = place(pod("db-2", labels={"app": "db"}, affinity=anti), snap(nodes, placed))
    assert result.node is None
    assert result.message == "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."


def test_an_existing_pods_required_anti_affinity_repels_a_pod_without_any() -> None:
    # Symmetry, as Kubernetes: the placed pod's term keeps matching pods off its node, although the new
    # pod asks for nothing; placed pods without terms (most of them) repel nobody.
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    nodes = [node("n1"), node("n2")]
    placed = [pod("cache-0", node_name="n1", affinity=anti), *(pod(f"web-{i}", node_name="n2", labels={"app": "web"})
                                                              for i in range(3))]
    assert place(pod("web-3", labels={"app": "web"}), snap(nodes, placed)).node == "n2"  # n1 has one pod, n2 three
    assert place(pod("other", labels={"app": "other"}), snap(nodes, placed)).node == "n1"
    placed.append(pod("cache-1", node_name="n2", affinity=anti))
    result = place(pod("web-4", labels={"app": "web"}), snap(nodes, placed))
    assert result.message == "0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules."


def test_b8_volume_node_affinity_conflict_message() -> None:
    """A pod whose bound local volume lives on a node its selector excludes stays Pending (B8)."""
    nodes = [node("n1", labels={"disk": "ssd"}), node("n2"), node("n3")]
    pv = local_pv("pv-a", "n2", 100 * MiB, "data")
    c = claim("data", volume="pv-a")
    assert place(pod("p", claims=["data"]), snap(nodes, claims=[c], volumes=[pv])).node == "n2"
    result = place(pod("p", claims=["data"], nodeSelector={"disk": "ssd"}), snap(nodes, claims=[c], volumes=[pv]))
    assert result.node is None
    assert result.message == ("0/3 nodes are available: 1 node(s) had volume node affinity conflict, "
                              "2 node(s) didn't match Pod's node affinity/selector.")


def test_read_write_once_pod_admits_one_pod_in_the_cluster() -> None:
    nodes = [node("n1"), node("n2")]
    c = claim("solo", modes=("ReadWriteOncePod",), volume="pv-s")
    pv = local_pv("pv-s", "n1", 100 * MiB, "solo")
    pv["spec"]["accessModes"] = ["ReadWriteOncePod"]
    first = pod("a", claims=["solo"], node_name="n1")
    result = place(pod("b", claims=["solo"]), snap(nodes, [first], [c], [pv]))
    assert result.node is None and "ReadWriteOncePod" in result.message
    first["status"]["phase"] = "Succeeded"  # a terminated pod no longer holds it
    assert place(pod("b", claims=["solo"]), snap(nodes, [first], [c], [pv])).node == "n1"


def test_b8_wait_for_first_consumer_selects_node_with_pool_space() -> None:
    nodes = [node("n1", pool_bytes=100 * MiB), node("n2", pool_bytes=1024 * MiB)]
    result = place(pod("p", claims=["big"]), snap(nodes, claims=[claim("big", 500 * MiB)]))
    assert result.node == "n2"
    assert result.select_claims == [("default", "big")]
    result = place(pod("p", claims=["huge"]), snap(nodes, claims=[claim("huge", 2048 * MiB)]))
    assert result.node is None
    assert result.message == "0/2 nodes are available: 2 node(s) did not have enough free storage."


def test_immediate_unbound_claim_waits() -> None:
    result = place(pod("p", claims=["im"]), snap([node("n1")], claims=[claim("im", cls="fast")]))
    assert result.node is None and result.waiting_reason == "pod has unbound immediate PersistentVolumeClaims"


def test_pool_free_bytes_counts_reserved_claims_and_volumes() -> None:
    n1 = node("n1", pool_bytes=1000 * MiB)
    volumes = [local_pv("pv-1", "n1", 300 * MiB, "c1")]
    claims = [claim("c1", 300 * MiB, volume="pv-1"), claim("c2", 200 * MiB, selected="n1"), claim("c3", 50 * MiB, selected="n2")]
    assert pool_free_bytes(n1, snap([n1], claims=claims, volumes=volumes)) == 500 * MiB


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=30),
       pools=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=4))
def test_b8_a_burst_of_claims_never_overcommits_a_pool(sizes: list[int], pools: list[int]) -> None:
    """Scheduling a burst one pod at a time (as the reconciler does, each writing its
    selected-node annotation before the next decision) never promises a pool more than it holds."""
    nodes = [node(f"n{i}", pool_bytes=p * MiB) for i, p in enumerate(pools)]
    claims = [claim(f"c{i}", s * MiB) for i, s in enumerate(sizes)]
    for i in range(len(sizes)):
        result = place(pod(f"p{i}", claims=[f"c{i}"]), snap(nodes, claims=claims))
        if result.node is not None:
            claims[i]["metadata"]["annotations"][SELECTED_NODE] = result.node
    for i, n in enumerate(nodes):
        promised = sum(s for s, c in zip(sizes, claims) if c["metadata"]["annotations"].get(SELECTED_NODE) == f"n{i}")
        assert promised <= pools[i]
