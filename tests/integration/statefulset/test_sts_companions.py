"""Endpoints, DNS entries and service env; DaemonSet, ReplicaSet, ReplicationController; garbage collection."""
from __future__ import annotations

import copy
from typing import Any

from storage.controllers.endpoints import dns_entries, service_env
from storage.errors import Conflict
from sts_harness import pod_names
from support import get_or_none, wait_for

Obj = dict[str, Any]


def make_pod(name: str, labels: dict[str, str], **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}],
                     **spec}}


def make_service(name: str, selector: dict[str, str] | None, cluster_ip: str | None = None, ports=None) -> Obj:
    spec: Obj = {"ports": ports or [{"name": "web", "port": 80, "targetPort": "http"}]}
    if selector is not None:
        spec["selector"] = selector
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def test_endpoints_ready_and_not_ready_addresses_named_port_and_hostname(store, controllers, kubelet):
    store.create("services", make_service("nginx", {"app": "nginx"}, cluster_ip="None"))
    store.create("pods", make_pod("web-0", {"app": "nginx"}, hostname="web-0", subdomain="nginx"))
    store.create("pods", make_pod("web-1", {"app": "nginx"}, hostname="web-1", subdomain="other"))
    store.create("pods", make_pod("db-0", {"app": "db"}))
    kubelet.ready("web-0")
    kubelet.unready("web-1")
    ep = wait_for(lambda: (e := get_or_none(store, "endpoints", "default", "nginx")) and
                  (e.get("subsets") or [{}])[0].get("notReadyAddresses") and e, what="endpoints")
    (subset,) = ep["subsets"]
    (ready,) = subset["addresses"]
    assert ready["hostname"] == "web-0" and ready["nodeName"] == "node-1"
    assert ready["targetRef"]["name"] == "web-0" and ready["ip"].startswith("127.1.")
    (not_ready,) = subset["notReadyAddresses"]
    assert not_ready["targetRef"]["name"] == "web-1" and "hostname" not in not_ready
    assert subset["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    kubelet.ready("web-1")
    wait_for(lambda: len(store.get("endpoints", "default", "nginx")["subsets"][0].get("addresses", [])) == 2,
             what="both ready")


def test_service_without_selector_is_left_alone(store, controllers):
    store.create("services", make_service("external", None))
    manual = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external", "namespace": "default"},
              "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}
    store.create("endpoints", manual)
    # Another service with a selector proves the controller is running before we look.
    store.create("services", make_service("probe", {"app": "none"}))
    wait_for(lambda: get_or_none(store, "endpoints", "default", "probe"), what="probe endpoints")
    assert store.get("endpoints", "default", "external")["subsets"] == manual["subsets"]


def test_service_env_matches_kubernetes():
    services = [make_service("redis-master", {"a": "b"}, cluster_ip="10.0.0.11",
                             ports=[{"name": "redis", "port": 6379, "protocol": "TCP"}, {"port": 6380}]),
                make_service("headless", {"a": "b"}, cluster_ip="None")]
    env = service_env(services)
    assert env == {
        "REDIS_MASTER_SERVICE_HOST": "10.0.0.11",
        "REDIS_MASTER_SERVICE_PORT": "6379",
        "REDIS_MASTER_SERVICE_PORT_REDIS": "6379",
        "REDIS_MASTER_PORT": "tcp://10.0.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP": "tcp://10.0.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_6379_TCP_PORT": "6379",
        "REDIS_MASTER_PORT_6379_TCP_ADDR": "10.0.0.11",
        "REDIS_MASTER_PORT_6380_TCP": "tcp://10.0.0.11:6380",
        "REDIS_MASTER_PORT_6380_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_6380_TCP_PORT": "6380",
        "REDIS_MASTER_PORT_6380_TCP_ADDR": "10.0.0.11",
    }
    # Without a cluster IP, a non-headless service is reached at its first ready endpoint.
    plain = make_service("api", {"a": "b"}, ports=[{"port": 80}])
    ep = {"subsets": [{"addresses": [{"ip": "127.1.0.9"}]}]}
    assert service_env([plain], {"api": ep})["API_SERVICE_HOST"] == "127.1.0.9"


def test_dns_entries_for_headless_members_and_services(store, controllers, kubelet):
    store.create("services", make_service("nginx", {"app": "nginx"}, cluster_ip="None"))
    store.create("services", make_service("api", {"app": "api"}, ports=[{"port": 80}]))
    for name in ("web-0", "web-1"):
        store.create("pods", make_pod(name, {"app": "nginx"}, hostname=name, subdomain="nginx"))
        kubelet.ready(name)
    store.create("pods", make_pod("api-x", {"app": "api"}))
    kubelet.ready("api-x")
    wait_for(lambda: len(((get_or_none(store, "endpoints", "default", "nginx") or {}).get("subsets") or [{}])[0]
                         .get("addresses", [])) == 2
             and ((get_or_none(store, "endpoints", "default", "api") or {}).get("subsets") or [{}])[0].get("addresses"),
             what="endpoints")
    pod = store.get("pods", "default", "web-0")
    ip0, ip1 = (store.get("pods", "default", n)["status"]["podIP"] for n in ("web-0", "web-1"))
    api_ip = store.get("pods", "default", "api-x")["status"]["podIP"]
    entries = dict(dns_entries(pod, store.list("services", "default")[0], store.list("endpoints", "default")[0]))
    assert entries[ip0][:3] == ["web-0.nginx.default.svc.cluster.local", "web-0.nginx", "web-0"]
    assert entries[ip1][:2] == ["web-1.nginx.default.svc.cluster.local", "web-1.nginx"]
    assert "nginx.default.svc.cluster.local" in entries[ip1] and "nginx" in entries[ip0]
    assert entries[api_ip] == ["api.default.svc.cluster.local", "api.default", "api"]


def node(name: str, labels: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def test_daemonset_follows_nodes(store, controllers):
    store.create("nodes", node("n1", {"disk": "ssd"}))
    store.create("nodes", node("n2", {"disk": "hdd"}))
    store.create("daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "a", "image": "x"}]}}},
    })

    def placed() -> list[str]:
        return sorted(p["spec"].get("nodeName", "") for p in store.list("pods", "default")[0]
                      if p["metadata"]["name"].startswith("agent-") and not p["metadata"].get("deletionTimestamp"))

    wait_for(lambda: placed() == ["n1"], what="pod on n1 only")
    store.create("nodes", node("n3", {"disk": "ssd"}))
    wait_for(lambda: placed() == ["n1", "n3"], what="pod on n3")
    store.delete("nodes", "", "n1")
    wait_for(lambda: placed() == ["n3"], what="pod of n1 removed")
    wait_for(lambda: (store.get("daemonsets", "default", "agent").get("status") or {}).get("desiredNumberScheduled") == 1,
             what="status")


def _edit(store, resource: str, name: str, mutate) -> None:
    for _ in range(50):
        obj = copy.deepcopy(store.get(resource, "default", name))
        mutate(obj)
        try:
            store.update(resource, obj)
            return
        except Conflict:
            continue


def test_replicaset_replaces_failed_pods_and_scales(store, controllers, kubelet):
    store.create("replicasets", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "fe", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "fe"}},
                 "template": {"metadata": {"labels": {"app": "fe"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    })
    names = wait_for(lambda: (n := pod_names(store, prefix="fe-")) and len(n) == 3 and n, what="3 pods")
    assert all(len(n) == len("fe-") + 5 for n in names)
    kubelet.ready(names[0])
    kubelet.ready(names[1])
    kubelet.fail(names[2])
    wait_for(lambda: names[2] not in pod_names(store, prefix="fe-") and len(pod_names(store, prefix="fe-")) == 3,
             what="failed pod replaced")
    _edit(store, "replicasets", "fe", lambda rs: rs["spec"].update(replicas=2))
    # the not-ready replacement goes first
    wait_for(lambda: pod_names(store, prefix="fe-") == sorted(names[:2]), what="scaled to the two ready pods")
    wait_for(lambda: (store.get("replicasets", "default", "fe").get("status") or {}).get("readyReplicas") == 2,
             what="status")


def test_replication_controller_keeps_count(store, controllers):
    store.create("replicationcontrollers", {
        "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"app": "rc"},
                 "template": {"metadata": {"labels": {"app": "rc"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    })
    first = wait_for(lambda: (n := pod_names(store, prefix="rc-")) and len(n) == 2 and n, what="2 pods")
    store.delete("pods", "default", first[0])
    wait_for(lambda: len(pod_names(store, prefix="rc-")) == 2 and first[0] not in pod_names(store, prefix="rc-"),
             what="replacement")


def _owned_configmap(name: str, owner: Obj, block: bool = True) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": name, "namespace": "default",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
                             "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block}]}}


def test_gc_background_deletes_dependents_of_gone_owner(store, controllers):
    owner = store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "owner", "namespace": "default"}})
    store.create("configmaps", _owned_configmap("child", owner))
    other = store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "other", "namespace": "default"}})
    shared = _owned_configmap("shared", owner)
    shared["metadata"]["ownerReferences"].append({"apiVersion": "v1", "kind": "ConfigMap", "name": "other",
                                                  "uid": other["metadata"]["uid"]})
    store.create("configmaps", shared)
    store.delete("configmaps", "default", "owner")
    wait_for(lambda: get_or_none(store, "configmaps", "default", "child") is None, what="child collected")
    # a dependent with another live owner stays, minus the dangling reference
    wait_for(lambda: [r["name"] for r in store.get("configmaps", "default", "shared")["metadata"]["ownerReferences"]]
             == ["other"], what="dangling ref dropped")


def test_gc_orphan_removes_owner_references(store, controllers):
    owner = store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "owner", "namespace": "default", "finalizers": ["orphan"]}})
    store.create("configmaps", _owned_configmap("child", owner))
    store.delete("configmaps", "default", "owner")
    wait_for(lambda: get_or_none(store, "configmaps", "default", "owner") is None, what="owner gone")
    child = store.get("configmaps", "default", "child")
    assert not child["metadata"].get("ownerReferences")


def test_gc_foreground_deletes_dependents_before_owner(store, controllers):
    owner = store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "owner", "namespace": "default", "finalizers": ["foregroundDeletion"]}})
    child = _owned_configmap("child", owner)
    child["metadata"]["finalizers"] = ["test/hold"]
    store.create("configmaps", child)
    store.delete("configmaps", "default", "owner")
    wait_for(lambda: (c := get_or_none(store, "configmaps", "default", "child")) and c["metadata"].get("deletionTimestamp"),
             what="child marked")
    assert get_or_none(store, "configmaps", "default", "owner") is not None  # blocked by the child
    _edit(store, "configmaps", "child", lambda c: c["metadata"].update(finalizers=[]))
    wait_for(lambda: get_or_none(store, "configmaps", "default", "owner") is None, what="owner removed last")
