"""Pods through the real agent: volumes at their mountPath, config, probes, graceful deletion (A5-A7)."""
from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from agent_cluster import Cluster, claim, condition, local_class, pod, wait_until
from storage.agent.agent import AGENT_FINALIZER
from storage.system import loop, mounts
from storage.system.pki import client_context
from support import kubectl_binary, wait_for_text


def _pv_of(cluster: Cluster, claim_name: str) -> dict:
    c = cluster.client.get("persistentvolumeclaims", claim_name, "default")
    return cluster.client.get("persistentvolumes", c["spec"]["volumeName"])


def test_a5_pod_runs_with_local_volume_and_deletion_cleans_everything(cluster: Cluster) -> None:
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    cluster.apply(local_class(), claim("data"),
                  pod("writer", "echo hello-from-pod > /data/hello; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                      claims={"data": "/data"}))
    running = cluster.wait_running("writer")
    assert running["spec"]["nodeName"] == "n1"
    assert AGENT_FINALIZER in running["metadata"]["finalizers"]
    assert running["status"]["podIP"].startswith("127.")
    pv = _pv_of(cluster, "data")
    uid = running["metadata"]["uid"]
    volume_dir = cluster.agent_dir("n1") / "pods" / uid / "volumes"
    target = next(volume_dir.glob("*/data"))
    # The file the container wrote is on the volume's own filesystem, backed by a loop device with direct I/O.
    # Its content, not its existence: the shell creates the file before the echo writes to it.
    wait_for_text(target / "hello", "hello-from-pod\n", "the container's file on the volume")
    entry = mounts.top_mount(target)
    assert entry is not None and entry.fstype == "ext4" and entry.source.startswith("/dev/loop")
    backing = loop.loops_under(cluster.pool_dir("n1"))
    assert entry.source in backing and backing[entry.source].endswith(f"{pv['metadata']['name']}.img")
    dio = Path(f"/sys/block/{os.path.basename(entry.source)}/loop/dio").read_text().strip()
    assert dio == "1"
    # Node status reports the volume while it is mounted.
    unique = f"kubernetes.io/local-volume/{pv['metadata']['name']}"
    node = wait_until(lambda: (lambda n: n if any(pv["metadata"]["name"] in v for v in n["status"].get("volumesInUse") or []) else None)(
        cluster.client.get("nodes", "n1")), "volumesInUse to list the volume")
    attached = node["status"].get("volumesAttached") or []
    assert any(pv["metadata"]["name"] in a["name"] and a["devicePath"] == entry.source for a in attached), (unique, attached)

    cluster.client.delete("pods", "writer", "default")
    cluster.wait_gone("pods", "writer", "default")
    assert not mounts.mounts_under(cluster.agent_dir("n1") / "pods"), "pod mounts left behind"
    assert not (cluster.agent_dir("n1") / "pods" / uid).exists()
    assert agent.runtime is not None and uid not in agent.runtime.running_pods()
    # The volume is unused now: deleting the claim deletes the pool volume and its loop device.
    cluster.client.delete("persistentvolumeclaims", "data", "default")
    cluster.wait_gone("persistentvolumes", pv["metadata"]["name"])
    wait_until(lambda: not loop.loops_under(cluster.pool_dir("n1")), "the pool's loop device to be detached")


def test_a6_read_only_mount_config_secret_env_and_memory_emptydir(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"},
         "data": {"greeting": "hi-config"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": "default"},
         "data": {"password": base64.b64encode(b"s3cret").decode()}},
        local_class(), claim("data"))
    script = ("echo $(cat /cfg/greeting) > /data/out; echo \"$(cat /sec/password) $GREETING $PASSWORD $MY_NAME\" >> /data/out; "
              "if touch /ro/x 2>/dev/null; then echo ro-writable >> /data/out; else echo ro-refused >> /data/out; fi; "
              "df -k /mem | tail -1 | awk '{print \"memsize\", $2}' >> /data/out; "
              "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done")
    cluster.apply(pod(
        "cfgpod", script, claims={"data": "/data"},
        volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "sec", "secret": {"secretName": "sec"}},
                 {"name": "ro", "emptyDir": {}},
                 {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}],
        mounts_=[{"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec"},
                 {"name": "ro", "mountPath": "/ro", "readOnly": True}, {"name": "mem", "mountPath": "/mem"}],
        container={"env": [
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}))
    running = cluster.wait_running("cfgpod")
    uid = running["metadata"]["uid"]
    out = next((cluster.agent_dir("n1") / "pods" / uid / "volumes").glob("*/data")) / "out"
    wait_until(lambda: out.exists() and "memsize" in out.read_text(), "the pod's report")
    lines = out.read_text().splitlines()
    assert lines[0] == "hi-config"
    assert lines[1] == "s3cret hi-config s3cret cfgpod"
    assert lines[2] == "ro-refused"
    assert lines[3] == f"memsize {8 * 1024}"
    mem = next((cluster.agent_dir("n1") / "pods" / uid / "volumes").glob("*/mem"))
    entry = mounts.top_mount(mem)
    assert entry is not None and entry.fstype == "tmpfs"


def test_a6_configmap_secret_downward_api_and_projected_volumes_are_read_only_in_the_container(cluster: Cluster) -> None:
    """A6, SV11 (Kubernetes' ReadOnlyAPIDataVolumes): a pod cannot write, replace or delete what its ConfigMap, Secret,
    downward API and projected volumes hold, with readOnly or without; an emptyDir beside them stays writable.
    The agent's own updates still reach the volume."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rocfg", "namespace": "default"},
         "data": {"app.conf": "v1"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rosec", "namespace": "default"},
         "data": {"key": base64.b64encode(b"k").decode()}})
    checks = " ".join(
        f"if rm -f {d}/{f} 2>/dev/null || echo x > {d}/new 2>/dev/null; then echo {d}:writable; "
        f"else echo {d}:refused; fi >> /scratch/out;"
        for d, f in (("/cfg", "app.conf"), ("/sec", "key"), ("/dapi", "labels"), ("/proj", "app.conf")))
    script = (f"{checks} echo done >> /scratch/out; "
              "while [ \"$(cat /cfg/app.conf)\" != v2 ]; do sleep 0.2; done; echo updated >> /scratch/out; "
              "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done")
    cluster.apply(pod(
        "ropod", script,
        volumes=[{"name": "cfg", "configMap": {"name": "rocfg"}}, {"name": "sec", "secret": {"secretName": "rosec"}},
                 {"name": "dapi", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                 {"name": "proj", "projected": {"sources": [{"configMap": {"name": "rocfg"}}]}},
                 {"name": "scratch", "emptyDir": {}}],
        mounts_=[{"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec"},
                 {"name": "dapi", "mountPath": "/dapi"}, {"name": "proj", "mountPath": "/proj"},
                 {"name": "scratch", "mountPath": "/scratch"}]))
    uid = cluster.wait_running("ropod")["metadata"]["uid"]
    out = next((cluster.agent_dir("n1") / "pods" / uid / "volumes").glob("*/scratch")) / "out"
    wait_until(lambda: out.exists() and "done" in out.read_text(), "the pod's report")
    assert out.read_text().splitlines()[:5] == ["/cfg:refused", "/sec:refused", "/dapi:refused", "/proj:refused", "done"]
    live = cluster.client.get("configmaps", "rocfg", "default")
    live["data"]["app.conf"] = "v2"
    cluster.client.update(live)
    wait_until(lambda: "updated" in out.read_text(), "the ConfigMap's change seen in the pod", 60)


def test_a6_a_subpath_mounts_one_key_of_a_configmap_secret_or_projected_volume(cluster: Cluster) -> None:
    """SV11, the usual "mount one config file" pattern: a subPath naming a key (or an item's nested path) of a
    ConfigMap, Secret or projected volume binds that file, as the kubelet does, although the volume shows
    each key as a link through ``..data``."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "subcfg", "namespace": "default"},
         "data": {"nginx.conf": "worker_processes 1;", "other": "o"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "subsec", "namespace": "default"},
         "data": {"tls.key": base64.b64encode(b"KEY").decode()}})
    script = ("cat /etc/nginx/nginx.conf /etc/app/deep.conf /etc/tls.key /etc/proj.conf > /scratch/out; "
              "ls /etc/nginx >> /scratch/out; echo done >> /scratch/out; "
              "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done")
    cluster.apply(pod(
        "subpod", script,
        volumes=[{"name": "cfg", "configMap": {"name": "subcfg"}},
                 {"name": "items", "configMap": {"name": "subcfg", "items": [{"key": "other", "path": "a/deep.conf"}]}},
                 {"name": "sec", "secret": {"secretName": "subsec"}},
                 {"name": "proj", "projected": {"sources": [{"configMap": {"name": "subcfg"}}]}},
                 {"name": "scratch", "emptyDir": {}}],
        mounts_=[{"name": "cfg", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf"},
                 {"name": "items", "mountPath": "/etc/app/deep.conf", "subPath": "a/deep.conf"},
                 {"name": "sec", "mountPath": "/etc/tls.key", "subPath": "tls.key"},
                 {"name": "proj", "mountPath": "/etc/proj.conf", "subPath": "nginx.conf"},
                 {"name": "scratch", "mountPath": "/scratch"}]))
    uid = cluster.wait_running("subpod")["metadata"]["uid"]
    out = next((cluster.agent_dir("n1") / "pods" / uid / "volumes").glob("*/scratch")) / "out"
    wait_until(lambda: out.exists() and "done" in out.read_text(), "the pod's report")
    assert out.read_text() == "worker_processes 1;oKEYworker_processes 1;nginx.conf\ndone\n"


def test_a8_a_pod_naming_its_node_waits_for_a_read_write_once_pod_claim_another_pod_there_holds(
        cluster: Cluster) -> None:
    """A8: the scheduler keeps a second user of a ReadWriteOncePod claim off the node; a pod that names its
    node itself is held by the agent (FailedMount naming the claim and the holder) and starts once the
    holder is gone."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(local_class(), claim("single", modes=["ReadWriteOncePod"]),
                  pod("holder", claims={"single": "/v"}))
    cluster.wait_running("holder")
    cluster.apply(pod("second", "echo second > /v/who; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                      claims={"single": "/v"}, nodeName="n1"))
    expected = ('MountVolume.SetUp failed for volume "single" : persistentvolumeclaim "single" has the '
                'ReadWriteOncePod access mode and pod "default/holder" on this node uses it')
    waiting = cluster.wait_pod("second", lambda p: any(
        ((c.get("state") or {}).get("waiting") or {}).get("message") == expected
        for c in (p.get("status") or {}).get("containerStatuses") or []), "the second pod held back")
    assert waiting["status"]["phase"] == "Pending"
    wait_until(lambda: any(e.get("reason") == "FailedMount" and e.get("message") == expected
                           for e in cluster.events_for("second")), "its FailedMount event")
    cluster.client.delete("pods", "holder", "default")
    cluster.wait_gone("pods", "holder", "default")
    uid = cluster.wait_running("second", timeout=120)["metadata"]["uid"]
    volume = next((cluster.agent_dir("n1") / "pods" / uid / "volumes").glob("*/single"))
    wait_for_text(volume / "who", "second\n", "the second pod's write")


def test_kubectl_describe_shows_why_a_container_cannot_start_or_keeps_crashing(cluster: Cluster) -> None:
    """L18, the kubelet's Warning events: ``Failed`` (``Error: configmap "nope" not found``) for a container that
    cannot be made, ``BackOff`` for one that keeps crashing; `kubectl describe pod` lists them (it does not
    print a waiting container's message)."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(pod("cfgmiss", container={"env": [
                      {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}),
                  pod("crasher", "exit 3"))

    def describe(name: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env["KUBECONFIG"] = str(cluster.server.kubeconfig)
        done = subprocess.run([kubectl_binary(), "describe", "pod", name], capture_output=True, text=True,
                              timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    wait_until(lambda: 'Error: configmap "nope" not found' in describe("cfgmiss"), "the Failed event in describe")
    assert "Warning  Failed" in describe("cfgmiss")
    wait_until(lambda: "Back-off restarting failed container main in pod crasher_default" in describe("crasher"),
               "the BackOff event in describe", 120)
    failed = [e for e in cluster.events_for("cfgmiss") if e.get("reason") == "Failed"]
    assert len(failed) == 1, failed  # one per change of what the container waits for, not one per status write


def test_kubectl_describe_lists_created_started_and_killing(cluster: Cluster) -> None:
    """L19, the kubelet's Normal events: ``Pulled`` (the image already present), ``Created`` and ``Started``
    once for each container's run (the init container's too), however many status writes follow; ``Killing``
    for the running container when the pod is deleted; `kubectl describe pod` lists them."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(pod("events", initContainers=[{"name": "prep", "image": "debian:12", "command": ["true"]}],
                      container={"readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}))
    cluster.wait_pod("events", lambda p: condition(p, "Ready") == "True", "Ready", 120)

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["KUBECONFIG"] = str(cluster.server.kubeconfig)

    def normal() -> list[tuple[str, str]]:
        return sorted((e["reason"], e["message"]) for e in cluster.events_for("events") if e.get("type") == "Normal"
                      and e.get("reason") != "Scheduled")

    pulled = ("Pulled", 'Container image "debian:12" already present on machine')
    expected = sorted([pulled, ("Created", "Created container: prep"), ("Started", "Started container prep"),
                       pulled, ("Created", "Created container: main"), ("Started", "Started container main")])
    wait_until(lambda: normal() == expected, "Pulled, Created and Started for both containers")
    wait_until(lambda: "Started container main" in subprocess.run(
        [kubectl_binary(), "describe", "pod", "events"], capture_output=True, text=True, timeout=60, env=env).stdout,
        "the Started event in describe")
    described = subprocess.run([kubectl_binary(), "describe", "pod", "events"], capture_output=True, text=True,
                               timeout=60, env=env).stdout
    assert 'Pulled     ' in described and 'Container image "debian:12" already present on machine' in described, described
    assert all(int(e.get("count") or 1) == 1 for e in cluster.events_for("events") if e.get("type") == "Normal")
    assert sorted((e["reason"], e["involvedObject"].get("fieldPath")) for e in cluster.events_for("events")
                  if e.get("reason") == "Pulled") == [("Pulled", "spec.containers{main}"),
                                                      ("Pulled", "spec.initContainers{prep}")]

    cluster.client.delete("pods", "events", "default")
    cluster.wait_gone("pods", "events", "default")
    wait_until(lambda: ("Killing", "Stopping container main") in normal(), "the Killing event")
    assert normal() == sorted(expected + [("Killing", "Stopping container main")])


def test_kubectl_describe_lists_failed_probes_and_the_liveness_kill(cluster: Cluster) -> None:
    """L19: a Warning ``Unhealthy`` `<Kind> probe failed: <output>` for failed probe runs (repeats counted on one
    event), and a Normal ``Killing`` when a failed liveness probe restarts the container."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(pod("sick", container={
        "readinessProbe": {"exec": {"command": ["sh", "-c", "echo not ready; exit 1"]}, "periodSeconds": 1},
        "livenessProbe": {"exec": {"command": ["sh", "-c", "echo gone wrong; exit 1"]}, "periodSeconds": 1,
                          "failureThreshold": 2}}))

    def said(type_: str, reason: str, start: str) -> list[dict]:
        return [e for e in cluster.events_for("sick") if e.get("type") == type_ and e.get("reason") == reason
                and str(e.get("message", "")).startswith(start)]

    wait_until(lambda: said("Warning", "Unhealthy", "Readiness probe failed: not ready"), "the readiness probe's event")
    wait_until(lambda: said("Warning", "Unhealthy", "Liveness probe failed: gone wrong"), "the liveness probe's event")
    wait_until(lambda: said("Normal", "Killing", "Container main failed liveness probe, will be restarted"),
               "the liveness kill's event", 60)
    wait_until(lambda: any(int(e.get("count") or 1) >= 3 for e in said("Warning", "Unhealthy", "Readiness")),
               "repeats counted on the readiness probe's event", 60)
    cluster.wait_pod("sick", lambda p: any(c.get("restartCount", 0) >= 1 for c in p["status"].get("containerStatuses") or []),
                     "a restart", 60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["KUBECONFIG"] = str(cluster.server.kubeconfig)
    shown = subprocess.run([kubectl_binary(), "describe", "pod", "sick"], capture_output=True, text=True,
                           timeout=60, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "Liveness probe failed: gone wrong" in shown.stdout and "Warning  Unhealthy" in shown.stdout, shown.stdout


def test_e17_a_pod_whose_disk_empty_dir_outgrows_its_size_limit_is_evicted(cluster: Cluster) -> None:
    """E17 (the kubelet's local storage eviction): 12 MiB written to a disk-backed emptyDir with sizeLimit 10Mi
    evicts the pod: Failed, reason Evicted, Kubernetes' message, a Warning Evicted event, its containers
    gone and its volumes released; it is not restarted (restartPolicy Always). A pod under its limit runs on."""
    cluster.start_controllers()
    agent = cluster.add_agent("n1")  # its heartbeat, and with it the check, every second
    keep = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"
    scratch = [{"name": "scratch", "emptyDir": {"sizeLimit": "10Mi"}}]
    mount = [{"name": "scratch", "mountPath": "/scratch"}]
    cluster.apply(pod("hog", f"dd if=/dev/urandom of=/scratch/big bs=1M count=12 2>/dev/null; {keep}",
                      volumes=scratch, mounts_=mount),
                  pod("modest", f"dd if=/dev/urandom of=/scratch/some bs=1M count=4 2>/dev/null; {keep}",
                      volumes=scratch, mounts_=mount))
    message = 'Usage of EmptyDir volume "scratch" exceeds the limit "10Mi". '
    evicted = cluster.wait_pod("hog", lambda p: (p.get("status") or {}).get("reason") == "Evicted", "the eviction", 120)
    status = evicted["status"]
    assert status["phase"] == "Failed" and status["message"] == message
    assert any(c["type"] == "DisruptionTarget" and c["status"] == "True" and c["reason"] == "TerminationByKubelet"
               for c in status["conditions"])
    wait_until(lambda: any(e.get("reason") == "Evicted" and e.get("message") == message
                           for e in cluster.events_for("hog")), "the Evicted event")
    uid = evicted["metadata"]["uid"]
    assert agent.runtime is not None
    wait_until(lambda: not [c for c in agent.runtime.settings.runc.list() if uid in c.get("id", "")],
               "the evicted pod's containers gone")
    wait_until(lambda: not (cluster.agent_dir("n1") / "pods" / uid / "volumes").exists()
               or not any((cluster.agent_dir("n1") / "pods" / uid / "volumes").rglob("big")), "its emptyDir released")
    agent.check_empty_dir_limits()
    again = cluster.client.get("pods", "hog", "default")
    assert again["status"]["phase"] == "Failed", "an evicted pod is not started again"
    running = cluster.client.get("pods", "modest", "default")
    assert running["status"]["phase"] == "Running" and not running["status"].get("reason")


def test_readiness_probe_gates_ready_and_grace_period_escalates(cluster: Cluster) -> None:
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    # The shell ignores SIGTERM (no trap, sleep in the foreground): only SIGKILL after the grace ends it.
    cluster.apply(pod("gated", "while true; do sleep 1; done", grace=1,
                      container={"readinessProbe": {"exec": {"command": ["test", "-e", "/tmp/ready"]},
                                                    "periodSeconds": 1}}))
    running = cluster.wait_running("gated")
    assert condition(running, "Ready") != "True"
    uid = running["metadata"]["uid"]
    assert agent.runtime is not None
    container_id = agent.runtime.settings.runc.list()[0]["id"]
    code, _ = agent.runtime.settings.runc.exec(container_id, ["touch", "/tmp/ready"], timeout=30)
    assert code == 0
    cluster.wait_pod("gated", lambda p: condition(p, "Ready") == "True", "Ready after the probe passes")
    cluster.client.delete("pods", "gated", "default")
    cluster.wait_gone("pods", "gated", "default")
    assert agent.runtime.settings.runc.list() == []
    assert not (cluster.agent_dir("n1") / "pods" / uid).exists()


def test_agent_log_endpoint_serves_container_output_to_the_control_plane_only(cluster: Cluster) -> None:
    import httpx

    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    cluster.apply(pod("talker", "echo line-one; echo line-two; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"))
    cluster.wait_running("talker")
    url = f"https://127.0.0.1:{agent.port}/pods/default/talker/log"
    # The agent serves a certificate from the cluster CA and takes the control plane's client certificate.
    control_plane = httpx.Client(verify=cluster.agent_client_tls, timeout=30)

    def lines() -> list[str]:
        response = control_plane.get(url, params={"container": "main"})
        assert response.status_code == 200, response.text
        return response.text.splitlines()

    wait_until(lambda: lines()[:2] == ["line-one", "line-two"], "both lines in the log")
    # Without a client certificate, even with the admin token, the agent refuses.
    ca_only = client_context(cluster.server.ca_pem)
    assert httpx.get(url, verify=ca_only, timeout=30).status_code == 401
    assert httpx.get(url, verify=ca_only, headers={"Authorization": f"Bearer {cluster.server.token}"},
                     timeout=30).status_code == 401
    # A user's client certificate from the same CA is not the control plane's.
    cert, key = cluster.server.tls.pki.issue_client("mallory", ("devs",))
    assert httpx.get(url, verify=client_context(cluster.server.ca_pem, cert, key), timeout=30).status_code == 401
    assert control_plane.get(f"https://127.0.0.1:{agent.port}/pods/default/nobody/log").status_code == 404
    tail = control_plane.get(url, params={"tailLines": "1"}).text.splitlines()
    assert tail == ["line-two"]
    control_plane.close()


def test_a5_a_pod_sync_the_api_server_did_not_answer_is_retried_with_back_off(cluster: Cluster, monkeypatch: Any) -> None:
    """A5: the agent's first calls for a new pod fail as against an overloaded API server (the TLS
    handshake times out). Its watch has already delivered the pod, so nothing but the agent's own
    back-off brings it back: the pod still runs, after retries."""
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    real_update = agent.client.update
    refused: list[str] = []

    def overloaded_update(obj: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if (obj.get("metadata") or {}).get("name") == "flaky" and len(refused) < 2:
            refused.append(obj["metadata"]["name"])
            raise httpx.ConnectTimeout("_ssl.c:989: The handshake operation timed out")
        return real_update(obj, *args, **kwargs)

    monkeypatch.setattr(agent.client, "update", overloaded_update)
    cluster.apply(pod("flaky"))
    running = cluster.wait_running("flaky", timeout=60)
    assert refused == ["flaky", "flaky"], "the agent's calls were refused twice before it got through"
    assert AGENT_FINALIZER in running["metadata"]["finalizers"]


def test_a_running_pods_configmap_secret_and_projected_volumes_follow_their_objects_SV8(cluster: Cluster) -> None:
    """SV8: changing a ConfigMap or Secret rewrites it in the volumes of a pod that is already running, as the
    kubelet does, without restarting the container; the env var taken from the same ConfigMap keeps its value."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "live", "namespace": "default"},
                   "data": {"greeting": "one"}},
                  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "live-secret", "namespace": "default"},
                   "stringData": {"token": "first"}})
    # The container itself copies what it sees through its mounts, so the test reads the pod's view.
    script = ("trap 'exit 0' TERM; while true; do "
              "echo \"$(cat /cfg/greeting) $(cat /sec/token) $(cat /both/greeting) $GREETING\" > /out/seen.new; "
              "mv /out/seen.new /out/seen; sleep 0.2 & wait $!; done")
    cluster.apply(pod("reader", script, nodeName="n1",
                      volumes=[{"name": "cfg", "configMap": {"name": "live"}},
                               {"name": "sec", "secret": {"secretName": "live-secret"}},
                               {"name": "both", "projected": {"sources": [{"configMap": {"name": "live"}}]}},
                               {"name": "out", "emptyDir": {}}],
                      mounts_=[{"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec"},
                               {"name": "both", "mountPath": "/both"}, {"name": "out", "mountPath": "/out"}],
                      container={"env": [{"name": "GREETING",
                                          "valueFrom": {"configMapKeyRef": {"name": "live", "key": "greeting"}}}]}))
    running = cluster.wait_running("reader")
    uid = running["metadata"]["uid"]
    seen = next((cluster.agent_dir("n1") / "pods" / uid / "volumes").glob("*/out")) / "seen"
    wait_for_text(seen, "one first one one\n", "the pod's first view of its ConfigMap and Secret")
    container_id = running["status"]["containerStatuses"][0]["containerID"]

    cm = cluster.client.get("configmaps", "live", "default")
    cm["data"]["greeting"] = "two"
    cluster.client.update(cm)
    secret = cluster.client.get("secrets", "live-secret", "default")
    secret["data"]["token"] = base64.b64encode(b"second").decode()
    cluster.client.update(secret)
    wait_for_text(seen, "two second two one\n", "the changed ConfigMap and Secret in the running pod")

    status = cluster.pod("reader")["status"]
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["containerID"] == container_id
    assert status["containerStatuses"][0]["restartCount"] == 0


def test_a_configmap_pods_share_is_read_once_and_its_changes_arrive_by_watch(cluster: Cluster, monkeypatch: Any) -> None:
    """The kubelet's watch-based ConfigMap manager: the first pod that uses ``shared`` reads it, later
    pods get it from the agent's memory, a change reaches the next pod through the watch, and once no
    pod uses it the agent keeps no copy (the node would not be shown its changes any more)."""
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    reads: list[tuple[str, str]] = []
    real_get = agent.client.get

    def counting_get(resource: str, name: str, namespace: str = "") -> dict:
        if resource == "configmaps":
            reads.append((namespace, name))
        return real_get(resource, name, namespace)
    monkeypatch.setattr(agent.client, "get", counting_get)

    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "namespace": "default"},
                   "data": {"greeting": "one"}})

    def start(name: str) -> Path:
        cluster.apply(pod(name, nodeName="n1", volumes=[{"name": "cfg", "configMap": {"name": "shared"}}],
                          mounts_=[{"name": "cfg", "mountPath": "/cfg"}],
                          container={"env": [{"name": "GREETING",
                                              "valueFrom": {"configMapKeyRef": {"name": "shared", "key": "greeting"}}}]}))
        uid = cluster.wait_running(name)["metadata"]["uid"]
        return next((cluster.agent_dir("n1") / "pods" / uid / "volumes").glob("*/cfg")) / "greeting"

    assert start("first").read_text() == "one"
    # The volume and the env var: one read at most. The node's configmaps watch may relist between the
    # pod's arrival and its sync (the node is shown the object once its pod references it), and then the
    # copy comes from that list and the sync reads nothing.
    first_reads = reads.count(("default", "shared"))
    assert first_reads <= 1, reads
    assert agent.referenced.cached("configmaps", "default", "shared") is not None

    current = cluster.client.get("configmaps", "shared", "default")
    current["data"]["greeting"] = "two"
    changed = cluster.client.update(current)
    wait_until(lambda: (agent.referenced.cached("configmaps", "default", "shared") or {}).get("metadata", {})
               .get("resourceVersion") == changed["metadata"]["resourceVersion"], "the change on the agent's watch")
    assert start("second").read_text() == "two"
    assert reads.count(("default", "shared")) == first_reads, reads  # the second pod was served from memory

    for name in ("first", "second"):
        cluster.client.delete("pods", name, "default")
    for name in ("first", "second"):
        cluster.wait_gone("pods", name, "default")
    wait_until(lambda: agent.referenced.cached("configmaps", "default", "shared") is None,
               "the unused ConfigMap dropped from the agent's memory")
