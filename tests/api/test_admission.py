"""Admission over real HTTP: default class (P3), protection finalizers (B11), resize rules (P4)."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from apiobjects import pv, pvc, storage_class
from storage.apiserver.admission import pick_default_class
from storage.client import Client
from storage.errors import Forbidden, Invalid


def _class_of(client: Client, name: str) -> str | None:
    return client.get("persistentvolumeclaims", name, "default")["spec"].get("storageClassName")


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_p3_claim_without_class_gets_the_default(client: Client) -> None:
    client.create(storage_class("plain"))
    client.create(storage_class("gold", default=True))
    client.create(pvc("c"))
    assert _class_of(client, "c") == "gold"


def test_p3_beta_default_annotation_counts_and_other_values_do_not(client: Client) -> None:
    client.create(storage_class("yes-ish", default="True"))  # not exactly "true": not default
    client.create(pvc("before"))
    assert _class_of(client, "before") is None
    client.create(storage_class("beta", default=True, beta=True))
    client.create(pvc("after"))
    assert _class_of(client, "after") == "beta"


def test_p3_explicit_empty_class_opts_out(client: Client) -> None:
    client.create(storage_class("gold", default=True))
    client.create(pvc("empty", storageClassName=""))
    assert _class_of(client, "empty") == ""


def test_p3_beta_annotation_on_claim_prevents_defaulting(client: Client) -> None:
    client.create(storage_class("gold", default=True))
    claim = pvc("annotated")
    claim["metadata"]["annotations"] = {"volume.beta.kubernetes.io/storage-class": "silver"}
    client.create(claim)
    assert _class_of(client, "annotated") is None


def test_p3_explicit_class_is_kept(client: Client) -> None:
    client.create(storage_class("gold", default=True))
    client.create(pvc("mine", storageClassName="silver"))
    assert _class_of(client, "mine") == "silver"


def test_p3_defaulting_happens_on_create_only(client: Client) -> None:
    made = client.create(pvc("early"))
    client.create(storage_class("gold", default=True))
    client.update(dict(made, metadata=dict(made["metadata"], labels={"touched": "yes"})))
    assert _class_of(client, "early") is None


@pytest.mark.timeout(60)
def test_p3_newest_default_wins(client: Client) -> None:
    old = client.create(storage_class("a-old", default=True))
    old_ts = _parse(old["metadata"]["creationTimestamp"])
    # creationTimestamp has one-second resolution: wait (polling the clock) until a later second has begun.
    while dt.datetime.now(dt.timezone.utc).replace(microsecond=0) <= old_ts:
        threading.Event().wait(0.05)
    new = client.create(storage_class("z-new", default=True))
    assert _parse(new["metadata"]["creationTimestamp"]) > old_ts
    client.create(pvc("c"))
    assert _class_of(client, "c") == "z-new"


def test_p3_several_defaults_follow_the_rule_over_http(client: Client) -> None:
    made = [client.create(storage_class(n, default=True)) for n in ("m-two", "b-one")]
    newest = max(m["metadata"]["creationTimestamp"] for m in made)
    expected = min(m["metadata"]["name"] for m in made if m["metadata"]["creationTimestamp"] == newest)
    client.create(pvc("c"))
    assert _class_of(client, "c") == expected


def test_p3_ties_go_to_the_smallest_name() -> None:
    ts = "2024-01-01T00:00:00Z"
    classes = [
        {"metadata": {"name": n, "creationTimestamp": t, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}}
        for n, t in (("zeta", ts), ("alpha", ts), ("beta", ts), ("older", "2023-01-01T00:00:00Z"))
    ]
    classes.append({"metadata": {"name": "aaa", "creationTimestamp": "2025-01-01T00:00:00Z"}})  # newest but not default
    assert pick_default_class(classes) == "alpha"
    assert pick_default_class(classes[3:]) == "older"
    assert pick_default_class([]) is None


def test_b11_protection_finalizers_are_added(client: Client) -> None:
    assert client.create(pvc("c"))["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert client.create(pv("v"))["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    claim = pvc("own")
    claim["metadata"]["finalizers"] = ["example.com/mine"]
    assert client.create(claim)["metadata"]["finalizers"] == ["example.com/mine", "kubernetes.io/pvc-protection"]
    marked = client.delete("persistentvolumeclaims", "c", "default")
    assert marked["metadata"]["deletionTimestamp"], "a protected claim is only marked (Terminating)"


def _bind(client: Client, name: str) -> dict:
    claim = client.get("persistentvolumeclaims", name, "default")
    return client.update_status(dict(claim, status={"phase": "Bound", "capacity": {"storage": "1Gi"}}))


def _resize(client: Client, name: str, size: str) -> dict:
    return client.patch("persistentvolumeclaims", name, {"spec": {"resources": {"requests": {"storage": size}}}}, "default")


def test_p4_bound_claim_grows_when_class_allows_expansion(client: Client) -> None:
    client.create(storage_class("elastic", expand=True))
    client.create(pvc("c", storageClassName="elastic"))
    _bind(client, "c")
    assert _resize(client, "c", "2Gi")["spec"]["resources"]["requests"]["storage"] in ("2Gi", "2147483648")


@pytest.mark.parametrize("expand", [False, None])
def test_p4_growing_without_allow_volume_expansion_is_403_forbidden(client: Client, expand: bool | None) -> None:
    """P4: an admission refusal, so 403 Forbidden in the resize admission plugin's words (not 422)."""
    client.create(storage_class("rigid", expand=expand))
    client.create(pvc("c", storageClassName="rigid"))
    _bind(client, "c")
    with pytest.raises(Forbidden) as info:
        _resize(client, "c", "2Gi")
    assert info.value.code == 403
    assert str(info.value) == ('persistentvolumeclaims "c" is forbidden: only dynamically provisioned pvc can be resized '
                               "and the storageclass that provisions the pvc must support resize")
    assert client.get("persistentvolumeclaims", "c", "default")["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_p4_shrinking_is_rejected(client: Client) -> None:
    client.create(storage_class("elastic", expand=True))
    client.create(pvc("c", storageClassName="elastic", size="2Gi"))
    _bind(client, "c")
    with pytest.raises(Invalid) as info:
        _resize(client, "c", "1Gi")
    assert "spec.resources.requests.storage" in str(info.value)


def test_p4_pending_claim_spec_is_immutable(client: Client) -> None:
    client.create(storage_class("elastic", expand=True))
    client.create(pvc("c", storageClassName="elastic"))
    with pytest.raises(Invalid) as info:
        _resize(client, "c", "2Gi")
    assert "immutable" in str(info.value)


def _pod(name: str, tolerations: list[dict] | None = None) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "debian:12"}]}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def test_l7_default_toleration_seconds_on_create_only(client: Client) -> None:
    created = client.create(_pod("bare"))
    assert created["spec"]["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ]
    everything = client.create(_pod("all", [{"operator": "Exists"}]))
    assert everything["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_l7_toleration_seconds_need_the_noexecute_effect(client: Client) -> None:
    with pytest.raises(Invalid) as info:
        client.create(_pod("bad", [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]))
    assert "spec.tolerations[0].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when " \
           "`tolerationSeconds` is set" in str(info.value)
    with pytest.raises(Invalid) as info:
        client.create(_pod("bad", [{"operator": "Equal", "value": "v"}]))
    assert "operator must be Exists when `key` is empty" in str(info.value)
