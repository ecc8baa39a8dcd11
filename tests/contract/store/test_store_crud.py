"""Store contract, reads and writes: every test runs on SQLite and on PostgreSQL (fixture ``store``)."""
from __future__ import annotations

import re
from typing import Any

import pytest

from storage.errors import AlreadyExists, BadRequest, Conflict, Invalid, NotFound
from storage.store.sql import SqlStore

PV = "persistentvolumes"
PVC = "persistentvolumeclaims"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def pv(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta, "spec": {"capacity": {"storage": "1Gi"}, **spec}}


def pvc(namespace: str, name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace, **meta}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}


def test_create_sets_store_owned_metadata_and_drops_client_values(store: SqlStore) -> None:
    obj = pv("pv1")
    obj["metadata"].update(uid="client-uid", resourceVersion="999", creationTimestamp="2000-01-01T00:00:00Z", deletionTimestamp="2000-01-01T00:00:00Z", generation=7)
    created = store.create(PV, obj)
    meta = created["metadata"]
    assert meta["uid"] != "client-uid" and len(meta["uid"]) == 36
    assert meta["resourceVersion"] == str(store.current_revision())
    assert RFC3339.match(meta["creationTimestamp"]) and meta["creationTimestamp"] != "2000-01-01T00:00:00Z"
    assert "deletionTimestamp" not in meta
    assert "generation" not in meta, "K4: a PersistentVolume has no generation, the client's is dropped"
    assert obj["metadata"]["uid"] == "client-uid", "the caller's dict must not be modified"
    assert store.get(PV, "", "pv1") == created


def test_every_write_takes_the_next_revision(store: SqlStore) -> None:
    start = store.current_revision()
    a = store.create(PV, pv("a"))
    b = store.create(PV, pv("b"))
    a["spec"]["x"] = 1
    a2 = store.update(PV, a)
    deleted = store.delete(PV, "", "b")
    versions = [int(o["metadata"]["resourceVersion"]) for o in (a, b, a2, deleted)]
    assert versions == [start + 1, start + 2, start + 3, start + 4]
    assert store.current_revision() == start + 4


def test_create_taken_name_is_already_exists_with_kubernetes_message(store: SqlStore) -> None:
    store.create(PV, pv("pv1"))
    with pytest.raises(AlreadyExists) as info:
        store.create(PV, pv("pv1"))
    assert info.value.message == 'persistentvolumes "pv1" already exists'
    assert info.value.code == 409
    store.create("storageclasses", {"metadata": {"name": "fast"}, "provisioner": "x"})
    with pytest.raises(AlreadyExists, match=r'^storageclasses.storage.k8s.io "fast" already exists$'):
        store.create("storageclasses", {"metadata": {"name": "fast"}, "provisioner": "x"})


def test_create_without_name_is_invalid_naming_the_field(store: SqlStore) -> None:
    with pytest.raises(Invalid, match="metadata.name"):
        store.create(PV, {"metadata": {}, "spec": {}})


def test_same_name_in_two_namespaces_and_namespace_scoped_list(store: SqlStore) -> None:
    store.create(PVC, pvc("a", "data"))
    store.create(PVC, pvc("b", "data"))
    store.create(PVC, pvc("b", "logs"))
    assert store.get(PVC, "a", "data")["metadata"]["namespace"] == "a"
    items, _ = store.list(PVC, "b")
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items] == [("b", "data"), ("b", "logs")]
    items, _ = store.list(PVC)
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items] == [("a", "data"), ("b", "data"), ("b", "logs")]
    assert store.list(PV)[0] == []


def test_generate_name_gets_a_random_suffix(store: SqlStore) -> None:
    names = {store.create(PVC, {"metadata": {"generateName": "data-", "namespace": "ns"}, "spec": {}})["metadata"]["name"] for _ in range(20)}
    assert len(names) == 20
    assert all(re.fullmatch(r"data-[a-z0-9]{5}", n) for n in names)
    for name in names:
        assert store.get(PVC, "ns", name)["metadata"]["generateName"] == "data-"


def test_get_update_delete_missing_are_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound, match=r'^persistentvolumes "nope" not found$'):
        store.get(PV, "", "nope")
    with pytest.raises(NotFound):
        store.update(PV, pv("nope"))
    with pytest.raises(NotFound):
        store.delete(PV, "", "nope")
    with pytest.raises(NotFound):
        store.get(PVC, "other", "nope")


def test_update_with_stale_resource_version_is_conflict(store: SqlStore) -> None:
    first = store.create(PV, pv("pv1"))
    second = dict(first, spec={"capacity": {"storage": "2Gi"}})
    store.update(PV, second)
    stale = dict(first, spec={"capacity": {"storage": "3Gi"}})
    with pytest.raises(Conflict) as info:
        store.update(PV, stale)
    assert info.value.message == (
        'Operation cannot be fulfilled on persistentvolumes "pv1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert store.get(PV, "", "pv1")["spec"]["capacity"]["storage"] == "2Gi"
    # Without the check (or without a resourceVersion) the last writer wins.
    forced = store.update(PV, stale, check_version=False)
    assert forced["spec"]["capacity"]["storage"] == "3Gi"
    unversioned = {k: v for k, v in forced.items()}
    unversioned["metadata"] = {k: v for k, v in forced["metadata"].items() if k != "resourceVersion"}
    unversioned["spec"] = {"capacity": {"storage": "4Gi"}}
    assert store.update(PV, unversioned)["spec"]["capacity"]["storage"] == "4Gi"


def test_update_preserves_uid_and_creation_timestamp(store: SqlStore) -> None:
    created = store.create(PV, pv("pv1"))
    tampered = dict(created, spec={"changed": True})
    tampered["metadata"] = dict(created["metadata"], uid="forged", creationTimestamp="1999-01-01T00:00:00Z", generation=50)
    updated = store.update(PV, tampered)
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    assert "generation" not in updated["metadata"], "K4: nor on update"
    assert store.get(PV, "", "pv1") == updated


def _statefulset(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 1, "serviceName": name}}


def test_generation_starts_at_one_for_kinds_that_have_one_K4(store: SqlStore) -> None:
    body = _statefulset("web")
    body["metadata"]["generation"] = 7
    assert store.create("statefulsets", body)["metadata"]["generation"] == 1
    assert "generation" not in store.create("persistentvolumeclaims", pvc("default", "data"))["metadata"]


def test_generation_grows_only_when_spec_changes(store: SqlStore) -> None:
    sts = "statefulsets"
    obj = store.create(sts, _statefulset("web"))
    obj["status"] = {"replicas": 1}
    obj = store.update(sts, obj)
    assert obj["metadata"]["generation"] == 1, "status changes keep the generation"
    obj["metadata"]["labels"] = {"tier": "gold"}
    obj["metadata"]["annotations"] = {"note": "x"}
    obj = store.update(sts, obj)
    assert obj["metadata"]["generation"] == 1, "metadata changes keep the generation"
    obj["spec"]["replicas"] = 2
    obj = store.update(sts, obj)
    assert obj["metadata"]["generation"] == 2
    obj["spec"]["serviceName"] = "other"
    assert store.update(sts, obj)["metadata"]["generation"] == 3


def test_noop_update_writes_nothing(store: SqlStore) -> None:
    obj = store.create(PV, pv("pv1"))
    revision = store.current_revision()
    again = store.update(PV, obj)
    assert again == obj
    assert store.current_revision() == revision


def test_delete_without_finalizers_removes_and_returns_last_state(store: SqlStore) -> None:
    created = store.create(PV, pv("pv1"))
    deleted = store.delete(PV, "", "pv1")
    assert deleted["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(deleted["metadata"]["resourceVersion"]) == store.current_revision()
    with pytest.raises(NotFound):
        store.get(PV, "", "pv1")
    # The name is free again and a new object gets a new uid.
    assert store.create(PV, pv("pv1"))["metadata"]["uid"] != created["metadata"]["uid"]


def test_delete_precondition_on_resource_version(store: SqlStore) -> None:
    created = store.create(PV, pv("pv1"))
    store.update(PV, dict(created, spec={"x": 1}))
    with pytest.raises(Conflict, match="does not match the ResourceVersion in record"):
        store.delete(PV, "", "pv1", resource_version=created["metadata"]["resourceVersion"])
    current = store.get(PV, "", "pv1")
    store.delete(PV, "", "pv1", resource_version=current["metadata"]["resourceVersion"])
    with pytest.raises(NotFound):
        store.get(PV, "", "pv1")


def test_finalizers_only_mark_for_deletion_until_emptied(store: SqlStore) -> None:
    """B11: a protected object is only marked (Terminating) and removed once its finalizers are gone."""
    store.create(PVC, pvc("ns", "data", finalizers=["kubernetes.io/pvc-protection"]))
    marked = store.delete(PVC, "ns", "data")
    stamp = marked["metadata"]["deletionTimestamp"]
    assert RFC3339.match(stamp)
    assert store.get(PVC, "ns", "data") == marked
    # Deleting again changes nothing: the first timestamp stays.
    revision = store.current_revision()
    again = store.delete(PVC, "ns", "data")
    assert again["metadata"]["deletionTimestamp"] == stamp
    assert store.current_revision() == revision
    # Other updates keep the object and the stored timestamp, whatever the client sends.
    marked["metadata"]["labels"] = {"x": "y"}
    marked["metadata"]["deletionTimestamp"] = "2000-01-01T00:00:00Z"
    relabelled = store.update(PVC, marked)
    assert relabelled["metadata"]["deletionTimestamp"] == stamp
    # Removing the last finalizer removes the object.
    relabelled["metadata"]["finalizers"] = []
    store.update(PVC, relabelled)
    with pytest.raises(NotFound):
        store.get(PVC, "ns", "data")


def test_update_cannot_set_deletion_timestamp(store: SqlStore) -> None:
    obj = store.create(PVC, pvc("ns", "data", finalizers=["f"]))
    obj["metadata"]["deletionTimestamp"] = "2000-01-01T00:00:00Z"
    obj["metadata"]["labels"] = {"a": "b"}
    updated = store.update(PVC, obj)
    assert "deletionTimestamp" not in updated["metadata"]
    updated["metadata"]["finalizers"] = []
    store.update(PVC, updated)
    assert "deletionTimestamp" not in store.get(PVC, "ns", "data")["metadata"]


def test_label_selector_filters_list(store: SqlStore) -> None:
    store.create(PV, pv("gold-1", {"tier": "gold", "zone": "a"}))
    store.create(PV, pv("gold-2", {"tier": "gold", "zone": "b"}))
    store.create(PV, pv("bronze", {"tier": "bronze"}))
    store.create(PV, pv("plain"))

    def names(selector: str) -> list[str]:
        return [o["metadata"]["name"] for o in store.list(PV, label_selector=selector)[0]]

    assert names("tier=gold") == ["gold-1", "gold-2"]
    assert names("tier=gold,zone!=a") == ["gold-2"]
    assert names("tier in (gold,bronze)") == ["bronze", "gold-1", "gold-2"]
    assert names("!tier") == ["plain"]
    assert names("zone") == ["gold-1", "gold-2"]
    with pytest.raises(BadRequest):
        store.list(PV, label_selector="tier in gold")


def test_field_selector_filters_list(store: SqlStore) -> None:
    store.create(PVC, pvc("a", "one"))
    store.create(PVC, pvc("b", "two"))
    bound = store.create(PVC, pvc("b", "three"))
    bound["status"] = {"phase": "Bound"}
    store.update(PVC, bound)

    def names(selector: str, namespace: str | None = None) -> list[str]:
        return [o["metadata"]["name"] for o in store.list(PVC, namespace, field_selector=selector)[0]]

    assert names("metadata.name=two") == ["two"]
    assert names("metadata.namespace=b") == ["three", "two"]
    assert names("status.phase=Bound") == ["three"]
    assert names("status.phase!=Bound", "b") == ["two"]
    assert names("metadata.name=one", "b") == []


def test_list_returns_the_revision_it_read_at(store: SqlStore) -> None:
    store.create(PV, pv("a"))
    store.create(PVC, pvc("ns", "c"))
    items, revision = store.list(PV)
    assert revision == store.current_revision()
    assert all(int(o["metadata"]["resourceVersion"]) <= revision for o in items)


def test_create_many_is_all_or_nothing(store: SqlStore) -> None:
    created = store.create_many(PV, [pv("a"), pv("b")])
    assert [int(o["metadata"]["resourceVersion"]) for o in created] == [1, 2]
    with pytest.raises(AlreadyExists, match='"b" already exists'):
        store.create_many(PV, [pv("c"), pv("b")])
    with pytest.raises(NotFound):
        store.get(PV, "", "c")
    assert store.current_revision() == 2


def test_data_survives_reopening(store_url: str) -> None:
    first = SqlStore(store_url)
    try:
        created = first.create(PV, pv("kept"))
    finally:
        first.close()
    second = SqlStore(store_url)
    try:
        assert second.get(PV, "", "kept") == created
        assert second.current_revision() == int(created["metadata"]["resourceVersion"])
    finally:
        second.close()


def test_conflict_detected_between_two_store_instances(store_url: str) -> None:
    """Each store remembers what it wrote; a write through another instance must still be seen."""
    first, second = SqlStore(store_url), SqlStore(store_url)
    try:
        mine = first.create(PVC, pvc("ns", "c", finalizers=["f"]))
        theirs = second.get(PVC, "ns", "c")
        theirs["spec"]["volumeName"] = "pv-theirs"
        theirs = second.update(PVC, theirs)
        mine["spec"]["volumeName"] = "pv-mine"
        with pytest.raises(Conflict):
            first.update(PVC, mine)
        assert first.get(PVC, "ns", "c")["spec"]["volumeName"] == "pv-theirs"
        # From the fresh version, first wins; emptying the finalizers of a marked object removes it.
        fresh = first.get(PVC, "ns", "c")
        fresh["metadata"]["labels"] = {"a": "b"}
        fresh = first.update(PVC, fresh)
        marked = first.delete(PVC, "ns", "c")
        marked["metadata"]["finalizers"] = []
        first.update(PVC, marked)
        with pytest.raises(NotFound):
            second.get(PVC, "ns", "c")
        with pytest.raises(NotFound):
            first.update(PVC, fresh)
    finally:
        first.close()
        second.close()
