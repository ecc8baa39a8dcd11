"""Pod runtime against real runc containers (overlay of the host's /, private mount/UTS/PID/IPC namespaces)."""
from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from storage.agent.runtime import StaticEnvSources
from support import wait_for

SLEEP = ["sleep", "1000"]


def make_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    for c in containers:
        c.setdefault("image", "debian:12")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": spec.pop("namespace", "default"), "uid": str(uuid.uuid4()),
                     "labels": spec.pop("labels", {}), "annotations": spec.pop("annotations", {})},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1, "containers": containers, **spec},
    }


NO_SOURCES = StaticEnvSources({}, {})


def cstatus(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in status["containerStatuses"] if c["name"] == name)


def condition(status: dict[str, Any], kind: str) -> str:
    return next(c["status"] for c in status["conditions"] if c["type"] == kind)


def terminated(status: dict[str, Any], name: str) -> dict[str, Any] | None:
    return cstatus(status, name)["state"].get("terminated")


def runc_exec(rt: Any, uid: str, container: str, argv: list[str]) -> tuple[int, str]:
    code, out = rt.settings.runc.exec(f"stowage-{uid}-{container}", argv, 10)
    return code, out.decode()


def uid_of(pod: dict[str, Any]) -> str:
    return pod["metadata"]["uid"]


# ---- volumes -------------------------------------------------------------------------------

def test_two_containers_share_a_volume_at_its_mount_path(harness, tmp_path):
    """A5: a pod's volume (host dir) is bind-mounted into each container; the host root is untouched."""
    rt = harness.runtime()
    shared = tmp_path / "shared"
    shared.mkdir()
    mount_path = f"/stowage-test-{uuid.uuid4().hex[:8]}"
    pod = make_pod("share", [
        {"name": "writer", "command": ["sh", "-c", f"echo hello > {mount_path}/a; exec sleep 1000"],
         "volumeMounts": [{"name": "data", "mountPath": mount_path}]},
        {"name": "reader", "command": ["sh", "-c",
                                       f"while [ ! -f {mount_path}/a ]; do sleep 0.05; done; "
                                       f"cat {mount_path}/a > {mount_path}/b; exec sleep 1000"],
         "volumeMounts": [{"name": "data", "mountPath": mount_path}]},
    ])
    rt.sync_pod(pod, {"data": str(shared)}, NO_SOURCES, [])
    harness.wait(rt, uid_of(pod), lambda s: (shared / "b").exists() and (shared / "b").read_text() == "hello\n",
                 "reader to copy the writer's file")
    status = rt.pod_status(uid_of(pod))
    assert status["phase"] == "Running"
    assert condition(status, "Ready") == "True"
    assert not os.path.exists(mount_path), "the mountPath must be created in the container's overlay, not on the host"


def test_read_only_mount_rejects_writes(harness, tmp_path):
    """volumeMounts[].readOnly: writes fail inside the container, nothing reaches the host dir."""
    rt = harness.runtime()
    (tmp_path / "ro").mkdir()
    pod = make_pod("ro", [{"name": "c", "command": ["sh", "-c", "touch /ro/x && exit 0 || exit 7"],
                           "volumeMounts": [{"name": "v", "mountPath": "/ro", "readOnly": True}]}],
                   restartPolicy="Never")
    rt.sync_pod(pod, {"v": str(tmp_path / "ro")}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: s["phase"] == "Failed", "Failed phase")
    assert terminated(status, "c")["exitCode"] == 7
    assert not (tmp_path / "ro" / "x").exists()


def test_sub_path_is_resolved_under_the_volume_and_escapes_are_refused(harness, tmp_path):
    rt = harness.runtime()
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "escape").symlink_to(tmp_path)
    ok = make_pod("sub", [{"name": "c", "command": ["sh", "-c", "echo in > /d/f"], "env": [{"name": "SUB", "value": "x"}],
                           "volumeMounts": [{"name": "v", "mountPath": "/d", "subPathExpr": "$(SUB)/y"}]}],
                  restartPolicy="Never")
    rt.sync_pod(ok, {"v": str(vol)}, NO_SOURCES, [])
    harness.wait(rt, uid_of(ok), lambda s: s["phase"] == "Succeeded", "Succeeded")
    assert (vol / "x" / "y" / "f").read_text() == "in\n"

    bad = make_pod("bad", [{"name": "c", "command": SLEEP,
                            "volumeMounts": [{"name": "v", "mountPath": "/d", "subPath": "escape/z"}]}])
    status = rt.sync_pod(bad, {"v": str(vol)}, NO_SOURCES, [])
    waiting = cstatus(status, "c")["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "subPath" in waiting["message"] and "outside the volume" in waiting["message"]
    assert not (tmp_path / "z").exists()
    assert status["phase"] == "Pending"


# ---- environment, identity -------------------------------------------------------------------

def test_a_subpath_into_a_configmap_volume_follows_only_the_atomic_writers_own_links(harness, tmp_path):
    """A key of a ConfigMap volume is reached through the writer's ``key -> ..data/key`` and ``..data -> ..<time>``
    links; a link of another shape in such a volume (one a writer never makes), or the same layout in a volume
    of another type, is refused as any symbolic link in a subPath is."""
    rt = harness.runtime()
    vol = tmp_path / "cfg"
    (vol / "..2026_12_06_00_00_00.1").mkdir(parents=True)
    (vol / "..2026_12_06_00_00_00.1" / "app.conf").write_text("conf\n")
    (vol / "..data").symlink_to("..2026_12_06_00_00_00.1")
    (vol / "app.conf").symlink_to("..data/app.conf")
    (vol / "rogue").symlink_to(tmp_path)  # not ..data/rogue
    (vol / "other").symlink_to("..data/app.conf")  # not ..data/other
    cm = [{"name": "v", "configMap": {"name": "x"}}]
    ok = make_pod("cm-sub", [{"name": "c", "command": ["sh", "-c", "cat /d > /out/seen"],
                              "volumeMounts": [{"name": "v", "mountPath": "/d", "subPath": "app.conf"},
                                               {"name": "o", "mountPath": "/out"}]}],
                  restartPolicy="Never", volumes=cm + [{"name": "o", "emptyDir": {}}])
    out = tmp_path / "out"
    out.mkdir()
    rt.sync_pod(ok, {"v": str(vol), "o": str(out)}, NO_SOURCES, [])
    harness.wait(rt, uid_of(ok), lambda s: s["phase"] == "Succeeded", "Succeeded")
    assert (out / "seen").read_text() == "conf\n"
    for name, sub, volumes in (("rogue", "rogue/z", cm), ("other", "other", cm),
                               ("plain", "app.conf", [{"name": "v", "emptyDir": {}}])):
        bad = make_pod(name, [{"name": "c", "command": SLEEP,
                               "volumeMounts": [{"name": "v", "mountPath": "/d", "subPath": sub}]}], volumes=volumes)
        waiting = cstatus(rt.sync_pod(bad, {"v": str(vol)}, NO_SOURCES, []), "c")["state"]["waiting"]
        assert waiting["reason"] == "CreateContainerConfigError" and "symbolic link" in waiting["message"], (name, waiting)
    assert not (tmp_path / "z").exists()


def test_env_field_refs_config_maps_secrets_env_from_and_expansion(harness):
    rt = harness.runtime()
    sources = StaticEnvSources(
        config_maps={("team", "cfg"): {"data": {"mode": "fast", "LEVEL": "3", "bad-name!": "skip"}}},
        secrets={("team", "sec"): {"data": {"password": base64.b64encode(b"s3cret").decode(),
                                            "TOKEN": base64.b64encode(b"tok").decode()}}},
    )
    pod = make_pod("envpod", [{
        "name": "c",
        "command": ["sh", "-c", "env; echo ARGS=$0 $1", "$(GREETING)", "$$(GREETING)"],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}, {"secretRef": {"name": "sec"}},
                    {"configMapRef": {"name": "missing", "optional": True}}],
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": True}}},
            {"name": "GREETING", "value": "hi-$(NAME)-$(UNDEFINED)"},
            {"name": "ESCAPED", "value": "$$(NAME)"},
        ],
        "resources": {"limits": {"memory": "64Mi"}},
    }], restartPolicy="Never", namespace="team", labels={"app": "db"})
    rt.sync_pod(pod, {}, sources, [])
    harness.wait(rt, uid_of(pod), lambda s: s["phase"] == "Succeeded", "Succeeded")
    lines = list(rt.logs(uid_of(pod), "c"))
    env = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("ARGS="))
    assert env["NAME"] == "envpod" and env["NS"] == "team" and env["UID"] == uid_of(pod)
    assert env["APP"] == "db" and env["NODE"] == "node-1" and env["MEM"] == "64"
    assert env["POD_IP"] == rt.pod_ip(uid_of(pod)) == rt.pod_status(uid_of(pod))["podIP"]
    assert env["MODE"] == "fast" and env["CM_mode"] == "fast" and env["CM_LEVEL"] == "3"
    assert env["PASSWORD"] == "s3cret" and env["TOKEN"] == "tok"
    assert "OPT" not in env and not any(k.startswith("CM_bad") for k in env)
    assert env["GREETING"] == "hi-envpod-$(UNDEFINED)"
    assert env["ESCAPED"] == "$(NAME)"
    assert "ARGS=hi-envpod-$(UNDEFINED) $(GREETING)" in lines


def test_missing_config_map_is_a_config_error_until_it_appears(harness):
    rt = harness.runtime()
    pod = make_pod("cm", [{"name": "c", "command": SLEEP,
                           "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "k"}}}]}])
    status = rt.sync_pod(pod, {}, NO_SOURCES, [])
    waiting = cstatus(status, "c")["state"]["waiting"]
    assert waiting == {"reason": "CreateContainerConfigError", "message": 'configmap "later" not found'}
    rt.sync_pod(pod, {}, StaticEnvSources({("default", "later"): {"data": {"k": "v"}}}, {}), [])
    harness.wait(rt, uid_of(pod), lambda s: "running" in cstatus(s, "c")["state"], "container running")


def test_no_command_and_no_args_fails_with_a_clear_reason(harness):
    rt = harness.runtime()
    pod = make_pod("noexec", [{"name": "c"}])
    status = rt.sync_pod(pod, {}, NO_SOURCES, [])
    waiting = cstatus(status, "c")["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "neither command nor args" in waiting["message"]


def test_hostname_fqdn_and_hosts_file_updates(harness):
    """S1: hostname = spec.hostname (or pod name); with a subdomain /etc/hosts carries the FQDN."""
    rt = harness.runtime()
    pod = make_pod("web-0", [{"name": "c", "command": SLEEP}], hostname="web-0", subdomain="nginx",
                   hostAliases=[{"ip": "127.0.0.9", "hostnames": ["alias.example"]}])
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [("127.1.2.3", ["web-1.nginx.default.svc.cluster.local", "web-1"])])
    harness.wait(rt, uid, lambda s: "running" in cstatus(s, "c")["state"], "running")
    code, out = runc_exec(rt, uid, "c", ["hostname"])
    assert (code, out.strip()) == (0, "web-0")
    code, hosts = runc_exec(rt, uid, "c", ["cat", "/etc/hosts"])
    ip = rt.pod_ip(uid)
    assert f"{ip}\tweb-0.nginx.default.svc.cluster.local\tweb-0" in hosts
    assert "127.1.2.3\tweb-1.nginx.default.svc.cluster.local\tweb-1" in hosts
    assert "127.0.0.9\talias.example" in hosts and "127.0.0.1\tlocalhost" in hosts

    state = rt.pods_dir / uid / "runtime"
    inodes = {name: (state / name).stat().st_ino for name in ("hosts.json", "state.json", "pod.json", "volumes.json")}
    web2 = [("127.1.2.4", ["web-2.nginx.default.svc.cluster.local", "web-2"])]
    assert rt.update_hosts(uid, web2) is True
    code, hosts = runc_exec(rt, uid, "c", ["cat", "/etc/hosts"])
    assert "web-2.nginx.default.svc.cluster.local" in hosts and "web-1" not in hosts
    # PF83: the change rewrites the hosts file and its saved copy only; the same entries again write nothing.
    assert json.loads((state / "hosts.json").read_text()) == [list(e) for e in web2]
    after = {name: (state / name).stat().st_ino for name in inodes}
    assert after["hosts.json"] != inodes["hosts.json"]
    assert {n: after[n] for n in ("state.json", "pod.json", "volumes.json")} == \
        {n: inodes[n] for n in ("state.json", "pod.json", "volumes.json")}
    etc_hosts = (state / "etc-hosts").read_text()
    (state / "etc-hosts").write_text(etc_hosts + "# marker: a rewrite would drop this line\n")
    assert rt.update_hosts(uid, [(ip, list(names)) for ip, names in web2]) is False
    assert (state / "hosts.json").stat().st_ino == after["hosts.json"]
    assert (state / "etc-hosts").read_text().endswith("# marker: a rewrite would drop this line\n")
    (state / "etc-hosts").write_text(etc_hosts)
    code, resolv = runc_exec(rt, uid, "c", ["cat", "/etc/resolv.conf"])
    assert resolv == Path("/etc/resolv.conf").read_text()


def test_pf88_a_resync_of_an_unchanged_pod_rewrites_none_of_its_saved_files(harness):
    """PF88: the agent syncs a running pod again for every change of its API object (its own status writes
    among them); what the worker saved is written again only where it changed."""
    rt = harness.runtime()
    pod = make_pod("resync", [{"name": "c", "command": ["sh", "-c", "until [ -e /tmp/stop ]; do sleep 0.1; done"]}])
    uid = uid_of(pod)
    hosts = [("127.1.2.3", ["peer-0"])]
    rt.sync_pod(pod, {}, NO_SOURCES, hosts)
    harness.wait(rt, uid, lambda s: "running" in cstatus(s, "c")["state"], "running")
    state = rt.pods_dir / uid / "runtime"
    parts = ("pod.json", "volumes.json", "hosts.json", "state.json")
    inodes = {name: (state / name).stat().st_ino for name in parts}

    rt.sync_pod(json.loads(json.dumps(pod)), {}, NO_SOURCES, list(hosts))  # an equal copy, as from a new watch event
    assert {name: (state / name).stat().st_ino for name in parts} == inodes

    labelled = json.loads(json.dumps(pod))
    labelled["metadata"]["labels"] = {"tier": "db"}
    rt.sync_pod(labelled, {}, NO_SOURCES, list(hosts))
    after = {name: (state / name).stat().st_ino for name in parts}
    assert after["pod.json"] != inodes["pod.json"]
    assert json.loads((state / "pod.json").read_text())["metadata"]["labels"] == {"tier": "db"}
    assert {n: after[n] for n in ("volumes.json", "hosts.json")} == {n: inodes[n] for n in ("volumes.json", "hosts.json")}

    # The container's end is the worker's own step: only its state is written, and it says so.
    # 137: the container's shell, its pid 1, saw the file and ended before touch itself had exited, and
    # the kernel killed touch with the pid namespace (seen once under load); the file was made either way.
    assert runc_exec(rt, uid, "c", ["touch", "/tmp/stop"])[0] in (0, 137)
    harness.wait(rt, uid, lambda s: cstatus(s, "c")["restartCount"] >= 1, "the container ended and restarted")
    final = {name: (state / name).stat().st_ino for name in parts}
    assert final["state.json"] != after["state.json"]
    assert json.loads((state / "state.json").read_text())["containers"]["c"]["lastTerminated"]
    assert {n: final[n] for n in ("pod.json", "volumes.json", "hosts.json")} == \
        {n: after[n] for n in ("pod.json", "volumes.json", "hosts.json")}


def test_capabilities_add_ipc_lock_and_run_as_user_with_fs_group(harness):
    rt = harness.runtime()
    cap_ipc_lock = 1 << 14
    pod = make_pod("caps", [
        {"name": "locked", "command": ["sh", "-c", "grep CapEff /proc/self/status"],
         "securityContext": {"capabilities": {"add": ["IPC_LOCK"]}}},
        {"name": "plain", "command": ["sh", "-c", "grep CapEff /proc/self/status"]},
        {"name": "user", "command": ["sh", "-c", "echo $(id -u) $(id -g) $(id -G)"],
         "securityContext": {"runAsUser": 1000, "runAsGroup": 1001}},
    ], restartPolicy="Never", securityContext={"fsGroup": 2000})
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid_of(pod), lambda s: s["phase"] == "Succeeded", "Succeeded")

    def cap_eff(name: str) -> int:
        line = next(l for l in rt.logs(uid_of(pod), name) if l.startswith("CapEff"))
        return int(line.split()[1], 16)

    assert cap_eff("locked") & cap_ipc_lock
    assert not cap_eff("plain") & cap_ipc_lock
    uid, gid, *groups = list(rt.logs(uid_of(pod), "user"))[0].split()
    assert (uid, gid) == ("1000", "1001") and "2000" in groups


# ---- addresses and probes ----------------------------------------------------------------------

def _web(name: str, **probe: Any) -> dict[str, Any]:
    return {"name": "web", "ports": [{"name": "http", "containerPort": 8080}],
            "command": ["sh", "-c", f"mkdir -p /tmp/www && echo {name} > /tmp/www/who && "
                                    "exec python3 -m http.server 8080 --bind $(POD_IP) --directory /tmp/www"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}], **probe}


def test_each_pod_has_its_own_ip_and_two_pods_listen_on_one_port(harness):
    """Readiness httpGet drives Ready; both pods bind port 8080 on their own address."""
    rt = harness.runtime()
    probe = {"readinessProbe": {"httpGet": {"path": "/who", "port": "http", "httpHeaders": [{"name": "X-A", "value": "b"}]},
                                "periodSeconds": 0.2}}
    pods = [make_pod(n, [_web(n, **probe)]) for n in ("a", "b")]
    for pod in pods:
        rt.sync_pod(pod, {}, NO_SOURCES, [])
    for pod in pods:
        harness.wait(rt, uid_of(pod), lambda s: condition(s, "Ready") == "True", "Ready")
    ips = {rt.pod_ip(uid_of(p)) for p in pods}
    assert len(ips) == 2
    for pod in pods:
        ip = rt.pod_ip(uid_of(pod))
        assert httpx.get(f"http://{ip}:8080/who").text.strip() == pod["metadata"]["name"]


def test_readiness_exec_and_tcp_probes_drive_ready(harness):
    rt = harness.runtime()
    pod = make_pod("probes", [
        {"name": "exec", "command": SLEEP,
         "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 0.2}},
        {"name": "tcp", "ports": [{"name": "svc", "containerPort": 9000}],
         "command": ["sh", "-c", "while [ ! -f /tmp/go ]; do sleep 0.05; done; "
                                 "exec python3 -m http.server 9000 --bind $(POD_IP)"],
         "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
         "readinessProbe": {"tcpSocket": {"port": "svc"}, "periodSeconds": 0.2}},
    ])
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    status = harness.wait(rt, uid, lambda s: all("running" in c["state"] for c in s["containerStatuses"]), "running")
    assert condition(status, "Ready") == "False"
    assert runc_exec(rt, uid, "exec", ["touch", "/tmp/ready"])[0] == 0
    status = harness.wait(rt, uid, lambda s: cstatus(s, "exec")["ready"], "exec container ready")
    assert not cstatus(status, "tcp")["ready"] and condition(status, "Ready") == "False"
    assert runc_exec(rt, uid, "tcp", ["touch", "/tmp/go"])[0] == 0
    harness.wait(rt, uid, lambda s: condition(s, "Ready") == "True" and condition(s, "ContainersReady") == "True",
                 "pod Ready")
    assert runc_exec(rt, uid, "exec", ["rm", "/tmp/ready"])[0] == 0
    harness.wait(rt, uid, lambda s: condition(s, "Ready") == "False", "Ready to drop")


def test_pf95_a_start_reports_its_readiness_probes_first_result_and_waits_no_longer_than_its_bound(harness):
    """PF95: the status a start returns holds the first result of a readiness probe that runs at once (ready
    after one exec), so the agent writes Running and Ready in one status; a probe that does not answer holds
    that status back no longer than FIRST_READINESS_WAIT, and one with an initial delay not at all."""
    import time

    from storage.agent.runtime.pod import FIRST_READINESS_WAIT

    rt = harness.runtime()
    pod = make_pod("first", [{"name": "c", "command": SLEEP,
                              "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 10}}])
    status = rt.sync_pod(pod, {}, NO_SOURCES, [])
    assert "running" in cstatus(status, "c")["state"] and cstatus(status, "c")["ready"] is True
    assert condition(status, "Ready") == "True"

    slow = make_pod("slow", [{"name": "c", "command": SLEEP,
                              "readinessProbe": {"exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 5,
                                                 "periodSeconds": 10}}])
    began = time.monotonic()
    status = rt.sync_pod(slow, {}, NO_SOURCES, [])
    waited = time.monotonic() - began
    assert "running" in cstatus(status, "c")["state"] and cstatus(status, "c")["ready"] is False
    assert FIRST_READINESS_WAIT <= waited < 3, waited  # the probe itself takes 5 s

    delayed = make_pod("delayed", [{"name": "c", "command": SLEEP,
                                    "readinessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 30}}])
    status = rt.sync_pod(delayed, {}, NO_SOURCES, [])
    assert "running" in cstatus(status, "c")["state"] and cstatus(status, "c")["ready"] is False
    worker = rt._pods[uid_of(delayed)].containers["c"].instance.probes["readiness"]
    assert not worker.first_done.is_set(), "no probe ran: its first is 30 s away"


def test_liveness_failure_restarts_with_growing_back_off(harness):
    """Liveness failure kills the container (SIGTERM ignored by sleep, then SIGKILL) and restarts it
    per restartPolicy Always with back-off doubling from the base."""
    rt = harness.runtime(backoff_base=0.3, backoff_max=5)
    pod = make_pod("live", [{"name": "c", "command": SLEEP,
                             "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 0.2, "failureThreshold": 1}}],
                   terminationGracePeriodSeconds=0.2)
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    status = harness.wait(rt, uid, lambda s: cstatus(s, "c")["restartCount"] >= 3, "three restarts", timeout=120)
    c = cstatus(status, "c")
    last = c["lastState"]["terminated"]
    assert last["exitCode"] == 137 and last["reason"] == "Error" and "liveness probe" in last["message"]
    messages = {e[1] and cstatus(e[1], "c")["state"].get("waiting", {}).get("message") for e in harness.events if e[0] == uid}
    assert any(m and m.startswith("back-off 0.3s") for m in messages)
    assert any(m and m.startswith("back-off 0.6s") for m in messages)
    assert status["phase"] == "Running"
    # Each run had its own log; only the latest two stay (SV12).
    runs = sorted(int(p.name.split(".")[0]) for p in (rt.data_dir / "pods" / uid / "logs" / "c").iterdir())
    assert runs[-1] >= 3 and set(runs) <= {runs[-1] - 1, runs[-1]}, runs


@pytest.mark.parametrize("policy, script, phase, restarts", [
    ("Never", "exit 1", "Failed", 0),
    ("Never", "exit 0", "Succeeded", 0),
    ("OnFailure", "exit 0", "Succeeded", 0),
    ("OnFailure", "if [ -f /v/once ]; then exit 0; fi; touch /v/once; exit 1", "Succeeded", 1),
])
def test_restart_policy_phases(harness, tmp_path, policy, script, phase, restarts):
    rt = harness.runtime()
    pod = make_pod("policy", [{"name": "c", "command": ["sh", "-c", script],
                               "volumeMounts": [{"name": "v", "mountPath": "/v"}]}], restartPolicy=policy)
    rt.sync_pod(pod, {"v": str(tmp_path)}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: s["phase"] in ("Succeeded", "Failed"), "a final phase")
    assert status["phase"] == phase
    assert cstatus(status, "c")["restartCount"] == restarts
    assert terminated(status, "c")["reason"] == ("Completed" if phase == "Succeeded" else "Error")


def test_restart_policy_always_restarts_a_completed_container(harness):
    rt = harness.runtime()
    pod = make_pod("always", [{"name": "c", "command": ["true"]}])
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: cstatus(s, "c")["restartCount"] >= 2, "restarts")
    assert status["phase"] == "Running"
    assert cstatus(status, "c")["lastState"]["terminated"]["reason"] == "Completed"


def test_init_containers_run_first_and_in_order(harness, tmp_path):
    rt = harness.runtime()
    pod = make_pod("init", [{"name": "main", "command": ["sh", "-c", "cat /v/order; exec sleep 1000"],
                             "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                   initContainers=[{"name": f"i{n}", "command": ["sh", "-c", f"echo i{n} >> /v/order"],
                                    "volumeMounts": [{"name": "v", "mountPath": "/v"}]} for n in (1, 2)])
    rt.sync_pod(pod, {"v": str(tmp_path)}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: condition(s, "Ready") == "True", "Ready")
    assert condition(status, "Initialized") == "True"
    assert (tmp_path / "order").read_text() == "i1\ni2\n"
    assert [c["state"]["terminated"]["reason"] for c in status["initContainerStatuses"]] == ["Completed"] * 2


# ---- stopping, logs, adoption -------------------------------------------------------------------

def test_graceful_stop_escalates_to_sigkill_for_a_sigterm_ignoring_sleep(harness):
    rt = harness.runtime()
    stubborn = make_pod("stubborn", [{"name": "c", "command": SLEEP}])
    polite = make_pod("polite", [{"name": "c", "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done"]}])
    for pod in (stubborn, polite):
        rt.sync_pod(pod, {}, NO_SOURCES, [])
        harness.wait(rt, uid_of(pod), lambda s: "running" in cstatus(s, "c")["state"], "running")
    pid = rt.settings.runc.state(f"stowage-{uid_of(stubborn)}-c")["pid"]
    base = rt.data_dir / "pods" / uid_of(stubborn)

    final = rt.kill_pod(uid_of(stubborn), 0.5)
    assert terminated(final, "c")["exitCode"] == 137
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert rt.settings.runc.state(f"stowage-{uid_of(stubborn)}-c") is None
    with open("/proc/self/mountinfo") as f:
        assert str(base) not in f.read()
    assert not (base / "containers").exists() and (base / "logs" / "c" / "0.log").exists()
    assert uid_of(stubborn) not in rt.running_pods()

    # A generous grace period: it exits on SIGTERM by itself (exit 0, not 137 from SIGKILL).
    final = rt.kill_pod(uid_of(polite), 120)
    assert terminated(final, "c")["exitCode"] == 0


def _cmdlines(rt: Any, uid: str, container: str) -> dict[int, str]:
    """Every process the container sees: pid -> command line."""
    script = 'for p in /proc/[0-9]*; do printf "%s %s\\n" "${p#/proc/}" "$(tr "\\0" " " < $p/cmdline)"; done'
    code, out = runc_exec(rt, uid, container, ["/bin/sh", "-c", script])
    assert code == 0, out
    return {int(pid): cmd.strip() for pid, _, cmd in (line.partition(" ") for line in out.splitlines()) if cmd.strip()}


def test_sp1_share_process_namespace_one_namespace_under_a_sandbox_that_outlives_a_containers_restart(harness):
    """SP1: with shareProcessNamespace the containers see each other's processes, and PID 1 is the pod's
    sandbox (Kubernetes' pause), not a container: a container that ends and restarts leaves the others
    running. The pod's stop ends the containers first (each its own exit code), then the sandbox."""
    from storage.agent.runtime.pod import SANDBOX
    rt = harness.runtime()
    pod = make_pod("shared", [{"name": "a", "command": ["sleep", "1001"]},
                              {"name": "b", "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1002 & wait $!"]}],
                   shareProcessNamespace=True)
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: all("running" in c["state"] for c in s["containerStatuses"]), "both running")
    seen = _cmdlines(rt, uid, "b")
    assert "sleep 1001" in seen.values() and "sleep 1002" in seen.values(), seen
    assert seen[1].startswith("/bin/sh -c trap 'exit 0' TERM; while :; do sleep 86400"), seen
    assert [c["name"] for c in rt.sync_pod(pod, {}, NO_SOURCES, [])["containerStatuses"]] == ["a", "b"]
    b_pid = rt.settings.runc.state(f"stowage-{uid}-b")["pid"]

    assert rt.settings.runc.kill(f"stowage-{uid}-a", "KILL")
    harness.wait(rt, uid, lambda s: cstatus(s, "a")["restartCount"] == 1 and "running" in cstatus(s, "a")["state"],
                 "a restarted")
    assert rt.settings.runc.state(f"stowage-{uid}-b")["pid"] == b_pid  # b never stopped
    assert "sleep 1001" in _cmdlines(rt, uid, "b").values()  # the new a is in the same namespace

    final = rt.kill_pod(uid, 30)
    assert terminated(final, "a")["exitCode"] == 143  # not PID 1 of its namespace, sleep dies of the SIGTERM
    assert terminated(final, "b")["exitCode"] == 0  # its own TERM trap, not the sandbox's end
    assert rt.settings.runc.state(f"stowage-{uid}-{SANDBOX}") is None


def test_sp1_a_restarted_runtime_adopts_the_sandbox_and_its_containers_without_restarting_them(harness):
    """SP1 across an agent restart: the sandbox and the containers in its namespace run on untouched, and a
    container that ends afterwards starts again in the same namespace."""
    from storage.agent.runtime.pod import SANDBOX
    rt = harness.runtime("agent")
    pod = make_pod("shared", [{"name": "a", "command": ["sleep", "1001"]}, {"name": "b", "command": ["sleep", "1002"]}],
                   shareProcessNamespace=True)
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: all("running" in c["state"] for c in s["containerStatuses"]), "both running")
    pids = {n: rt.settings.runc.state(f"stowage-{uid}-{n}")["pid"] for n in ("a", "b", SANDBOX)}
    rt.close()

    again = harness.runtime("agent")
    assert again.running_pods() == {uid}
    status = again.pod_status(uid)
    assert [c["name"] for c in status["containerStatuses"]] == ["a", "b"]
    assert all("running" in c["state"] and c["restartCount"] == 0 for c in status["containerStatuses"])
    assert {n: again.settings.runc.state(f"stowage-{uid}-{n}")["pid"] for n in pids} == pids
    again.sync_pod(pod, {}, NO_SOURCES, [])
    assert again.settings.runc.kill(f"stowage-{uid}-b", "KILL")
    harness.wait(again, uid, lambda s: cstatus(s, "b")["restartCount"] == 1 and "running" in cstatus(s, "b")["state"],
                 "b restarted")
    assert again.settings.runc.state(f"stowage-{uid}-{SANDBOX}")["pid"] == pids[SANDBOX]
    assert "sleep 1002" in _cmdlines(again, uid, "a").values()
    again.kill_pod(uid, 0)
    assert again.settings.runc.state(f"stowage-{uid}-{SANDBOX}") is None


def test_sp1_a_finished_pods_sandbox_is_stopped(harness):
    """SP1: once every container has ended for good (the pod Succeeded or Failed) the sandbox goes too, as the
    kubelet stops a finished pod's sandbox; it is not started again."""
    from storage.agent.runtime.pod import SANDBOX
    rt = harness.runtime()
    pod = make_pod("job", [{"name": "c", "command": ["sh", "-c", "exit 3"]}], shareProcessNamespace=True,
                   restartPolicy="Never")
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    status = harness.wait(rt, uid, lambda s: s["phase"] == "Failed", "Failed")
    assert terminated(status, "c")["exitCode"] == 3
    wait_for(lambda: rt.settings.runc.state(f"stowage-{uid}-{SANDBOX}") is None, timeout=10, what="the sandbox to stop")
    assert rt.sync_pod(pod, {}, NO_SOURCES, [])["phase"] == "Failed"
    assert rt.settings.runc.state(f"stowage-{uid}-{SANDBOX}") is None
    rt.kill_pod(uid, 0)


def test_sp1_without_share_process_namespace_each_container_is_its_own_pid_1(harness):
    rt = harness.runtime()
    pod = make_pod("apart", [{"name": "a", "command": ["sleep", "1001"]}, {"name": "b", "command": ["sleep", "1002"]}])
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: all("running" in c["state"] for c in s["containerStatuses"]), "both running")
    assert _cmdlines(rt, uid, "b")[1] == "sleep 1002" and "sleep 1001" not in _cmdlines(rt, uid, "b").values()
    rt.kill_pod(uid, 0)


def test_logs_tail_follow_and_previous(harness):
    rt = harness.runtime()
    pod = make_pod("logs", [{"name": "c", "command": ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo err >&2"]}],
                   restartPolicy="OnFailure")
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    followed = list(rt.logs(uid, "c", follow=True))
    assert followed == ["line1", "line2", "line3", "err"]
    harness.wait(rt, uid, lambda s: s["phase"] == "Succeeded", "Succeeded")
    assert list(rt.logs(uid, "c", tail=2)) == ["line3", "err"]
    with pytest.raises(FileNotFoundError):
        list(rt.logs(uid, "c", previous=True))

    crash = make_pod("crash", [{"name": "c", "command": ["sh", "-c", "n=$(ls /v | wc -l); touch /v/$n; echo run$n; [ $n -ge 1 ]"],
                                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}], restartPolicy="OnFailure")
    vol = rt.data_dir / "crash-vol"
    vol.mkdir()
    rt.sync_pod(crash, {"v": str(vol)}, NO_SOURCES, [])
    harness.wait(rt, uid_of(crash), lambda s: s["phase"] == "Succeeded", "Succeeded")
    assert list(rt.logs(uid_of(crash), "c")) == ["run1"]
    assert list(rt.logs(uid_of(crash), "c", previous=True)) == ["run0"]


def test_sv12_a_container_log_rotates_at_its_limit_and_a_follower_reads_on(harness):
    """SV12: past its size limit a container's log is moved to <run>.log.1, the older files shifted and the
    oldest of the kept number dropped, and a new one begun (the kubelet's containerLogMaxSize and
    containerLogMaxFiles), so a chatty container cannot fill the node's disk; a follower reads every line across
    the rotations; `logs` shows the current file."""
    limit = 128 << 10
    rt = harness.runtime(container_log_max_bytes=limit, container_log_max_files=3)
    pad = "x" * 90
    # About 650 KB/s at most, a file every 0.2 s: a follower may fall a whole file behind (a CI run's load held
    # one up that long) and still read every line, from <run>.log.1.
    script = (f"pad={pad}; echo ready; until [ -e /tmp/go ]; do sleep 0.05; done; "
              "i=0; while [ $i -lt 4000 ]; do echo line$i-$pad; i=$((i+1)); "
              "[ $((i % 100)) = 0 ] && sleep 0.02; done; exec sleep 1000")
    pod = make_pod("chatty", [{"name": "c", "command": ["sh", "-c", script]}])
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: "running" in cstatus(s, "c")["state"], "running")
    followed: list[str] = []
    first = threading.Event()
    done = threading.Event()
    stop = threading.Event()

    def follow() -> None:
        for line in rt.logs(uid, "c", follow=True, stop=stop):
            followed.append(line)
            first.set()
            if line.startswith("line3999-"):
                done.set()
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        assert first.wait(30), "the follower's first line"
        assert runc_exec(rt, uid, "c", ["touch", "/tmp/go"])[0] == 0
        assert done.wait(120), f"the follower stopped at {followed[-1:]}"
    finally:
        stop.set()
    assert followed == ["ready"] + [f"line{i}-{pad}" for i in range(4000)]
    logs = rt.pods_dir / uid / "logs" / "c"
    # About 520 KB in 128 KiB files: three rotations, so the first file was dropped and three are kept.
    assert sorted(p.name for p in logs.iterdir()) == ["0.log", "0.log.1", "0.log.2"]
    line_bytes = len(f"line3999-{pad}") + 32
    assert all(p.stat().st_size <= limit + line_bytes for p in logs.iterdir())
    # Oldest to newest, the kept files hold one unbroken run of lines that ends with the last one.
    kept = [line.split(" ", 1)[1] for name in ("0.log.2", "0.log.1", "0.log")
            for line in (logs / name).read_text().splitlines()]
    first_kept = int(kept[0].split("-")[0].removeprefix("line"))
    assert first_kept > 0 and kept == [f"line{i}-{pad}" for i in range(first_kept, 4000)]
    current = list(rt.logs(uid, "c"))
    assert current[-1] == f"line3999-{pad}" and len(current) < 1100


def test_sv12_only_the_previous_runs_log_stays(harness):
    """SV12: each start drops the logs of runs before the previous one (the kubelet keeps one dead container)."""
    rt = harness.runtime()
    crash = make_pod("runs", [{"name": "c", "command": ["sh", "-c", "n=$(ls /v | wc -l); touch /v/$n; echo run$n; [ $n -ge 3 ]"],
                               "volumeMounts": [{"name": "v", "mountPath": "/v"}]}], restartPolicy="OnFailure")
    vol = rt.data_dir / "runs-vol"
    vol.mkdir()
    rt.sync_pod(crash, {"v": str(vol)}, NO_SOURCES, [])
    harness.wait(rt, uid_of(crash), lambda s: s["phase"] == "Succeeded", "Succeeded", timeout=120)
    assert sorted(p.name for p in (rt.pods_dir / uid_of(crash) / "logs" / "c").iterdir()) == ["2.log", "3.log"]
    assert list(rt.logs(uid_of(crash), "c")) == ["run3"]
    assert list(rt.logs(uid_of(crash), "c", previous=True)) == ["run2"]


def test_restarted_runtime_adopts_running_containers_without_restarting_them(harness):
    rt = harness.runtime("agent")
    pod = make_pod("adopt", [{"name": "c", "command": SLEEP,
                              "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 0.2}}])
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: "running" in cstatus(s, "c")["state"], "running")
    before = rt.pod_status(uid)
    pid = rt.settings.runc.state(f"stowage-{uid}-c")["pid"]
    ip = rt.pod_ip(uid)
    rt.close()

    again = harness.runtime("agent")
    assert again.running_pods() == {uid}
    status = again.pod_status(uid)
    c = cstatus(status, "c")
    assert "running" in c["state"] and c["restartCount"] == 0
    assert c["state"]["running"]["startedAt"] == cstatus(before, "c")["state"]["running"]["startedAt"]
    assert again.settings.runc.state(f"stowage-{uid}-c")["pid"] == pid
    assert again.pod_ip(uid) == ip == status["podIP"]
    # The adopted container's probes run again without a sync_pod call.
    assert runc_exec(again, uid, "c", ["touch", "/tmp/ready"])[0] == 0
    harness.wait(again, uid, lambda s: condition(s, "Ready") == "True", "Ready after adoption")
    # A container that exits while the runtime is down is seen as exited; it is restarted per
    # restartPolicy once the agent resyncs the pod (ConfigMaps and Secrets come with the resync).
    again.close()
    again.settings.runc.kill(f"stowage-{uid}-c", "KILL")
    third = harness.runtime("agent")
    harness.wait(third, uid, lambda s: cstatus(s, "c")["lastState"].get("terminated", {}).get("exitCode") == 137,
                 "exit seen after adoption")
    third.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(third, uid, lambda s: cstatus(s, "c")["restartCount"] == 1 and "running" in cstatus(s, "c")["state"],
                 "restart after adoption")


def test_pod_ips_are_distinct_and_kept_until_the_pod_is_removed(harness):
    rt = harness.runtime()
    pods = [make_pod(f"p{i}", [{"name": "c", "command": SLEEP}]) for i in range(3)]
    ips = [rt.sync_pod(p, {}, NO_SOURCES, [])["podIP"] for p in pods]
    assert len(set(ips)) == 3
    rt.kill_pod(uid_of(pods[0]), 0)
    newcomer = make_pod("new", [{"name": "c", "command": SLEEP}])
    assert rt.sync_pod(newcomer, {}, NO_SOURCES, [])["podIP"] not in ips
    rt.remove_pod(uid_of(pods[0]))
    late = make_pod("late", [{"name": "c", "command": SLEEP}])
    assert rt.sync_pod(late, {}, NO_SOURCES, [])["podIP"] == ips[0]


# ---- raw block devices (volumeDevices) -----------------------------------------------------

@pytest.fixture
def loop_device(tmp_path):
    """A real 8 MiB loop device, detached afterwards."""
    backing = tmp_path / "block.img"
    backing.write_bytes(b"\0" * (8 << 20))
    import subprocess
    device = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                            check=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


BLOCK_SCRIPT = ("test -b /dev/xvda || exit 3; "
                "printf stowage-block > /dev/xvda || exit 7; "
                "test \"$(head -c 13 /dev/xvda)\" = stowage-block || exit 5")


@pytest.mark.parametrize("host_users", [False, True], ids=["user-namespace", "host-users"])
def test_volume_device_is_the_claims_block_device_in_the_container(harness, loop_device, host_users):
    """A Block claim's volumeDevices entry is the device itself at its devicePath (what fio or a database
    opens), readable and writable by the container's root, in a user namespace too; what the container
    writes is on the device."""
    rt = harness.runtime(user_namespaces=True)
    pod = make_pod("blk", [{"name": "c", "command": ["sh", "-c", BLOCK_SCRIPT],
                            "volumeDevices": [{"name": "raw", "devicePath": "/dev/xvda"}]}],
                   restartPolicy="Never", hostUsers=host_users,
                   volumes=[{"name": "raw", "persistentVolumeClaim": {"claimName": "c"}}])
    rt.sync_pod(pod, {"raw": loop_device}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: s["phase"] in ("Succeeded", "Failed"), "the pod to finish")
    assert terminated(status, "c")["exitCode"] == 0, rt.logs(uid_of(pod), "c")
    fd = os.open(loop_device, os.O_RDONLY)
    try:
        assert os.read(fd, 13) == b"stowage-block"
    finally:
        os.close(fd)


def test_volume_device_of_a_read_only_claim_cannot_be_written(harness, loop_device):
    rt = harness.runtime(user_namespaces=True)
    pod = make_pod("blkro", [{"name": "c", "command": ["sh", "-c", BLOCK_SCRIPT],
                              "volumeDevices": [{"name": "raw", "devicePath": "/dev/xvda"}]}],
                   restartPolicy="Never",
                   volumes=[{"name": "raw", "persistentVolumeClaim": {"claimName": "c", "readOnly": True}}])
    rt.sync_pod(pod, {"raw": loop_device}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: s["phase"] in ("Succeeded", "Failed"), "the pod to finish")
    assert terminated(status, "c")["exitCode"] == 7, rt.logs(uid_of(pod), "c")
    fd = os.open(loop_device, os.O_RDONLY)
    try:
        assert os.read(fd, 13) == b"\0" * 13
    finally:
        os.close(fd)


def test_volume_device_on_a_filesystem_volume_is_a_config_error(harness, tmp_path):
    rt = harness.runtime()
    (tmp_path / "dir").mkdir()
    pod = make_pod("blkbad", [{"name": "c", "command": SLEEP,
                               "volumeDevices": [{"name": "raw", "devicePath": "/dev/xvda"}]}])
    status = rt.sync_pod(pod, {"raw": str(tmp_path / "dir")}, NO_SOURCES, [])
    waiting = cstatus(status, "c")["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError" and "not a block device" in waiting["message"]


# ---- cgroup limits -------------------------------------------------------------------------

def _cgroup_file(pid: int, controller: str, name: str) -> Path:
    """The file of ``pid``'s cgroup in a cgroup v1 controller's hierarchy, or the unified one."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            base = next(Path("/sys/fs/cgroup").glob(f"*{controller}*/"), None) if not Path(f"/sys/fs/cgroup/{controller}").is_dir() \
                else Path(f"/sys/fs/cgroup/{controller}")
            assert base is not None
            return base / path.lstrip("/") / name
    pytest.skip(f"no cgroup v1 {controller} hierarchy here (this check reads its files)")


def test_cpu_limits_requests_and_a_pids_limit_are_applied(harness):
    """limits.cpu is a CFS quota per 100 ms, requests.cpu the weight (1024 per CPU), as the kubelet sets
    them; every container gets a pids limit, so a fork bomb stays inside it."""
    from storage.agent.runtime.oci import CONTAINER_PIDS_LIMIT
    rt = harness.runtime()
    pod = make_pod("cpu", [{"name": "c", "command": SLEEP,
                            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}}])
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid_of(pod), lambda s: s["phase"] == "Running", "Running")
    pid = rt.settings.runc.state(f"stowage-{uid_of(pod)}-c")["pid"]
    assert int(_cgroup_file(pid, "cpu", "cpu.cfs_quota_us").read_text()) == 25_000
    assert int(_cgroup_file(pid, "cpu", "cpu.cfs_period_us").read_text()) == 100_000
    assert int(_cgroup_file(pid, "cpu", "cpu.shares").read_text()) == 102
    assert int(_cgroup_file(pid, "pids", "pids.max").read_text()) == CONTAINER_PIDS_LIMIT
    assert int(_cgroup_file(pid, "memory", "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024


def test_pf97_a_pods_processes_stay_in_the_agents_blkio_group_and_keep_their_own_other_groups(harness):
    """PF97: on cgroup v1, the container's processes (the first and those it forks) are in the agent's own
    blkio group, not a group of the container's: Stowage sets no per-pod I/O limit, and a loop device
    serves every group but the root through a worker of its own. Its memory and pids groups stay its own,
    with its limits."""
    from storage.agent.runtime.oci import blkio_home
    if blkio_home() is None:
        pytest.skip("no cgroup v1 blkio hierarchy here (cgroup v2 has no hierarchy of its own for I/O)")
    rt = harness.runtime()
    pod = make_pod("blkio", [{"name": "c", "command": ["/bin/sh", "-c", "sleep 1000 & wait"],
                              "resources": {"limits": {"memory": "64Mi"}}}])
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid_of(pod), lambda s: s["phase"] == "Running", "Running")
    pid = rt.settings.runc.state(f"stowage-{uid_of(pod)}-c")["pid"]
    child = wait_for(lambda: psutil.Process(pid).children(), timeout=10, what="the forked sleep")[0].pid
    ours = _cgroup_file(os.getpid(), "blkio", "cgroup.procs")
    assert _cgroup_file(pid, "blkio", "cgroup.procs") == ours and _cgroup_file(child, "blkio", "cgroup.procs") == ours
    assert int(_cgroup_file(child, "memory", "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
    assert _cgroup_file(pid, "memory", "x").parent != _cgroup_file(os.getpid(), "memory", "x").parent


def test_a_fork_bomb_stops_at_the_pids_limit(harness):
    """Processes are forked until fork fails: it fails inside the pod, at its limit, not on the host."""
    from storage.agent.runtime.oci import CONTAINER_PIDS_LIMIT
    script = ("import os, time\n"
              "n = 0\n"
              "try:\n"
              "    while n < 100000:\n"
              "        if os.fork() == 0:\n"
              "            time.sleep(30); os._exit(0)\n"
              "        n += 1\n"
              "except OSError as e:\n"
              "    print('FORKED', n, e.errno, flush=True)\n")
    rt = harness.runtime()
    pod = make_pod("forks", [{"name": "c", "command": ["python3", "-c", script + "time.sleep(1000)"]}])
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid_of(pod), lambda s: any("FORKED" in line for line in rt.logs(uid_of(pod), "c")),
                 "fork to fail inside the pod", timeout=120)
    line = next(line for line in rt.logs(uid_of(pod), "c") if "FORKED" in line)
    forked, errno_value = int(line.split()[-2]), int(line.split()[-1])
    assert forked < CONTAINER_PIDS_LIMIT and errno_value == 11, line  # EAGAIN from the pids controller
