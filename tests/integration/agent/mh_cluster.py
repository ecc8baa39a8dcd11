"""Several hosts, each a network namespace running its own ``stowage agent``, on one control plane
(tests/netns_hosts.py makes the namespaces); shared by the multi-host agent, Ceph and Cassandra tests."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: netns_hosts

from agent_cluster import Cluster, condition, wait_until  # noqa: E402
from netns_hosts import Fabric, Host, LoopbackServices  # noqa: E402
from storage.api.taints import NO_EXECUTE, OUT_OF_SERVICE  # noqa: E402
from storage.controllers.base import ControllerOptions  # noqa: E402
from storage.errors import Conflict  # noqa: E402

Obj = dict[str, Any]
# 10 s, not less: with 3 s a CI machine's stall of the control plane (all three nodes Unknown at once, agents
# heartbeating every second) set off the 2 s local-volume recovery before the test cut any host.
FAST = ControllerOptions(node_monitor_grace_period=10.0, node_eviction_rate=10.0)


class Hosts:
    def __init__(self, base: Path, count: int) -> None:
        self.fabric = Fabric(count)
        try:
            self.cluster = Cluster(base, server_host=self.fabric.control_ip)
        except BaseException:
            self.fabric.close()
            raise
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.services: list[LoopbackServices] = []

    def reach_loopback_services(self, ports: Sequence[int]) -> None:
        """Every host reaches these ports of the test's 127.0.0.1 at its own 127.0.0.1 (netns_hosts); may be
        called again for ports that appear later (a Gluster volume's bricks)."""
        self.services.append(LoopbackServices(self.fabric.hosts, ports))

    def cut(self, host: Host) -> None:
        """The host's cable pulled: the fabric link, and its way to the loopback services."""
        self.fabric.cut(host)
        for services in self.services:
            services.cut(host)

    def restore(self, host: Host) -> None:
        self.fabric.restore(host)
        for services in self.services:
            services.restore(host)

    def start(self, options: ControllerOptions = FAST) -> None:
        """The controllers (``options``: short grace periods by default, for the node-loss tests), then one
        agent per host, each Ready."""
        self.cluster.start_controllers(options)
        for host in self.fabric.hosts:
            self.start_agent(host)
        for host in self.fabric.hosts:
            wait_until(lambda h=host: condition(self.node(h.name), "Ready") == "True", f"node {host.name} Ready")

    def start_agent(self, host: Host) -> subprocess.Popen[bytes]:
        proc = self.cluster.spawn_agent(
            host.name, "--address", host.address, "--pod-cidr", host.pod_cidr, "--pod-interface", "eth0",
            wrap=lambda argv, h=host: self.fabric.argv_in(h, argv))
        self.agents[host.name] = proc
        return proc

    def node(self, name: str) -> Obj:
        return self.cluster.client.get("nodes", name)

    def _edit_taints(self, name: str, edit: Callable[[list[Obj]], list[Obj]]) -> None:
        """Read, edit and write the node's taints, again from a fresh read when the write conflicts: the
        node-lifecycle controller changes the same node's taints as its host goes and comes back (kubectl
        taint retries its write the same way)."""
        for _ in range(10):
            node = self.node(name)
            node["spec"]["taints"] = edit(list(node["spec"].get("taints") or []))
            try:
                self.cluster.client.update(node)
                return
            except Conflict:
                continue
        raise AssertionError(f"node {name}: ten conflicting writes of its taints in a row")

    def declare_out_of_service(self, name: str) -> None:
        """The administrator's out-of-service taint (L6): the node is shut down, its pods may go elsewhere."""
        self._edit_taints(name, lambda taints: taints + [{"key": OUT_OF_SERVICE, "value": "nodeshutdown",
                                                          "effect": NO_EXECUTE}])

    def lift_out_of_service(self, name: str) -> None:
        self._edit_taints(name, lambda taints: [t for t in taints if t["key"] != OUT_OF_SERVICE])

    def wait_member_moved(self, first: Obj, claim: str, volume: str) -> Obj:
        """The StatefulSet member ``first`` recreated and Running on another host, on the same claim and
        volume: a network volume follows its member, it is not recreated (unlike LR)."""
        name = first["metadata"]["name"]
        moved = self.cluster.wait_pod(name, lambda p: p["metadata"]["uid"] != first["metadata"]["uid"]
                                      and (p.get("status") or {}).get("phase") == "Running",
                                      f"{name} recreated and running on another host", timeout=180)
        assert moved["spec"]["nodeName"] != first["spec"]["nodeName"]
        namespace = first["metadata"].get("namespace") or "default"
        assert self.cluster.client.get("persistentvolumeclaims", claim, namespace)["spec"]["volumeName"] == volume
        return moved

    def member_volume(self, member: Obj, plugin_dir: str) -> Path:
        """Where a pod's one volume of plugin ``plugin_dir`` (``kubernetes.io~cephfs``) is mounted on its
        host (the hosts share the machine's mount namespace)."""
        node, uid = member["spec"]["nodeName"], member["metadata"]["uid"]
        found = list((self.cluster.agent_dir(node) / "pods" / uid).glob(f"volumes/{plugin_dir}/*"))
        assert len(found) == 1, found
        return found[0]

    def close(self) -> None:
        try:
            self.cluster.close()
        finally:
            try:
                for services in self.services:
                    services.close()
            finally:
                self.fabric.close()


def visits_statefulset(name: str, storage_class: str, size: str) -> list[Obj]:
    """A headless Service and a one-member StatefulSet whose member appends the node it runs on to
    ``/data/visits`` on its claim (``data-<name>-0``), once per start."""
    labels = {"app": name}
    script = ('echo "$NODE_NAME" >> /data/visits; sync; '
              "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done")
    container = {"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", script],
                 "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
         "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 7000}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": "default"},
         "spec": {"serviceName": name, "replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               # Kubernetes' default: each member's own user namespace would own its files by
                               # a host id range of its own, and a FUSE mount cannot be idmapped (SV9), so a
                               # member recreated elsewhere could not append to its predecessor's file.
                               "spec": {"terminationGracePeriodSeconds": 5, "hostUsers": True,
                                        "containers": [container]}},
                  "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                      "accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                      "resources": {"requests": {"storage": size}}}}]}}]
