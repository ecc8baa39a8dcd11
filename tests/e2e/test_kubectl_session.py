"""A scripted session of the real kubectl against a real ``stowage up``: its kubeconfig (admin token,
cluster CA), HTTPS, and no extra flags -- no ``--insecure-skip-tls-verify``, no ``--validate=false``.
Every step checks what kubectl printed, not only that it exited 0.

The session runs once with each kubectl the README promises (``kubectl_version``: PyPI's current
one and Debian 12's 1.20, which reads the protobuf OpenAPI v2 document, validates on the client and
upgrades exec, attach and cp straight to SPDY), both against one ``stowage up``, each in a namespace
of its own. Commands 1.20 lacks are separate tests that skip there, saying so.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from stowage_e2e import Stowage, poll
from support import kubectl_binary, need_kubectl_command

pytestmark = [pytest.mark.root, pytest.mark.slow]

# Passes the "baseline" Pod Security level (the default): no host namespaces, no privilege, no hostPath.
MANIFESTS = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: session-local-SUFFIX}
provisioner: stowage.io/local
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
parameters: {fsType: ext4}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: session-data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: session-local-SUFFIX
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: session-pod, labels: {app: session}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: debian:12
    command: [/bin/sh, -c]
    args:
    - |
      echo "hello from the session"
      echo payload > /data/file.txt
      python3 -m http.server 8080 --bind "$POD_IP" --directory /data >/dev/null 2>&1 &
      trap 'exit 0' TERM
      while true; do sleep 1 & wait $!; done
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: session-data}}
---
apiVersion: v1
kind: Pod
metadata: {name: session-talker}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: debian:12
    stdin: true
    command: [/bin/sh, -c, 'read x; echo "bye $x"']
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, labels: {app: d}}
spec:
  replicas: 1
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: busybox, image: busybox, command: [sleep, "3600"]}
"""


@pytest.fixture(scope="module")
def stowage(start_stowage: Callable[[list[Path]], Stowage]) -> Stowage:
    return start_stowage([])


class Kubectl:
    """One kubectl release with a kubeconfig whose context namespace is ``namespace``."""

    def __init__(self, version: str, kubeconfig: Path, home: Path, namespace: str = "default") -> None:
        self.version = version
        self.binary = kubectl_binary(version)
        config = yaml.safe_load(kubeconfig.read_text())
        config["contexts"][0]["context"]["namespace"] = namespace
        own = home / "kubeconfig"
        own.write_text(yaml.safe_dump(config))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        self.env.update({"KUBECONFIG": str(own), "HOME": str(home)})

    def run(self, *args: str, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 180) -> str:
        done = self.run(*args, stdin=stdin, timeout=timeout)
        assert done.returncode == 0, f"kubectl {self.version} {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done.stdout


@contextlib.contextmanager
def port_forward(kubectl: Kubectl, target: str, remote: int) -> Iterator[int]:
    """``kubectl port-forward TARGET :REMOTE`` running; the local port it chose."""
    proc = subprocess.Popen([kubectl.binary, "port-forward", target, f":{remote}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=kubectl.env, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().decode()  # "Forwarding from 127.0.0.1:PORT -> REMOTE"
        assert line.startswith("Forwarding from 127.0.0.1:"), line + proc.stderr.read1(20000).decode()
        yield int(line.split(":")[1].split()[0])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def fetch(url: str) -> bytes | None:
    """The body; None while the pod's server is not listening yet."""
    def get() -> bytes | None:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.read()  # type: ignore[no-any-return]
        except OSError:
            return None
    return poll(f"{url} through the tunnel", get, 60)


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


def session_kubectl(stowage: Stowage, version: str, home: Path) -> tuple[Kubectl, str]:
    """kubectl ``version`` working in a namespace of its own (made here with that kubectl)."""
    namespace = "session-" + version.replace(".", "")
    admin = Kubectl(version, stowage.kubeconfig, home)
    made = admin("apply", "-f", "-", stdin=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n")
    assert made.strip() in (f"namespace/{namespace} created", f"namespace/{namespace} unchanged")
    return Kubectl(version, stowage.kubeconfig, home, namespace), namespace


def test_kubectl_session(stowage: Stowage, kubectl_version: str, tmp_path: Path) -> None:
    config = yaml.safe_load(stowage.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"].startswith("https://") and "certificate-authority-data" in cluster
    assert "insecure-skip-tls-verify" not in cluster
    kubectl, ns = session_kubectl(stowage, kubectl_version, tmp_path)
    suffix = ns.removeprefix("session-")

    version = kubectl("version").splitlines()
    # 1.20 prints version.Info{... GitVersion:"v1.20.2" ...}, later ones "Client Version: v1.37.1".
    assert version[0].startswith("Client Version: ") and f'v{kubectl_version}.' in version[0], version
    assert any(line.startswith("Server Version: ") and "v1." in line for line in version), version

    nodes = rows(kubectl("get", "nodes", "-o", "wide"))
    assert nodes[0][:6] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    assert "KERNEL-VERSION" in nodes[0] and "CONTAINER-RUNTIME" in nodes[0]
    assert len(nodes) == 2 and nodes[1][1] == "Ready"
    node = nodes[1][0]

    resources = {r[0]: r for r in rows(kubectl("api-resources"))[1:]}
    assert resources["persistentvolumeclaims"][1:] == ["pvc", "v1", "true", "PersistentVolumeClaim"]
    assert resources["storageclasses"][1:] == ["sc", "storage.k8s.io/v1", "false", "StorageClass"]
    assert resources["deployments"][1:] == ["deploy", "apps/v1", "true", "Deployment"]

    applied = kubectl("apply", "-f", "-", stdin=MANIFESTS.replace("SUFFIX", suffix))
    assert applied.splitlines() == [f"storageclass.storage.k8s.io/session-local-{suffix} created",
                                    "persistentvolumeclaim/session-data created", "pod/session-pod created",
                                    "pod/session-talker created"]
    waited = kubectl("wait", "--for=condition=Ready", "pod/session-pod", "pod/session-talker", "--timeout=150s",
                     timeout=180)
    assert waited.splitlines() == ["pod/session-pod condition met", "pod/session-talker condition met"]

    listed = kubectl("get", "pv,pvc,pods", "-o", "wide")
    pv_block, pvc_block, pod_block = [rows(b) for b in listed.strip().split("\n\n")]
    assert pv_block[0][:3] == ["NAME", "CAPACITY", "ACCESS"]
    [pv_row] = [r for r in pv_block[1:] if f"{ns}/session-data" in r]  # the other run's volume may be listed
    assert pv_row[1] == "64Mi" and f"session-local-{suffix}" in pv_row
    assert pvc_block[1][:2] == ["persistentvolumeclaim/session-data", "Bound"]
    assert pvc_block[1][2] == pv_row[0].removeprefix("persistentvolume/")
    assert pod_block[1][:3] == ["pod/session-pod", "1/1", "Running"] and node in pod_block[1]

    described = kubectl("describe", "pvc", "session-data")
    assert described.splitlines()[0].split() == ["Name:", "session-data"]
    assert "Status:        Bound" in described and f"StorageClass:  session-local-{suffix}" in described
    assert "Used By:       session-pod" in described

    node_text = kubectl("describe", "node", node)
    assert "-9223372036854775808" not in node_text
    assert "Capacity:" in node_text and "Allocatable:" in node_text and "Allocated resources:" in node_text
    memory_line = next(line for line in node_text.splitlines() if line.strip().startswith("memory") and "%" in line)
    assert all(not part.startswith("-") for part in memory_line.split()), memory_line

    # logs, exec and cp: WebSocket channels from current kubectl, SPDY from 1.20.
    assert kubectl("logs", "session-pod") == "hello from the session\n"
    assert kubectl("exec", "session-pod", "--", "cat", "/data/file.txt") == "payload\n"
    failed = kubectl.run("exec", "session-pod", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (failed.returncode, failed.stdout) == (7, "out\n") and failed.stderr.startswith("err\n"), failed
    assert kubectl("exec", "-i", "session-pod", "--", "wc", "-c", stdin="x" * 100_000).strip() == "100000"
    # -t wants a terminal of kubectl's own: `script` gives it one.
    terminal = subprocess.run(["script", "-qec", f"{kubectl.binary} exec -it session-pod -- sh -c 'tty; exit 4'",
                               "/dev/null"], input="", capture_output=True, text=True, env=kubectl.env, timeout=120)
    assert terminal.returncode == 4 and "/dev/pts/" in terminal.stdout, terminal
    copied = tmp_path / "copied.txt"
    kubectl("cp", "session-pod:/data/file.txt", str(copied))
    assert copied.read_text() == "payload\n"
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(200_000))
    kubectl("cp", str(upload), "session-pod:/data/upload.bin")
    back = tmp_path / "back.bin"
    kubectl("cp", "session-pod:/data/upload.bin", str(back))
    assert back.read_bytes() == upload.read_bytes()
    # attach: stdin reaches the container's shell, and kubectl ends with the container.
    attached = kubectl.run("attach", "-i", "session-talker", stdin="now\n")
    assert attached.returncode == 0 and "bye now" in attached.stdout, attached
    # port-forward: SPDY inside a WebSocket from current kubectl, plain SPDY from 1.20.
    with port_forward(kubectl, "pod/session-pod", 8080) as local:
        assert fetch(f"http://127.0.0.1:{local}/file.txt") == b"payload\n"

    everything = kubectl("get", "all")
    assert "pod/session-pod" in everything

    explained = kubectl("explain", "pvc.spec")
    assert re.search(r"^KIND:\s+PersistentVolumeClaim$", explained, re.M), explained
    # 1.20 reads the protobuf OpenAPI v2 document, later releases the v3 one (which names the type).
    field = "RESOURCE: spec <Object>" if kubectl_version == "1.20" else "FIELD: spec <PersistentVolumeClaimSpec>"
    assert field in explained and "storageClassName" in explained and "accessModes" in explained

    # The Deployment from a manifest with its command (create deployment is listed in the report).
    assert kubectl("apply", "-f", "-", stdin=DEPLOYMENT).strip() == "deployment.apps/d created"
    assert kubectl("scale", "deployment", "d", "--replicas=2").strip() == "deployment.apps/d scaled"
    assert 'deployment "d" successfully rolled out' in kubectl("rollout", "status", "deployment", "d",
                                                               "--timeout=150s", timeout=180)
    ready = kubectl("get", "deployment", "d", "-o", "jsonpath={.status.readyReplicas}/{.status.replicas}")
    assert ready == "2/2"
    assert kubectl("rollout", "restart", "deployment", "d").strip() == "deployment.apps/d restarted"
    assert 'deployment "d" successfully rolled out' in kubectl("rollout", "status", "deployment", "d",
                                                               "--timeout=150s", timeout=180)
    history = rows(kubectl("rollout", "history", "deployment", "d"))
    assert history[1][:2] == ["REVISION", "CHANGE-CAUSE"] and [r[0] for r in history[2:]] == ["1", "2"]
    assert kubectl("rollout", "undo", "deployment", "d").strip() == "deployment.apps/d rolled back"
    assert 'deployment "d" successfully rolled out' in kubectl("rollout", "status", "deployment", "d",
                                                               "--timeout=150s", timeout=180)
    assert [r[0] for r in rows(kubectl("rollout", "history", "deployment", "d"))[2:]] == ["2", "3"]
    assert "deployment.apps/d" in kubectl("get", "all")

    dry = kubectl("delete", "--dry-run=server", "pod", "session-pod")
    assert dry.startswith('pod "session-pod" deleted') and dry.strip().endswith("(server dry run)"), dry
    assert kubectl("get", "pod", "session-pod", "-o", "name").strip() == "pod/session-pod"

    assert kubectl("auth", "can-i", "create", "pods").strip() == "yes"

    # A namespace from a manifest; deleting it deletes what is in it, then the namespace itself (kubectl waits for that).
    made = kubectl("apply", "-f", "-", stdin=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}-x}}\n---\n"
                   f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x, namespace: {ns}-x}}\ndata: {{a: b}}\n")
    assert made.splitlines() == [f"namespace/{ns}-x created", "configmap/x created"]
    assert kubectl("delete", "ns", f"{ns}-x").strip() == f'namespace "{ns}-x" deleted'
    gone = kubectl.run("get", "ns", f"{ns}-x")
    assert gone.returncode != 0 and f'namespaces "{ns}-x" not found' in gone.stderr

    def top_node() -> list[str] | None:
        done = kubectl.run("top", "node", "--no-headers")
        return done.stdout.split() if done.returncode == 0 and done.stdout.strip() else None

    top = poll("kubectl top node to show the node", top_node, 60)
    assert top[0] == node and top[1].endswith("m") and top[3].endswith("Mi")

    # The run's namespace goes with its pods, Deployment and claim (whose volume is deleted, as its
    # class says), so the other kubectl's run and the teardown have less to stop.
    assert kubectl("delete", "ns", ns).strip() == f'namespace "{ns}" deleted'
    assert kubectl("delete", "sc", f"session-local-{suffix}").strip() == \
        f'storageclass.storage.k8s.io "session-local-{suffix}" deleted'


def test_kubectl_auth_whoami(stowage: Stowage, kubectl_version: str, tmp_path: Path) -> None:
    need_kubectl_command(kubectl_version, "auth whoami")
    whoami = rows(Kubectl(kubectl_version, stowage.kubeconfig, tmp_path)("auth", "whoami"))
    assert ["Username", "admin"] in whoami
