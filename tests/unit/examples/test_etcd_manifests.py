"""examples/etcd: the manifests load unchanged, and each member's command line is the one etcd needs.

The last test starts three real etcd processes, each with its own /etc/hosts
bind-mounted in a private mount namespace (as a pod's containers see it), with
exactly the member command line the StatefulSet renders: they must resolve
each other's stable names through /etc/hosts and form one cluster.
"""
from __future__ import annotations

import copy
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from storage.agent.runtime.envvars import EnvContext, StaticEnvSources, command_line, resolve_env
from storage.api.defaults import apply_defaults
from storage.api.validation import validate
from storage.errors import Invalid
from support import need_programs, need_root

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "etcd"
PEERS = ",".join(f"etcd-{i}=http://etcd-{i}.etcd.default.svc.cluster.local:2380" for i in range(3))


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLE / name).read_text()) if d]


def objects() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(EXAMPLE.glob("*.yaml")):
        for doc in load(path.name):
            out[doc["kind"]] = doc
    return out


def test_every_manifest_validates_after_defaults() -> None:
    found = sorted(p.name for p in EXAMPLE.glob("*.yaml"))
    assert found == ["etcd-service.yaml", "etcd-statefulset.yaml", "local-storageclass.yaml"]
    for name in found:
        for doc in load(name):
            validate(apply_defaults(copy.deepcopy(doc)))


def test_validation_is_not_vacuous_a_broken_statefulset_is_rejected() -> None:
    sts = copy.deepcopy(objects()["StatefulSet"])
    sts["spec"]["template"]["metadata"]["labels"] = {"app": "other"}  # selector no longer matches (S1)
    with pytest.raises(Invalid):
        validate(apply_defaults(sts))


def test_service_is_headless_and_publishes_members_before_they_are_ready() -> None:
    svc = objects()["Service"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"client": 2379, "peer": 2380}
    assert svc["spec"]["selector"] == {"app": "etcd"}


def test_statefulset_shape_S1_S3() -> None:
    objs = objects()
    sts = objs["StatefulSet"]
    spec = sts["spec"]
    assert spec["replicas"] == 3 and spec["serviceName"] == objs["Service"]["metadata"]["name"]
    assert spec["podManagementPolicy"] == "Parallel"  # S3: no readiness gating, quorum needs 2 at once
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["spec"]["storageClassName"] == objs["StorageClass"]["metadata"]["name"]
    assert objs["StorageClass"]["provisioner"] == "stowage.io/local"
    (container,) = spec["template"]["spec"]["containers"]
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {claim["metadata"]["name"]: "/var/lib/etcd"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def member_pod(ordinal: int, pod_ip: str) -> dict[str, Any]:
    """The pod the StatefulSet controller makes for one ordinal (S1): name, hostname, subdomain."""
    sts = objects()["StatefulSet"]
    pod = copy.deepcopy(sts["spec"]["template"])
    name = f"etcd-{ordinal}"
    pod["metadata"].update(name=name, namespace="default")
    pod["spec"].update(hostname=name, subdomain=sts["spec"]["serviceName"])
    pod["status"] = {"podIP": pod_ip}
    return pod


def rendered_argv(ordinal: int, pod_ip: str) -> tuple[list[str], dict[str, str]]:
    pod = member_pod(ordinal, pod_ip)
    container = pod["spec"]["containers"][0]
    env = resolve_env(container, EnvContext(pod=pod, pod_ip=pod_ip, host_ip="127.0.0.1",
                                            sources=StaticEnvSources({}, {})))
    return command_line(container, env), dict(env)


def test_member_command_line_is_rendered_from_its_identity_S1() -> None:
    argv, env = rendered_argv(1, "127.1.0.7")
    assert env["POD_NAME"] == "etcd-1" and env["POD_IP"] == "127.1.0.7"
    assert argv[0] == "etcd"
    flags = dict(a[2:].split("=", 1) for a in argv[1:])
    assert flags == {
        "name": "etcd-1",
        "data-dir": "/var/lib/etcd/data",
        "listen-peer-urls": "http://127.1.0.7:2380",
        "listen-client-urls": "http://127.1.0.7:2379",
        "advertise-client-urls": "http://etcd-1.etcd.default.svc.cluster.local:2379",
        "initial-advertise-peer-urls": "http://etcd-1.etcd.default.svc.cluster.local:2380",
        "initial-cluster": PEERS,
        "initial-cluster-state": "new",
        "initial-cluster-token": "etcd-stowage-example",
        "quota-backend-bytes": "536870912",
        "auto-compaction-mode": "revision",
        "auto-compaction-retention": "1000",
    }
    assert "127.0.0.1" not in " ".join(argv)  # members share the host network: no shared listen address


def test_every_member_advertises_the_entry_the_initial_cluster_gives_it() -> None:
    for ordinal in range(3):
        argv, _ = rendered_argv(ordinal, f"127.1.0.{ordinal + 10}")
        flags = dict(a[2:].split("=", 1) for a in argv[1:])
        members = dict(entry.split("=", 1) for entry in flags["initial-cluster"].split(","))
        assert members[flags["name"]] == flags["initial-advertise-peer-urls"]


# ---- a real three-member cluster through per-member /etc/hosts files ---------------------------

@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[tuple[str, subprocess.Popen[bytes], Path]]]:
    need_root("each member gets /etc/hosts bind-mounted in its own mount namespace")
    need_programs("etcd", "etcdctl", "unshare")
    # A random /24 of 127/8 outside the agent's 127.1/16, so a concurrently running node cannot clash.
    base = f"127.{random.randint(60, 250)}.{random.randint(1, 250)}"
    ips = [f"{base}.{i + 1}" for i in range(3)]
    hosts_lines = ["127.0.0.1\tlocalhost"] + [
        f"{ip}\tetcd-{i}.etcd.default.svc.cluster.local\tetcd-{i}.etcd\tetcd-{i}" for i, ip in enumerate(ips)]
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for i, ip in enumerate(ips):
            member_dir = tmp_path / f"etcd-{i}"
            (member_dir / "data").mkdir(parents=True)
            hosts = member_dir / "hosts"
            hosts.write_text("\n".join(hosts_lines) + "\n")
            argv, _ = rendered_argv(i, ip)
            argv = [a.replace("/var/lib/etcd/data", str(member_dir / "data")) for a in argv]
            script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
            log = open(member_dir / "log", "wb")
            proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                     str(hosts), *argv], stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            log.close()
            procs.append((ip, proc, member_dir))
        yield procs
    finally:
        for _, proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, _ in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _etcdctl(ip: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["etcdctl", "--endpoints", f"http://{ip}:2379", "--command-timeout=5s", *args],
                          capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)


@pytest.mark.root
@pytest.mark.slow
def test_members_resolve_peers_through_etc_hosts_and_form_one_cluster(members: list[tuple[str, subprocess.Popen[bytes], Path]]) -> None:
    ips = [ip for ip, _, _ in members]
    deadline = time.monotonic() + 120
    while True:
        health = [_etcdctl(ip, "endpoint", "health") for ip in ips]
        if all(r.returncode == 0 for r in health):
            break
        dead = [(d, p.returncode) for _, p, d in members if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {d.name}\n{(d / 'log').read_text()[-3000:]}" for _, _, d in members)
            pytest.fail(f"cluster not healthy (exited: {dead}):\n{[r.stderr for r in health]}\n{logs}")
        time.sleep(0.5)
    listing = _etcdctl(ips[0], "member", "list")
    assert listing.returncode == 0, listing.stderr
    names = sorted(line.split(", ")[2] for line in listing.stdout.strip().splitlines())
    assert names == ["etcd-0", "etcd-1", "etcd-2"]
    assert "etcd-2.etcd.default.svc.cluster.local:2380" in listing.stdout
    assert _etcdctl(ips[0], "put", "greeting", "hello").returncode == 0
    got = _etcdctl(ips[2], "get", "--print-value-only", "greeting")
    assert got.returncode == 0 and got.stdout.strip() == "hello"
