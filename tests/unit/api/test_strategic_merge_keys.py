"""Strategic merge patches as kubectl builds them from the OpenAPI patch metadata: merge keys, sets, directives."""
from __future__ import annotations

from storage.api.models import MODELS
from storage.apiserver.patch import apply_patch, strategic_merge_patch

STRATEGIC = "application/strategic-merge-patch+json"


def sts(ports: list[dict], mounts: list[dict] | None = None) -> dict:
    container = {"name": "main", "image": "nginx:1", "ports": ports,
                 "volumeMounts": mounts or [{"name": "data", "mountPath": "/data"}]}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "finalizers": ["a/b"]},
            "spec": {"template": {"spec": {"containers": [container, {"name": "side", "image": "busybox"}]}}}}


def test_ports_merge_by_container_port_as_kubectl_apply_sends_them() -> None:
    target = sts([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}])
    # What kubectl apply sent when 443 became 8443 and the image changed (captured from kubectl 1.32).
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "main"}, {"name": "side"}],
        "containers": [{"$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 8443}],
                        "image": "nginx:2", "name": "main",
                        "ports": [{"containerPort": 8443}, {"$patch": "delete", "containerPort": 443}]}]}}}}
    out = apply_patch(STRATEGIC, target, patch)
    main, side = out["spec"]["template"]["spec"]["containers"]
    assert main["image"] == "nginx:2" and side == {"name": "side", "image": "busybox"}
    assert main["ports"] == [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 8443}]
    assert main["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert target["spec"]["template"]["spec"]["containers"][0]["ports"][1]["containerPort"] == 443  # untouched


def test_mounts_merge_by_mount_path_and_order_follows_set_element_order() -> None:
    target = sts([], [{"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b"}])
    patch = {"spec": {"template": {"spec": {"containers": [{
        "name": "main", "$setElementOrder/volumeMounts": [{"mountPath": "/b"}, {"mountPath": "/a"}],
        "volumeMounts": [{"mountPath": "/a", "readOnly": True}]}]}}}}
    mounts = apply_patch(STRATEGIC, target, patch)["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert mounts == [{"name": "b", "mountPath": "/b"}, {"name": "a", "mountPath": "/a", "readOnly": True}]


def test_finalizers_are_a_set_and_delete_from_primitive_list() -> None:
    target = sts([])
    out = apply_patch(STRATEGIC, target, {"metadata": {"finalizers": ["c/d", "a/b"]}})
    assert out["metadata"]["finalizers"] == ["a/b", "c/d"]
    out = apply_patch(STRATEGIC, out, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/b"]}})
    assert out["metadata"]["finalizers"] == ["c/d"]


def test_lists_without_merge_metadata_are_replaced_and_replace_directive() -> None:
    pv = {"kind": "PersistentVolume", "spec": {"accessModes": ["ReadWriteOnce"], "mountOptions": ["a", "b"]}}
    out = apply_patch(STRATEGIC, pv, {"spec": {"mountOptions": ["c"]}})
    assert out["spec"]["mountOptions"] == ["c"]
    target = sts([{"containerPort": 80}])
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}}}
    assert apply_patch(STRATEGIC, target, patch)["spec"]["template"]["spec"]["containers"] == [
        {"name": "only", "image": "x"}]


def test_volumes_retain_keys_drop_the_old_source() -> None:
    pod = {"kind": "Pod", "spec": {"containers": [], "volumes": [{"name": "v", "hostPath": {"path": "/x"}}]}}
    patch = {"spec": {"volumes": [{"$retainKeys": ["emptyDir", "name"], "emptyDir": {}, "name": "v"}]}}
    assert apply_patch(STRATEGIC, pod, patch)["spec"]["volumes"] == [{"name": "v", "emptyDir": {}}]


def test_maps_merge_and_null_deletes_a_key() -> None:
    pv = {"kind": "PersistentVolume", "metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"capacity": {"storage": "1Gi"}}}
    out = strategic_merge_patch(pv, {"metadata": {"labels": {"a": None, "c": "3"}}}, MODELS["PersistentVolume"])
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"}
