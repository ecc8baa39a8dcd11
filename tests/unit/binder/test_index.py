"""find_best_volume (index) against the Kubernetes scan port, and the B1–B5 rules on their own."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.controllers.binder_index import (
    VolumeIndex, find_best_volume, find_best_volume_linear, match_candidates, object_class, selector_matches,
)

RWO, ROX, RWX, RWOP = "ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"


def pv(name, size="1Gi", modes=(RWO,), cls="", phase="Available", labels=None, claim_ref=None, mode=None,
       deleting=False, ann_class=None, vac=None):
    v = {"metadata": {"name": name, "labels": labels or {}}, "spec": {"capacity": {"storage": size}, "accessModes": list(modes)},
         "status": {"phase": phase}}
    if cls is not None:
        v["spec"]["storageClassName"] = cls
    if ann_class is not None:
        v["metadata"]["annotations"] = {"volume.beta.kubernetes.io/storage-class": ann_class}
    if claim_ref:
        v["spec"]["claimRef"] = claim_ref
    if mode:
        v["spec"]["volumeMode"] = mode
    if deleting:
        v["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    if vac is not None:
        v["spec"]["volumeAttributesClassName"] = vac
    return v


def pvc(name="c", size="1Gi", modes=(RWO,), cls="", selector=None, mode=None, uid="u1", ns="default", ann_class=None,
        vac=None):
    c = {"metadata": {"name": name, "namespace": ns, "uid": uid},
         "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": size}}}}
    if cls is not None:
        c["spec"]["storageClassName"] = cls
    if ann_class is not None:
        c["metadata"]["annotations"] = {"volume.beta.kubernetes.io/storage-class": ann_class}
    if selector is not None:
        c["spec"]["selector"] = selector
    if mode:
        c["spec"]["volumeMode"] = mode
    if vac is not None:
        c["spec"]["volumeAttributesClassName"] = vac
    return c


def both(claim, volumes, delay=False):
    ordered = sorted(volumes, key=lambda v: v["metadata"]["name"])
    linear = find_best_volume_linear(claim, ordered, delay)
    indexed = find_best_volume(claim, VolumeIndex(volumes), delay_binding=delay)
    name = lambda v: v and v["metadata"]["name"]  # noqa: E731
    assert name(linear) == name(indexed)
    return name(indexed)


def test_b1_annotation_wins_over_field_even_when_empty():
    assert object_class(pv("a", cls="gold", ann_class="")) == ""
    assert object_class(pv("a", cls="gold", ann_class="silver")) == "silver"
    assert object_class(pv("a", cls=None)) == ""
    vols = [pv("gold", cls="gold"), pv("plain", cls="", size="2Gi")]
    assert both(pvc(cls="gold", ann_class=""), vols) == "plain"
    assert both(pvc(cls=None), vols) == "plain"


def test_b2_fewest_modes_set_first_even_if_bigger():
    vols = [pv("big-rwo", size="100Gi", modes=(RWO,)), pv("small-rwo-rwx", size="1Gi", modes=(RWO, RWX))]
    assert both(pvc(modes=(RWO,)), vols) == "big-rwo"
    assert both(pvc(modes=(RWX,)), vols) == "small-rwo-rwx"
    assert both(pvc(modes=(ROX,)), vols) is None


def test_b3_smallest_fit_wins_and_filters():
    vols = [pv("5", size="5Gi"), pv("2", size="2Gi"), pv("1", size="1Gi"), pv("3", size="3Gi")]
    assert both(pvc(size="1500Mi"), vols) == "2"
    assert both(pvc(size="1G"), vols) == "1"  # 1G < 1Gi
    assert both(pvc(size="6Gi"), vols) is None
    assert both(pvc(size="1Gi"), [pv("rel", phase="Released"), pv("fail", phase="Failed")]) is None
    assert both(pvc(), [pv("del", deleting=True)]) is None
    assert both(pvc(), [pv("blk", mode="Block")]) is None
    assert both(pvc(mode="Block"), [pv("blk", mode="Block"), pv("fs")]) == "blk"
    other = {"name": "x", "namespace": "default"}
    assert both(pvc(), [pv("elsewhere", claim_ref=other)]) is None


def test_b3_prebound_taken_at_once_ignoring_class_selector_phase():
    ref = {"name": "c", "namespace": "default"}
    vols = [pv("small", size="1Gi"), pv("pre", size="9Gi", cls="other", phase="Released", claim_ref=ref, labels={})]
    assert both(pvc(selector={"matchLabels": {"x": "y"}}), vols) == "pre"
    # a uid in the ref must match
    vols = [pv("small"), pv("pre", size="9Gi", claim_ref={**ref, "uid": "other"})]
    assert both(pvc(), vols) == "small"
    # still checked: capacity and deletion
    assert both(pvc(size="10Gi"), [pv("pre", size="9Gi", claim_ref=ref)]) is None
    assert both(pvc(), [pv("pre", claim_ref=ref, deleting=True)]) is None


def test_b3_wait_for_first_consumer_only_prebound():
    ref = {"name": "c", "namespace": "default"}
    assert both(pvc(), [pv("free")], delay=True) is None
    assert both(pvc(), [pv("free"), pv("pre", size="5Gi", claim_ref=ref)], delay=True) == "pre"


def test_b4_selector_semantics():
    labels = {"tier": "gold", "zone": "a"}
    assert selector_matches({"matchLabels": {"tier": "gold"}}, labels)
    assert not selector_matches({"matchLabels": {"tier": "gold", "x": "1"}}, labels)
    assert selector_matches({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "nope", "operator": "NotIn", "values": ["a"]}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "nope", "operator": "DoesNotExist"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, labels)
    assert not selector_matches({"matchLabels": {"tier": "gold"}, "matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, labels)
    vols = [pv("plain", size="1Gi"), pv("gold", size="2Gi", labels={"tier": "gold"})]
    assert both(pvc(selector={"matchLabels": {"tier": "gold"}}), vols) == "gold"


def test_vac2_volume_attributes_class_must_match_even_for_a_prebound_volume():
    """SEMANTICS VAC2: a claim binds only a volume of the same VolumeAttributesClass (missing and "" are none),
    and Kubernetes' FindMatchingVolume checks it before the pre-bound shortcut."""
    vols = [pv("plain", size="1Gi"), pv("fast", size="2Gi", vac="gold"), pv("slow", size="1Gi", vac="silver")]
    assert both(pvc(vac="gold"), vols) == "fast"
    assert both(pvc(vac=""), vols) == "plain"
    assert both(pvc(), vols) == "plain"
    assert both(pvc(vac="bronze"), vols) is None
    ref = {"name": "c", "namespace": "default"}
    assert both(pvc(vac="gold"), [pv("pre", claim_ref=ref, vac="silver")]) is None
    assert both(pvc(vac="gold"), [pv("pre", claim_ref=ref, vac="gold")]) == "pre"
    assert [v["metadata"]["name"] for v in match_candidates(pvc(vac="gold"), vols)] == ["fast"]


def test_index_follows_updates_and_removals():
    idx = VolumeIndex([pv("a", size="1Gi"), pv("b", size="2Gi")])
    claim = pvc()
    assert find_best_volume(claim, idx, delay_binding=False)["metadata"]["name"] == "a"
    idx.update(pv("a", size="1Gi", claim_ref={"name": "z", "namespace": "default", "uid": "z"}, phase="Bound"))
    assert find_best_volume(claim, idx, delay_binding=False)["metadata"]["name"] == "b"
    idx.remove("b")
    assert find_best_volume(claim, idx, delay_binding=False) is None
    assert len(idx) == 1


# ---------------------------------------------------------------- property test

MODE_SETS = [(RWO,), (ROX,), (RWX,), (RWO, ROX), (RWO, RWX), (RWO, ROX, RWX), (RWOP,), (RWO, RWOP)]
SIZES = ["512Mi", "1Gi", "1G", "2Gi", "5Gi", "10Gi", "1536Mi"]
CLASSES = ["", "gold", "silver"]
CLAIM_NAMES = ["c1", "c2", "c3"]
VACS = [None, None, None, "", "gold"]

label_values = st.sampled_from(["a", "b", "c"])
labels_st = st.dictionaries(st.sampled_from(["tier", "zone", "disk"]), label_values, max_size=3)
expr_st = st.one_of(
    st.builds(lambda k, vs, op: {"key": k, "operator": op, "values": vs},
              st.sampled_from(["tier", "zone", "disk"]), st.lists(label_values, min_size=1, max_size=2, unique=True),
              st.sampled_from(["In", "NotIn"])),
    st.builds(lambda k, op: {"key": k, "operator": op}, st.sampled_from(["tier", "zone", "disk"]),
              st.sampled_from(["Exists", "DoesNotExist"])),
)
selector_st = st.one_of(
    st.none(),
    st.builds(lambda ml, me: {"matchLabels": ml, "matchExpressions": me}, labels_st, st.lists(expr_st, max_size=2)),
)


@st.composite
def volume_st(draw, name):
    ref = draw(st.one_of(st.none(), st.builds(
        lambda n, ns, uid: {"name": n, "namespace": ns, **({"uid": uid} if uid else {})},
        st.sampled_from(CLAIM_NAMES), st.sampled_from(["default", "other"]), st.sampled_from(["", "u1", "u2"]))))
    return pv(name, size=draw(st.sampled_from(SIZES)), modes=draw(st.sampled_from(MODE_SETS)),
              cls=draw(st.sampled_from(CLASSES + [None])), ann_class=draw(st.sampled_from([None, None, "gold", ""])),
              phase=draw(st.sampled_from(["Available", "Available", "Bound", "Released", "Failed", "Pending"])),
              labels=draw(labels_st), claim_ref=ref, mode=draw(st.sampled_from([None, "Filesystem", "Block"])),
              deleting=draw(st.booleans()) and draw(st.booleans()), vac=draw(st.sampled_from(VACS)))


@st.composite
def scenario(draw):
    n = draw(st.integers(0, 25))
    volumes = [draw(volume_st(f"v{i:02d}")) for i in range(n)]
    claim = pvc(name=draw(st.sampled_from(CLAIM_NAMES)), size=draw(st.sampled_from(SIZES)),
                modes=draw(st.sampled_from(MODE_SETS)), cls=draw(st.sampled_from(CLASSES + [None])),
                ann_class=draw(st.sampled_from([None, None, "silver"])), selector=draw(selector_st),
                mode=draw(st.sampled_from([None, "Filesystem", "Block"])), uid=draw(st.sampled_from(["u1", "u2"])),
                vac=draw(st.sampled_from(VACS)))
    return claim, volumes, draw(st.booleans())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_property_index_agrees_with_kubernetes_scan(case):
    claim, volumes, delay = case
    both(claim, volumes, delay)


@settings(max_examples=200, deadline=None)
@given(scenario(), st.data())
def test_property_index_agrees_after_incremental_changes(case, data):
    claim, volumes, delay = case
    idx = VolumeIndex(volumes)
    current = {v["metadata"]["name"]: v for v in volumes}
    for _ in range(data.draw(st.integers(0, 10))):
        if current and data.draw(st.booleans()):
            name = data.draw(st.sampled_from(sorted(current)))
            idx.remove(name)
            del current[name]
        else:
            name = f"v{data.draw(st.integers(0, 30)):02d}"
            vol = data.draw(volume_st(name))
            idx.update(vol)
            current[name] = vol
    linear = find_best_volume_linear(claim, sorted(current.values(), key=lambda v: v["metadata"]["name"]), delay)
    indexed = find_best_volume(claim, idx, delay_binding=delay)
    assert (linear and linear["metadata"]["name"]) == (indexed and indexed["metadata"]["name"])


NODES = [{"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}} for n in ("n1", "n2")]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.lists(st.sampled_from([None, "n1", "n2"]), min_size=25, max_size=25))
def test_property_match_candidates_changes_no_answer_for_any_node(case, hosts):
    # The scheduler filters a claim's volumes once with match_candidates and then tries every node on the
    # short list (PF: one scan per node made placing 1,000 pods on 50 nodes quadratic): the answer must be
    # the scan's over every volume, for every node and without one.
    claim, volumes, delay = case
    for volume, host in zip(volumes, hosts):
        if host is not None:
            volume["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}
    short = match_candidates(claim, volumes)
    assert len(short) <= len(volumes)
    for node in [None, *NODES]:
        full = find_best_volume_linear(claim, volumes, delay, node)
        filtered = find_best_volume_linear(claim, short, delay, node)
        assert (full and full["metadata"]["name"]) == (filtered and filtered["metadata"]["name"]), node
