"""S1: member names, ordinals, labels, DNS, and the pod and claims built from the templates."""
from __future__ import annotations

from statefulset import identity as i
from sts_world import make_set


def test_s1_pod_and_claim_names_follow_ordinals_and_start():
    sts = make_set(start=5, replicas=2)
    assert list(i.ordinal_range(sts)) == [5, 6]
    assert i.pod_name(sts, 5) == "web-5"
    assert i.claim_name("www", sts, 6) == "www-web-6"


def test_s1_parse_ordinal():
    assert i.parse_ordinal("web-12") == ("web", 12)
    assert i.parse_ordinal("my-db-0") == ("my-db", 0)
    assert i.parse_ordinal("web") is None
    assert i.parse_ordinal("web-x") is None
    sts = make_set()
    assert i.is_member_name(sts, "web-3")
    assert not i.is_member_name(sts, "webx-3")
    assert not i.is_member_name(sts, "other-web-3")


def test_s1_dns_name():
    assert i.member_dns_name(make_set(), 1) == "web-1.nginx.default.svc.cluster.local"


def test_s1_pod_identity_labels_hostname_owner_and_claim_volumes():
    sts = make_set()
    pod = i.new_pod(sts, sts["spec"]["template"], 2, "web-abc")
    m = pod["metadata"]
    assert m["name"] == "web-2" and m["namespace"] == "default"
    # Stored by the controller itself: the status the API server gives every new pod.
    assert pod["status"] == {"phase": "Pending"}
    assert m["labels"] == {
        "app": "web",
        "statefulset.kubernetes.io/pod-name": "web-2",
        "apps.kubernetes.io/pod-index": "2",
        "controller-revision-hash": "web-abc",
    }
    assert pod["spec"]["hostname"] == "web-2" and pod["spec"]["subdomain"] == "nginx"
    assert m["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "uid-web",
                                     "controller": True, "blockOwnerDeletion": True}]
    assert pod["spec"]["volumes"] == [
        {"name": "scratch", "emptyDir": {}},
        {"name": "www", "persistentVolumeClaim": {"claimName": "www-web-2"}},
    ]
    assert i.identity_matches(sts, pod) and i.storage_matches(sts, pod)


def test_s1_template_volume_with_claim_name_is_replaced_not_duplicated():
    sts = make_set()
    sts["spec"]["template"]["spec"]["volumes"].append({"name": "www", "emptyDir": {}})
    pod = i.new_pod(sts, sts["spec"]["template"], 0, "r")
    www = [v for v in pod["spec"]["volumes"] if v["name"] == "www"]
    assert www == [{"name": "www", "persistentVolumeClaim": {"claimName": "www-web-0"}}]


def test_s1_claims_carry_selector_labels_and_no_owner_under_retain():
    sts = make_set(templates=("www", "logs"))
    claims = i.new_claims(sts, 1)
    assert [c["metadata"]["name"] for c in claims] == ["www-web-1", "logs-web-1"]
    assert all(c["metadata"]["labels"] == {"app": "web"} for c in claims)
    assert all("ownerReferences" not in c["metadata"] for c in claims)
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_s10_member_claims_carry_pvc_protection_from_creation():
    """S10: the controller writes claims to the store, past the admission that gives every claim the
    finalizer, so it puts the finalizer on them itself (as the ephemeral-volume controller does)."""
    for claim in i.new_claims(make_set(templates=("www", "logs")), 0):
        assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]


def test_s5_when_deleted_delete_makes_the_set_a_non_controller_owner_of_claims():
    sts = make_set(retention={"whenDeleted": "Delete", "whenScaled": "Retain"})
    (claim,) = i.new_claims(sts, 0)
    refs = claim["metadata"]["ownerReferences"]
    assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [("StatefulSet", "uid-web", False)]


def test_s5_when_scaled_delete_owns_claim_by_pod_only_when_condemned():
    sts = make_set(replicas=2, retention={"whenDeleted": "Retain", "whenScaled": "Delete"})
    pod = {"metadata": {"name": "web-3", "uid": "pod-uid"}}
    assert i.desired_claim_owners(sts, 1, {"metadata": {"name": "web-1", "uid": "u1"}}) == []
    owners = i.desired_claim_owners(sts, 3, pod)
    assert [(r["kind"], r["name"], r["uid"]) for r in owners] == [("Pod", "web-3", "pod-uid")]


def test_s1_broken_identity_detected():
    sts = make_set()
    pod = i.new_pod(sts, sts["spec"]["template"], 0, "r")
    del pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"]
    assert not i.identity_matches(sts, pod)
    pod2 = i.new_pod(sts, sts["spec"]["template"], 0, "r")
    pod2["spec"]["volumes"] = []
    assert not i.storage_matches(sts, pod2)
