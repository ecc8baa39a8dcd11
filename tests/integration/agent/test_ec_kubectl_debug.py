"""``kubectl debug`` with the real kubectl against real runc pods (SEMANTICS EC1-EC5): an ephemeral container
runs once beside the pod's containers, in the process, IPC and UTS namespaces of the container it targets;
``-i`` attaches to it; ``logs -c`` and ``describe`` show it; Pod Security refuses kubectl's default profile
under baseline, as Kubernetes does; the pod's deletion stops it with the pod."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from agent_cluster import Cluster
from storage.agent.agent import NodeAgent
from support import kubectl_binary, wait_for


@pytest.fixture
def node(cluster: Cluster) -> NodeAgent:
    cluster.start_controllers()
    return cluster.add_agent("n1")


@pytest.fixture
def kubeconfig(cluster: Cluster) -> Path:
    assert cluster.server.kubeconfig is not None
    return cluster.server.kubeconfig


def kubectl(kubeconfig: Path, *args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([kubectl_binary(), *args], input=input, capture_output=True, timeout=timeout, env=env)


def run_pod(cluster: Cluster, name: str) -> dict[str, Any]:
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                   "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1, "containers": [
                       {"name": "main", "image": "debian:12", "command": ["sh", "-c", "exec sleep 1000"]}]}})
    return cluster.wait_running(name)


def ephemeral_status(cluster: Cluster, pod: str, name: str) -> dict[str, Any] | None:
    statuses = (cluster.client.get("pods", pod, "default").get("status") or {}).get("ephemeralContainerStatuses") or []
    return next((s for s in statuses if s["name"] == name), None)


def terminated(cluster: Cluster, pod: str, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = ephemeral_status(cluster, pod, name)
        return (status or {}).get("state", {}).get("terminated")
    return wait_for(done, timeout=60, what=f"ephemeral container {name} to end")


def test_ec1_kubectl_debug_targets_a_container_and_sees_its_processes(cluster: Cluster, node: NodeAgent,
                                                                       kubeconfig: Path) -> None:
    run_pod(cluster, "app")

    done = kubectl(kubeconfig, "debug", "app", "--profile=baseline", "--image=busybox", "--target=main", "-c", "peek",
                   "--", "sh", "-c", 'tr "\\0" " " < /proc/1/cmdline; echo; hostname; readlink /proc/self')
    assert done.returncode == 0, done.stderr

    state = terminated(cluster, "app", "peek")
    assert state["exitCode"] == 0 and state["reason"] == "Completed"
    logs = kubectl(kubeconfig, "logs", "app", "-c", "peek")
    assert logs.returncode == 0, logs.stderr
    cmdline, hostname, own_pid = logs.stdout.decode().splitlines()
    assert cmdline.strip() == "sleep 1000"  # pid 1 of the target's pid namespace
    assert hostname == "app"  # the target's UTS namespace
    assert int(own_pid) > 1  # a process in that namespace, not its first one
    pod = cluster.client.get("pods", "app", "default")
    assert pod["status"]["phase"] == "Running"
    assert all(c["status"] == "True" for c in pod["status"]["conditions"] if c["type"] in ("Ready", "ContainersReady"))
    status = ephemeral_status(cluster, "app", "peek")
    assert status is not None and status["ready"] is False and status["restartCount"] == 0
    described = kubectl(kubeconfig, "describe", "pod", "app").stdout.decode()
    assert "Ephemeral Containers:" in described and "peek:" in described
    reasons = wait_for(lambda: {(e["reason"], e["message"]) for e in cluster.events_for("app")} & {
        ("Started", "Started container peek")}, timeout=30, what="the Started event of the ephemeral container")
    assert reasons
    # Not restarted: it stays terminated.
    time.sleep(1.5)
    assert ephemeral_status(cluster, "app", "peek")["state"].get("terminated", {}).get("exitCode") == 0


def test_ec1_kubectl_debug_i_attaches_to_the_new_container(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    run_pod(cluster, "app")

    done = kubectl(kubeconfig, "debug", "-i", "app", "--profile=baseline", "--image=busybox", "--target=main",
                   "-c", "shell", "--", "sh", input=b"echo from-stdin; tr '\\0' ' ' < /proc/1/cmdline; echo; exit 3\n")

    assert b"from-stdin" in done.stdout and b"sleep 1000" in done.stdout, (done.stdout, done.stderr)
    assert terminated(cluster, "app", "shell")["exitCode"] == 3


def test_ec5_kubectl_debugs_default_profile_is_refused_under_baseline(cluster: Cluster, node: NodeAgent,
                                                                      kubeconfig: Path) -> None:
    run_pod(cluster, "app")
    done = kubectl(kubeconfig, "debug", "app", "--image=busybox", "--target=main", "--", "true")
    assert done.returncode != 0
    assert b'violates PodSecurity "baseline:latest"' in done.stderr and b"SYS_PTRACE" in done.stderr
    assert "ephemeralContainers" not in cluster.client.get("pods", "app", "default")["spec"]


def test_ec1_a_running_ephemeral_container_stops_with_its_pod(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    uid = run_pod(cluster, "app")["metadata"]["uid"]
    done = kubectl(kubeconfig, "debug", "app", "--profile=baseline", "--image=busybox", "--target=main", "-c", "stay",
                   "--", "sleep", "1000")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: "running" in ((ephemeral_status(cluster, "app", "stay") or {}).get("state") or {}),
             timeout=60, what="the ephemeral container to run")

    deleted = kubectl(kubeconfig, "delete", "pod", "app", "--wait", "--timeout=60s")

    assert deleted.returncode == 0, deleted.stderr
    assert node.runtime is not None and uid not in node.runtime.running_pods()
    listed = subprocess.run(["runc", "--root", str(node.runtime.settings.runc.root), "list", "-q"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert not [c for c in listed if uid in c]
    # The kubelet's Killing event names each container where the spec has it: the ephemeral one under
    # spec.ephemeralContainers, not spec.containers.
    def killing_events() -> list[tuple[str, str]]:
        return sorted((e["message"], e["involvedObject"].get("fieldPath"))
                      for e in cluster.events_for("app") if e.get("reason") == "Killing")
    wait_for(lambda: len(killing_events()) >= 2, timeout=30, what="a Killing event for each container")
    killing = killing_events()
    assert killing == [("Stopping container main", "spec.containers{main}"),
                       ("Stopping container stay", "spec.ephemeralContainers{stay}")]


def test_kubectl_debug_copy_to_runs_a_copy_with_a_debug_container_beside_the_original(
        cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    """``kubectl debug --copy-to`` creates a new pod: the original's containers plus the debug container, the
    process namespace shared (kubectl's default for a copy), scheduled anew; the original runs on untouched."""
    original = run_pod(cluster, "app")

    done = kubectl(kubeconfig, "debug", "app", "--copy-to=app-debug", "--profile=baseline", "--image=busybox",
                   "-c", "debugger", "--", "sh", "-c", "ps -o args; sleep 1000")

    assert done.returncode == 0, done.stderr
    copy = cluster.wait_running("app-debug", timeout=120)
    assert [c["name"] for c in copy["spec"]["containers"]] == ["main", "debugger"]
    assert copy["spec"]["shareProcessNamespace"] is True and copy["spec"]["nodeName"] == "n1"
    logs = wait_for(lambda: (lambda out: out if b"ps -o args" in out else None)(
        kubectl(kubeconfig, "logs", "app-debug", "-c", "debugger").stdout), timeout=30, what="the debugger's ps")
    # The copy's main container's process, seen from the debug container: the namespace is shared.
    assert "sleep 1000" in [line.strip() for line in logs.decode().splitlines()], logs
    after = cluster.client.get("pods", "app", "default")
    assert after["metadata"]["uid"] == original["metadata"]["uid"] and after["status"]["phase"] == "Running"
    assert [c["name"] for c in after["spec"]["containers"]] == ["main"]


def test_kubectl_debug_node_runs_on_that_node_with_its_root_at_host(cluster: Cluster, kubeconfig: Path) -> None:
    """``kubectl debug node/NAME`` creates a pod bound to the node, in the host's pid and network namespaces,
    with the host's root at /host. Pod Security refuses it under baseline, as Kubernetes does; in a
    namespace labelled privileged it runs on an agent whose hostPath allowlist holds "/" (Stowage's agent
    mounts no host path outside its ``--host-path-prefix`` list)."""
    cluster.start_controllers()
    cluster.add_agent("n1", host_path_prefixes=("/",))
    refused = kubectl(kubeconfig, "debug", "node/n1", "--image=busybox", "--profile=general", "--", "true")
    assert refused.returncode != 0 and b'violates PodSecurity "baseline:latest"' in refused.stderr, refused.stderr
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "ops", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})
    marker = Path(tempfile.mkdtemp(prefix="stowage-debug-node-")) / "marker"
    marker.write_text("on the host\n")
    try:
        done = kubectl(kubeconfig, "debug", "node/n1", "-n", "ops", "--image=busybox", "--profile=general",
                       "--", "sh", "-c", f"cat /host{marker}; tr '\\0' ' ' < /proc/1/cmdline; echo; sleep 1000")
        assert done.returncode == 0, done.stderr
        pods, _ = cluster.client.list("pods", "ops")
        (pod,) = pods
        name = pod["metadata"]["name"]
        assert name.startswith("node-debugger-n1-") and pod["spec"]["nodeName"] == "n1"
        assert pod["spec"]["hostPID"] is True and pod["spec"]["hostNetwork"] is True
        cluster.wait_pod(name, lambda p: (p.get("status") or {}).get("phase") == "Running", "Running", 120,
                         namespace="ops")
        logs = wait_for(lambda: (lambda out: out if out.count(b"\n") >= 2 else None)(
            kubectl(kubeconfig, "logs", "-n", "ops", name).stdout), timeout=30, what="the debug pod's output")
        lines = logs.decode().splitlines()
        assert lines[0] == "on the host", logs
        assert lines[1].strip() == Path("/proc/1/cmdline").read_text().replace("\0", " ").strip(), logs  # the host's init
    finally:
        kubectl(kubeconfig, "delete", "pods", "--all", "-n", "ops", "--wait", "--timeout=60s")
        shutil.rmtree(marker.parent)
