"""pods/exec, pods/attach, pods/portforward, pods/log options and the metrics API, end to end:
real runc pods on a real agent, reached through the API server with the official
``kubernetes`` Python client (WebSocket v4 channels) and the real kubectl binary
(WebSocket v5 channels, SPDY-in-WebSocket port-forward)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.stream import stream as k8s_stream

from agent_cluster import Cluster, claim, local_class
from agent_cluster import pod as claim_pod
from storage.agent.agent import NodeAgent

from support import kubectl_binary, wait_for



@pytest.fixture
def node(cluster: Cluster) -> NodeAgent:
    """One agent under its own node identity (bootstrap token, CSRs), as ``stowage agent`` runs; the
    controllers give each namespace its default ServiceAccount, whose token every pod mounts."""
    cluster.start_controllers()
    return cluster.add_agent("n1")


@pytest.fixture
def core(cluster: Cluster) -> Iterator[k8s.CoreV1Api]:
    api_client = k8s_config.new_client_from_config(config_file=str(cluster.server.kubeconfig))
    try:
        yield k8s.CoreV1Api(api_client)
    finally:
        api_client.close()


@pytest.fixture
def kubeconfig(cluster: Cluster) -> Path:
    """The kubeconfig the HTTPS API server writes (admin token, cluster CA): kubectl runs with it and no flags."""
    assert cluster.server.kubeconfig is not None and cluster.server.url.startswith("https://")
    return cluster.server.kubeconfig


def kubectl_env(kubeconfig: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["KUBECONFIG"] = str(kubeconfig)
    return env


def kubectl(kubeconfig: Path, *args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([kubectl_binary(), *args], input=input, capture_output=True, timeout=timeout, env=kubectl_env(kubeconfig))


def pod(name: str, command: list[str], **container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": "debian:12", "command": command,
                 "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}], **container}]}}


def run_pod(cluster: Cluster, name: str, command: list[str], **container: Any) -> dict[str, Any]:
    cluster.apply(pod(name, command, **container))
    return cluster.wait_running(name)


# ---- exec ----------------------------------------------------------------------------------

def test_exec_with_the_kubernetes_client_stdout_stderr_and_exit_code(cluster: Cluster, node: NodeAgent,
                                                                      core: k8s.CoreV1Api) -> None:
    run_pod(cluster, "shell", ["sleep", "1d"], workingDir="/tmp",
            securityContext={"runAsUser": 1000, "allowPrivilegeEscalation": False})
    resp = k8s_stream(core.connect_get_namespaced_pod_exec, "shell", "default",
                      command=["sh", "-c", "echo out; echo err >&2; pwd; id -u; grep NoNewPrivs /proc/self/status; exit 3"],
                      stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=60)
    # The container's own process spec: working directory, user, no new privileges.
    assert resp.read_stdout() == "out\n/tmp\n1000\nNoNewPrivs:\t1\n"
    assert resp.read_stderr() == "err\n"
    assert resp.returncode == 3
    # A command that looks like runc's own options is run as a command, never read as options.
    sneaky = k8s_stream(core.connect_get_namespaced_pod_exec, "shell", "default", command=["--user", "0", "id", "-u"],
                        stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    sneaky.run_forever(timeout=60)
    assert sneaky.read_stdout() == ""
    status = json.loads(sneaky.read_channel(3))  # CT6: runc could not start "--user": containerd's InternalError
    assert status["reason"] == "InternalError" and status["code"] == 500
    assert 'exec: "--user": executable file not found in $PATH: unknown' in status["message"]
    ok = k8s_stream(core.connect_get_namespaced_pod_exec, "shell", "default", command=["true"],
                    stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    ok.run_forever(timeout=60)
    assert ok.returncode == 0


def test_kubectl_exec_stdout_stderr_exit_code_and_stdin(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    run_pod(cluster, "shell", ["sleep", "1d"])
    done = kubectl(kubeconfig, "exec", "shell", "--", "sh", "-c", "echo hello; echo oops >&2; exit 7")
    assert done.stdout == b"hello\n"
    assert done.stderr.startswith(b"oops\n")
    assert done.returncode == 7  # kubectl exits with the command's code (NonZeroExitCode cause)
    # stdin reaches the command and its end reaches it too (v5's close signal): wc ends.
    counted = kubectl(kubeconfig, "exec", "-i", "shell", "--", "wc", "-c", input=b"x" * 100000)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip() == b"100000"


def test_kubectl_exec_with_a_terminal(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    run_pod(cluster, "shell", ["sleep", "1d"])
    # kubectl wants a terminal of its own for -t; `script` gives it one.
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) is not installed")
    env = kubectl_env(kubeconfig)
    command = f"{kubectl_binary()} exec -it shell -- sh -c 'tty; stty size; exit 4'"
    done = subprocess.run(["script", "-qec", command, "/dev/null"], input=b"", capture_output=True, timeout=120, env=env)
    out = done.stdout.replace(b"\r", b"")
    assert b"/dev/pts/" in out, out
    assert done.returncode == 4, out


def test_kubectl_cp_both_ways(cluster: Cluster, node: NodeAgent, kubeconfig: Path, tmp_path: Path) -> None:
    run_pod(cluster, "box", ["sleep", "1d"])
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(300_000))
    up = kubectl(kubeconfig, "cp", str(local), "default/box:/tmp/payload.bin")
    assert up.returncode == 0, up.stderr
    sums = kubectl(kubeconfig, "exec", "box", "--", "sha256sum", "/tmp/payload.bin")
    assert sums.stdout.split()[0].decode() == hashlib.sha256(local.read_bytes()).hexdigest()
    back = tmp_path / "back.bin"
    down = kubectl(kubeconfig, "cp", "default/box:/tmp/payload.bin", str(back))
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == local.read_bytes()


def test_exec_errors_are_statuses(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    missing = kubectl(kubeconfig, "exec", "nope", "--", "true")
    assert missing.returncode != 0
    assert b'pods "nope" not found' in missing.stderr
    run_pod(cluster, "shell", ["sleep", "1d"])
    wrong = kubectl(kubeconfig, "exec", "shell", "-c", "other", "--", "true")
    assert b"container other is not valid for pod shell" in wrong.stderr


def test_ct6_a_command_that_cannot_start_is_containerds_internal_error(cluster: Cluster, node: NodeAgent,
                                                                       kubeconfig: Path) -> None:
    """CT6: a command runc cannot start ends kubectl exec as on a containerd node: `error: Internal error occurred:
    ... OCI runtime exec failed: ...: unknown`, exit code 1, nothing on stdout; a command that ran and exited 255
    still gives 255 and its own output, with or without a terminal."""
    run_pod(cluster, "shell", ["sleep", "1d"])
    for command, error in ((["nosuch"], 'exec: "nosuch": executable file not found in $PATH'),
                           (["/nosuch"], 'exec: "/nosuch": stat /nosuch: no such file or directory'),
                           (["/etc/passwd"], 'exec: "/etc/passwd": permission denied')):
        done = kubectl(kubeconfig, "exec", "shell", "--", *command)
        assert done.returncode == 1, done
        assert done.stdout == b""
        line = done.stderr.decode().strip()
        assert line.startswith("error: Internal error occurred: error executing command in container: failed to exec "
                               'in container: failed to start exec "'), line
        assert line.endswith(f'": OCI runtime exec failed: exec failed: unable to start container process: {error}: '
                             "unknown"), line
    ran = kubectl(kubeconfig, "exec", "shell", "--", "sh", "-c", """echo 'time="x' >&2; echo out; exit 255""")
    assert (ran.returncode, ran.stdout) == (255, b"out\n") and ran.stderr.startswith(b'time="x\n'), ran
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) is not installed")
    command = f"{kubectl_binary()} exec -it shell -- nosuch"
    done = subprocess.run(["script", "-qec", command, "/dev/null"], input=b"", capture_output=True, timeout=120,
                          env=kubectl_env(kubeconfig))
    out = done.stdout.replace(b"\r", b"")
    assert done.returncode == 1, out
    assert b'OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuch": executable ' \
           b"file not found in $PATH: unknown" in out, out


# ---- attach --------------------------------------------------------------------------------

def test_attach_sees_output_and_feeds_stdin(cluster: Cluster, node: NodeAgent, core: k8s.CoreV1Api) -> None:
    # The container echoes each line it reads, so what we send comes back through its log.
    run_pod(cluster, "echo", ["sh", "-c", "echo ready; while read line; do echo \"got $line\"; done"], stdin=True)
    resp = k8s_stream(core.connect_get_namespaced_pod_attach, "echo", "default",
                      stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    try:
        resp.write_stdin("ping\n")
        seen = ""
        deadline = time.monotonic() + 60
        while "got ping" not in seen and resp.is_open() and time.monotonic() < deadline:
            resp.update(timeout=1)
            seen += resp.read_stdout() or ""
        assert "got ping" in seen
        assert "ready" not in seen  # attach starts at the end of what was written before
    finally:
        resp.close()


def test_kubectl_attach_ends_with_the_container(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    run_pod(cluster, "talker", ["sh", "-c", "read x; echo \"bye $x\"; exit 0"], stdin=True)
    done = kubectl(kubeconfig, "attach", "-i", "talker", input=b"now\n")
    assert b"bye now" in done.stdout, done.stderr


# ---- port-forward --------------------------------------------------------------------------

@contextlib.contextmanager
def port_forward(kubeconfig: Path, target: str, remote: int) -> Iterator[int]:
    proc = subprocess.Popen([kubectl_binary(), "port-forward", target, f":{remote}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=kubectl_env(kubeconfig), start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # "Forwarding from 127.0.0.1:PORT -> REMOTE"
        assert line.startswith("Forwarding from 127.0.0.1:"), line + proc.stderr.read(20000).decode()  # type: ignore[union-attr]
        yield int(line.split(":")[1].split()[0])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_kubectl_port_forward_carries_real_bytes(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    served = "served.txt"
    run_pod(cluster, "web", ["sh", "-c", f"cd /tmp && head -c 200000 /dev/urandom > {served} && sha256sum {served} > sum "
                                         "&& exec python3 -m http.server 8080 --bind \"$POD_IP\""])
    expected = wait_for(lambda: kubectl(kubeconfig, "exec", "web", "--", "cat", "/tmp/sum").stdout.split()[:1],
                        "the pod's checksum")[0].decode()
    with port_forward(kubeconfig, "pod/web", 8080) as local:
        for _ in range(3):  # each request is a new forwarded connection (a new stream pair)
            body = wait_for(lambda: _fetch(f"http://127.0.0.1:{local}/{served}"), "the file through the tunnel")
            assert hashlib.sha256(body).hexdigest() == expected


def _fetch(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()  # type: ignore[no-any-return]
    except OSError:
        return None


def test_port_forward_to_a_closed_port_reports_the_error(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    run_pod(cluster, "quiet", ["sleep", "1d"])
    with port_forward(kubeconfig, "pod/quiet", 9) as local:
        with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
            conn.settimeout(30)
            assert conn.recv(100) == b""  # the connection closes: nothing listens in the pod


# ---- logs ----------------------------------------------------------------------------------

def _log(cluster: Cluster, name: str, **params: str) -> httpx.Response:
    return httpx.get(f"{cluster.server.url}/api/v1/namespaces/default/pods/{name}/log", params=params,
                     headers={"Authorization": f"Bearer {cluster.server.token}"}, timeout=60, verify=cluster.server.verify())


def test_log_options(cluster: Cluster, node: NodeAgent) -> None:
    # Three lines, a pause long enough to tell them apart by time, then two more.
    run_pod(cluster, "talk", ["sh", "-c", "echo one; echo two; echo three; sleep 2; echo four; echo five; sleep 1d"])
    full = wait_for(lambda: (r := _log(cluster, "talk")).text.count("\n") == 5 and r, "five lines")
    assert full.text == "one\ntwo\nthree\nfour\nfive\n"
    assert _log(cluster, "talk", tailLines="2").text == "four\nfive\n"
    assert _log(cluster, "talk", limitBytes="6").text == "one\ntw"
    stamped = _log(cluster, "talk", timestamps="true").text.splitlines()
    times = [datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00")[:26] + "+00:00") for line in stamped]
    assert [line.split(" ", 1)[1] for line in stamped] == ["one", "two", "three", "four", "five"]
    assert times == sorted(times) and times[3] - times[2] >= timedelta(seconds=1)
    # sinceTime between the two groups keeps only the later lines; sinceSeconds as well once old enough.
    between = (times[2] + (times[3] - times[2]) / 2).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert _log(cluster, "talk", sinceTime=between).text == "four\nfive\n"
    age = (datetime.now(timezone.utc) - times[0]).total_seconds()
    assert _log(cluster, "talk", sinceSeconds=str(int(age) + 60)).text == full.text


def test_log_option_errors_are_statuses(cluster: Cluster, node: NodeAgent) -> None:
    run_pod(cluster, "talk", ["sleep", "1d"])
    bad = _log(cluster, "talk", tailLines="-1")
    assert bad.status_code == 422
    assert bad.json()["kind"] == "Status" and bad.json()["reason"] == "Invalid"
    assert bad.json()["message"] == 'PodLogOptions "talk" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0'
    both = _log(cluster, "talk", sinceSeconds="5", sinceTime="2024-01-01T00:00:00Z")
    assert both.status_code == 422 and "at most one of `sinceTime` or `sinceSeconds`" in both.json()["message"]
    prev = _log(cluster, "talk", previous="true")
    assert prev.status_code == 400
    assert prev.json()["message"] == 'previous terminated container "main" in pod "talk" not found'


def test_previous_log_after_a_restart(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    crash = pod("crash", ["sh", "-c", "if [ -e /state/ran ]; then echo second; sleep 1d; fi; "
                                      "touch /state/ran; echo first; exit 1"],
                volumeMounts=[{"name": "state", "mountPath": "/state"}])
    crash["spec"]["volumes"] = [{"name": "state", "emptyDir": {}}]  # outlives a restart
    cluster.apply(crash)
    cluster.wait_pod("crash", lambda p: any(cs.get("restartCount", 0) >= 1 and "running" in (cs.get("state") or {})
                                            for cs in (p.get("status") or {}).get("containerStatuses") or []),
                     "restarted and running")
    assert wait_for(lambda: _log(cluster, "crash").text == "second\n", "the current run's log")
    assert _log(cluster, "crash", previous="true").text == "first\n"
    assert kubectl(kubeconfig, "logs", "crash", "--previous").stdout == b"first\n"


def test_kubectl_logs_follow_and_timestamps(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    run_pod(cluster, "count", ["sh", "-c", "for i in 1 2 3; do echo line$i; done; sleep 1d"])
    wait_for(lambda: _log(cluster, "count").text.count("\n") == 3, "three lines")
    shown = kubectl(kubeconfig, "logs", "count", "--timestamps", "--tail", "1").stdout.decode()
    stamp, text = shown.rstrip("\n").split(" ", 1)
    assert text == "line3" and stamp.endswith("Z") and len(stamp) == 30
    proc = subprocess.Popen([kubectl_binary(), "logs", "-f", "count"], stdout=subprocess.PIPE,
                            env=kubectl_env(kubeconfig), start_new_session=True)
    try:
        assert proc.stdout is not None
        assert [proc.stdout.readline() for _ in range(3)] == [b"line1\n", b"line2\n", b"line3\n"]
        kubectl(kubeconfig, "exec", "count", "--", "sh", "-c", "echo later > /proc/1/fd/1")
        assert proc.stdout.readline() == b"later\n"  # follow streams what comes after
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


# ---- metrics -------------------------------------------------------------------------------

def test_metrics_api_and_kubectl_top(cluster: Cluster, node: NodeAgent, kubeconfig: Path) -> None:
    run_pod(cluster, "busy", ["python3", "-c", "b = bytearray(40 << 20)\nwhile True: pass"])
    headers = {"Authorization": f"Bearer {cluster.server.token}"}
    groups = httpx.get(f"{cluster.server.url}/apis", headers=headers, verify=cluster.server.verify()).json()["groups"]
    assert "metrics.k8s.io" in [g["name"] for g in groups]

    def usage() -> dict[str, Any] | None:
        got = httpx.get(f"{cluster.server.url}/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy",
                        headers=headers, timeout=60, verify=cluster.server.verify())
        assert got.status_code == 200, got.text
        container = got.json()["containers"][0]["usage"]
        memory_ki = int(container["memory"].removesuffix("Ki"))
        return container if memory_ki > 40 * 1024 else None  # its 40 MiB are in the working set

    container = wait_for(usage, "the pod's working set to include its buffer")
    nanocores = int(container["cpu"].removesuffix("n"))
    assert 100_000_000 < nanocores < 1_100_000_000 * (os.cpu_count() or 1)  # a busy loop: about one core
    nodes = httpx.get(f"{cluster.server.url}/apis/metrics.k8s.io/v1beta1/nodes", headers=headers, timeout=60, verify=cluster.server.verify()).json()
    assert nodes["kind"] == "NodeMetricsList" and [n["metadata"]["name"] for n in nodes["items"]] == ["n1"]
    assert int(nodes["items"][0]["usage"]["memory"].removesuffix("Ki")) > 0
    missing = httpx.get(f"{cluster.server.url}/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
                        headers=headers, timeout=60, verify=cluster.server.verify())
    assert missing.status_code == 404 and missing.json()["message"] == 'podmetrics.metrics.k8s.io "default/nope" not found'

    top_pod = kubectl(kubeconfig, "top", "pod", "busy", "--no-headers")
    assert top_pod.returncode == 0, top_pod.stderr
    name, cpu, memory = top_pod.stdout.decode().split()
    assert name == "busy" and cpu.endswith("m") and memory.endswith("Mi") and int(memory[:-2]) >= 40
    top_node = kubectl(kubeconfig, "top", "node", "--no-headers")
    assert top_node.returncode == 0, top_node.stderr
    assert top_node.stdout.decode().split()[0] == "n1"


def test_node_proxy_stats_summary_and_metrics_report_a_claims_usage_with_kubectl(cluster: Cluster, node: NodeAgent,
                                                                      kubeconfig: Path) -> None:
    """N6: ``kubectl get --raw /api/v1/nodes/NAME/proxy/stats/summary`` returns the node agent's summary, whose
    pod entries carry each mounted volume's usage as the kubelet's do (statfs of its mount; ``pvcRef`` for a
    claim), and ``.../proxy/metrics`` the kubelet's ``kubelet_volume_stats_*`` gauges, which alerts on a
    filling claim read. No path that reaches a pod's processes is proxied; ``nodes/proxy`` is authorized."""
    cluster.apply(local_class(), claim("data", size="64Mi"),
                  claim_pod("filler", "head -c 10485760 /dev/zero > /data/blob; sync; touch /data/done; "
                                      "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                            claims={"data": "/data"}))
    cluster.wait_running("filler")

    def data_volume() -> dict[str, Any] | None:
        raw = kubectl(kubeconfig, "get", "--raw", "/api/v1/nodes/n1/proxy/stats/summary")
        assert raw.returncode == 0, raw.stderr
        summary = json.loads(raw.stdout)
        assert summary["node"]["nodeName"] == "n1"
        entry = next((p for p in summary["pods"] if p["podRef"]["name"] == "filler"), None)
        volume = next((v for v in (entry or {}).get("volume") or [] if v["name"] == "data"), None)
        return volume if volume is not None and volume["usedBytes"] >= 10 << 20 else None

    volume = wait_for(data_volume, "the claim's usage to include the 10 MiB written")
    assert volume["pvcRef"] == {"name": "data", "namespace": "default"}
    assert 48 << 20 < volume["capacityBytes"] <= 64 << 20  # a 64 MiB ext4 volume, less its metadata
    assert volume["availableBytes"] <= volume["capacityBytes"] - volume["usedBytes"]
    assert volume["inodes"] > volume["inodesFree"] > 0 and volume["inodesUsed"] == volume["inodes"] - volume["inodesFree"]

    # The kubelet's gauges for the claim, in the Prometheus text format (read with Prometheus' own parser).
    scraped = kubectl(kubeconfig, "get", "--raw", "/api/v1/nodes/n1/proxy/metrics")
    assert scraped.returncode == 0, scraped.stderr
    gauges = {(sample.name, sample.labels.get("namespace"), sample.labels.get("persistentvolumeclaim")): sample.value
              for family in text_string_to_metric_families(scraped.stdout.decode()) for sample in family.samples}
    claim_key = ("default", "data")
    assert gauges[("kubelet_volume_stats_capacity_bytes", *claim_key)] == volume["capacityBytes"]
    assert gauges[("kubelet_volume_stats_used_bytes", *claim_key)] >= 10 << 20
    assert gauges[("kubelet_volume_stats_available_bytes", *claim_key)] > 0
    assert gauges[("kubelet_volume_stats_inodes", *claim_key)] == volume["inodes"]
    assert gauges[("kubelet_volume_stats_inodes_used", *claim_key)] >= 1
    assert gauges[("kubelet_volume_stats_inodes_free", *claim_key)] > 0

    other = kubectl(kubeconfig, "get", "--raw", "/api/v1/nodes/n1/proxy/run/default/filler/c")
    assert other.returncode != 0, other.stdout
    assert b"serves configz, healthz, metrics, metrics/resource, pods, stats/summary only" in other.stderr, other.stderr
    posted = kubectl(kubeconfig, "create", "--raw", "/api/v1/nodes/n1/proxy/stats/summary", "-f", "-", input=b"{}")
    assert posted.returncode != 0 and b"POST is not supported on nodes/proxy" in posted.stderr, posted.stderr
    missing = kubectl(kubeconfig, "get", "--raw", "/api/v1/nodes/nope/proxy/stats/summary")
    assert missing.returncode != 0 and b'nodes "nope" not found' in missing.stderr
    denied = kubectl(kubeconfig, "get", "--raw", "/api/v1/nodes/n1/proxy/stats/summary", "--as=alice")
    assert denied.returncode != 0
    assert b'User "alice" cannot get resource "nodes/proxy"' in denied.stderr, denied.stderr


def test_node_proxy_pods_configz_healthz_and_resource_metrics_with_kubectl(cluster: Cluster, node: NodeAgent,
                                                                          kubeconfig: Path) -> None:
    """N6: the kubelet's other read-only paths through ``nodes/NAME/proxy``: ``healthz``; ``pods`` (the pods the
    agent runs, as a PodList); ``configz`` (its settings under the kubelet's field names); ``metrics/resource``
    (what metrics-server scrapes: cumulative CPU seconds and working sets of the node, each pod and each
    container, read here with Prometheus' own parser)."""
    run_pod(cluster, "spinner", ["sh", "-c", "trap 'exit 0' TERM; while true; do i=0; while [ $i -lt 20000 ]; "
                                             "do i=$((i+1)); done; sleep 0.2 & wait $!; done"])

    health = kubectl(kubeconfig, "get", "--raw", "/api/v1/nodes/n1/proxy/healthz")
    assert health.returncode == 0 and health.stdout == b"ok", health.stderr

    listed = kubectl(kubeconfig, "get", "--raw", "/api/v1/nodes/n1/proxy/pods")
    assert listed.returncode == 0, listed.stderr
    pods = json.loads(listed.stdout)
    assert pods["kind"] == "PodList"
    spinner = next(p for p in pods["items"] if p["metadata"]["name"] == "spinner")
    assert spinner["spec"]["nodeName"] == "n1" and spinner["metadata"]["namespace"] == "default"

    configz = kubectl(kubeconfig, "get", "--raw", "/api/v1/nodes/n1/proxy/configz")
    assert configz.returncode == 0, configz.stderr
    config = json.loads(configz.stdout)["kubeletconfig"]
    assert config["containerLogMaxFiles"] == node.config.container_log_max_files
    assert config["containerLogMaxSize"] == "10Mi" and config["maxPods"] == 1000
    assert config["nodeStatusReportFrequency"] == "5m0s" and config["port"] == node.port

    def resource_samples() -> dict[tuple[str, str, str], float] | None:
        raw = kubectl(kubeconfig, "get", "--raw", "/api/v1/nodes/n1/proxy/metrics/resource")
        assert raw.returncode == 0, raw.stderr
        samples = {(s.name, s.labels.get("pod", ""), s.labels.get("container", "")): s.value
                   for family in text_string_to_metric_families(raw.stdout.decode()) for s in family.samples}
        cpu = samples.get(("container_cpu_usage_seconds_total", "spinner", "main"), 0.0)
        return samples if cpu > 0.05 else None

    samples = wait_for(resource_samples, "the spinner's CPU time to show in /metrics/resource")
    assert samples[("container_memory_working_set_bytes", "spinner", "main")] > 0
    assert samples[("pod_cpu_usage_seconds_total", "spinner", "")] >= samples[("container_cpu_usage_seconds_total",
                                                                                 "spinner", "main")]
    assert samples[("pod_memory_working_set_bytes", "spinner", "")] > 0
    assert samples[("node_cpu_usage_seconds_total", "", "")] > samples[("pod_cpu_usage_seconds_total", "spinner", "")]
    assert samples[("node_memory_working_set_bytes", "", "")] > 0
    assert samples[("scrape_error", "", "")] == 0
