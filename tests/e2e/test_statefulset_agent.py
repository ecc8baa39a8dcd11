"""A 3-member StatefulSet on the real node agent: ``stowage up``, runc containers, loop-backed claims.

Each member runs ``python3 -m http.server`` on its own pod IP, serving its own
claim; its readiness probe fetches ``/healthz`` from that directory, so a test
makes a member unready by removing the file. A watch started before the set is
applied records every pod event in revision order: the ordering checks (S2, S4)
compare positions in that one stream, never clocks. Members never restart on
their own here: every test checks ``restartCount`` stays 0.

The tests share one cluster and run in file order; each starts from three
Ready members.
"""
from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from storage.client import Client
from storage.errors import Gone
from stowage_e2e import Stowage, is_ready, poll

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]

SET = "web"
SELECTOR = f"app={SET}"
MEMBERS = [f"{SET}-{i}" for i in range(3)]
PORT = 8431  # not a common default: pods of other `stowage up` runs on this host may share an address
FQDN = "{name}.web.default.svc.cluster.local"

# Python as PID 1 would ignore SIGTERM (no handler in a PID namespace): the shell forwards it.
SERVER = ("touch /data/healthz; python3 -m http.server --bind \"$POD_IP\" --directory /data "
          f"{PORT} & child=$!; trap 'kill $child; wait $child; exit 0' TERM; wait $child")

BASE_MANIFESTS = """\
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: e2e-local
provisioner: stowage.io/local
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
parameters:
  fsType: ext4
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector:
    app: web
  ports:
    - name: http
      port: 8431
"""


def statefulset_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": SET, "namespace": "default"},
        "spec": {
            "serviceName": "web", "replicas": 3, "selector": {"matchLabels": {"app": SET}},
            "template": {"metadata": {"labels": {"app": SET}}, "spec": {
                "terminationGracePeriodSeconds": 10,
                "containers": [{
                    "name": "main", "image": "python:3", "command": ["/bin/sh", "-c", SERVER],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "GENERATION", "value": "1"}],
                    "ports": [{"name": "http", "containerPort": PORT}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                       # Generous timeout: a busy host must not make a member flap.
                                       "periodSeconds": 1, "timeoutSeconds": 5, "failureThreshold": 2},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
            }},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "e2e-local",
                "resources": {"requests": {"storage": "128Mi"}}}}],
        },
    }


# ---- a record of every pod event, in the store's order ----------------------------------------

@dataclass
class Seen:
    type: str  # ADDED, MODIFIED, DELETED
    name: str
    uid: str
    ready: bool
    deleting: bool
    restarts: int


@dataclass
class PodRecorder:
    """Watches the set's pods from a revision on, on its own connection, until ``stop``."""

    client: Client
    since: str
    events: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    error: str = ""

    def start(self) -> None:
        threading.Thread(target=self._run, name="pod-recorder", daemon=True).start()

    def _run(self) -> None:
        revision = self.since
        while not self.stopping.is_set():
            try:
                for event in self.client.watch("pods", "default", resource_version=revision,
                                               label_selector=SELECTOR, timeout=30):
                    pod = event["object"]
                    revision = pod["metadata"].get("resourceVersion", revision)
                    statuses = (pod.get("status") or {}).get("containerStatuses") or []
                    seen = Seen(event["type"], pod["metadata"]["name"], pod["metadata"]["uid"],
                                is_ready(pod), bool(pod["metadata"].get("deletionTimestamp")),
                                sum(int(s.get("restartCount") or 0) for s in statuses))
                    with self.lock:
                        self.events.append(seen)
                    if self.stopping.is_set():
                        return
            except Gone:
                # Losing events would make every ordering check below unsound: say so instead.
                self.error = f"the pod watch expired at revision {revision}; the record is incomplete"
                return
            except Exception:  # a cut connection: resume from the last revision seen
                if self.stopping.wait(0.2):
                    return

    def snapshot(self) -> list[Seen]:
        assert not self.error, self.error
        with self.lock:
            return list(self.events)

    def mark(self) -> int:
        """A position in the record: later checks look only at what came after it."""
        return len(self.snapshot())

    def first(self, start: int, predicate: Any) -> int | None:
        for index, seen in enumerate(self.snapshot()[start:], start):
            if predicate(seen):
                return index
        return None


# ---- helpers -------------------------------------------------------------------------------

@dataclass
class Cluster:
    stowage: Stowage
    recorder: PodRecorder


def runc_exec(stowage: Stowage, pod: dict[str, Any], *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``argv`` inside the pod's container, as the agent's exec probes run it."""
    container_id = f"stowage-{pod['metadata']['uid']}-main"
    result = subprocess.run(["runc", "--root", str(stowage.data_dir / "agent" / "runc"), "exec", container_id, *argv],
                            capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} in {pod['metadata']['name']} failed ({result.returncode}): "
                    f"{result.stdout}{result.stderr}")
    return result


def pods_ready(stowage: Stowage, names: list[str] = MEMBERS, timeout: float = 300) -> dict[str, dict[str, Any]]:
    return stowage.wait_ready(SELECTOR, names, timeout=timeout)


def claim_volumes(stowage: Stowage) -> dict[str, str]:
    claims, _ = stowage.client.list("persistentvolumeclaims", "default", label_selector=SELECTOR)
    return {c["metadata"]["name"]: (c.get("spec") or {}).get("volumeName", "") for c in claims}


def assert_no_restarts(pods: dict[str, dict[str, Any]]) -> None:
    """No member restarted on its own (nothing here fails a liveness probe or exits)."""
    for name, pod in pods.items():
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            assert status.get("restartCount") == 0, (
                f"{name}/{status.get('name')} restarted without a reason: lastState {status.get('lastState')}")


def scale(stowage: Stowage, replicas: int) -> None:
    stowage.cli("scale", "statefulset", SET, "--replicas", str(replicas))


# ---- the cluster ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(start_stowage: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    manifests = tmp_path_factory.mktemp("sts-manifests")
    (manifests / "base.yaml").write_text(BASE_MANIFESTS)
    (manifests / "web.json").write_text(json.dumps(statefulset_manifest()))
    stowage = start_stowage([manifests / "base.yaml"])
    _, revision = stowage.client.list("pods", "default")
    recorder = PodRecorder(Client.from_kubeconfig(stowage.kubeconfig), revision)
    recorder.start()
    try:
        stowage.cli("apply", "-f", str(manifests / "web.json"))
        pods_ready(stowage)
        yield Cluster(stowage, recorder)
    finally:
        recorder.stopping.set()


# ---- the tests ------------------------------------------------------------------------------

def test_members_start_in_ordinal_order_each_after_the_previous_is_ready_S1_S2(cluster: Cluster) -> None:
    stowage, recorder = cluster.stowage, cluster.recorder
    pods = pods_ready(stowage)
    # The creation of the first incarnation of each member, and the first moment it was Ready. The watch
    # delivers an event a moment after a read can see its change: wait for the record to hold it.
    def first_ready() -> dict[str, int] | None:
        found = {name: recorder.first(0, lambda s, n=name: s.name == n and s.ready) for name in MEMBERS}
        return {n: v for n, v in found.items() if v is not None} if all(v is not None for v in found.values()) else None

    ready = poll("the pod watch to show every member Ready", first_ready, timeout=30)
    created = {name: recorder.first(0, lambda s, n=name: s.type == "ADDED" and s.name == n) for name in MEMBERS}
    assert all(v is not None for v in created.values()), created
    for lower, higher in zip(MEMBERS, MEMBERS[1:]):
        assert ready[lower] < created[higher], (  # type: ignore[operator]
            f"S2: {higher} was created (event {created[higher]}) before {lower} was Ready (event {ready[lower]})")
    for name, pod in pods.items():
        assert pod["spec"]["hostname"] == name and pod["spec"]["subdomain"] == "web"
        assert pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == name
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if v.get("persistentVolumeClaim")]
        assert claims == [f"data-{name}"]
        # Each member serves its own claim on its own address: the readiness file is the member's.
        runc_exec(stowage, pod, "sh", "-c", f"echo {name} > /data/owner")
    assert len({p["status"]["podIP"] for p in pods.values()}) == 3
    events, _ = stowage.client.list("events", "default")
    created_messages = {e["message"] for e in events if e.get("reason") == "SuccessfulCreate"
                        and e.get("involvedObject", {}).get("name") == SET}
    assert {f"create Pod {n} in StatefulSet {SET} successful" for n in MEMBERS} <= created_messages
    assert {f"create Claim data-{n} Pod {n} in StatefulSet {SET} success" for n in MEMBERS} <= created_messages
    assert_no_restarts(pods)


def test_every_member_resolves_every_ready_member_by_its_stable_name_S1(cluster: Cluster) -> None:
    stowage = cluster.stowage
    pods = pods_ready(stowage)
    want = {FQDN.format(name=n): p["status"]["podIP"] for n, p in pods.items()}

    def resolved_everywhere() -> bool:
        for pod in pods.values():
            for fqdn, ip in want.items():
                result = runc_exec(stowage, pod, "getent", "hosts", fqdn, check=False)
                if result.returncode != 0 or result.stdout.split()[:1] != [ip]:
                    return False
        return True
    poll("every member resolving all three stable names to their pod IPs", resolved_everywhere, 120,
         diagnose=lambda: runc_exec(stowage, pods[MEMBERS[0]], "cat", "/etc/hosts", check=False).stdout)
    # The names lead to the members themselves: each serves its own claim's file on its own address.
    for name, pod in pods.items():
        body = runc_exec(stowage, pods[MEMBERS[0]], "python3", "-c",
                         f"import urllib.request; print(urllib.request.urlopen("
                         f"'http://{FQDN.format(name=name)}:{PORT}/owner', timeout=10).read().decode())").stdout
        assert body.strip() == name
    assert_no_restarts(stowage.pods(SELECTOR))


def test_deleted_member_comes_back_with_the_same_name_claim_and_data_S1_S2(cluster: Cluster) -> None:
    stowage = cluster.stowage
    pods = pods_ready(stowage)
    victim = pods["web-1"]
    volumes_before = claim_volumes(stowage)
    runc_exec(stowage, victim, "sh", "-c", "echo before-delete > /data/marker")

    stowage.cli("delete", "pod", "web-1")

    def replaced() -> dict[str, Any] | None:
        pod = stowage.pods(SELECTOR).get("web-1")
        return pod if pod and pod["metadata"]["uid"] != victim["metadata"]["uid"] and is_ready(pod) else None
    new = poll("web-1 recreated and Ready", replaced, 300, diagnose=stowage.describe)
    claims = [v["persistentVolumeClaim"]["claimName"] for v in new["spec"]["volumes"] if v.get("persistentVolumeClaim")]
    assert claims == ["data-web-1"]
    assert claim_volumes(stowage) == volumes_before  # the same claims, bound to the same volumes
    assert runc_exec(stowage, new, "cat", "/data/marker").stdout.strip() == "before-delete"
    assert runc_exec(stowage, new, "cat", "/data/owner").stdout.strip() == "web-1"
    pods = pods_ready(stowage)
    assert {n: p["metadata"]["uid"] for n, p in pods.items() if n != "web-1"} == \
        {n: p["metadata"]["uid"] for n, p in stowage.pods(SELECTOR).items() if n != "web-1"}
    assert_no_restarts(pods)


def test_scale_down_removes_highest_first_and_scale_up_reuses_the_claims_S2_S5(cluster: Cluster) -> None:
    stowage, recorder = cluster.stowage, cluster.recorder
    pods = pods_ready(stowage)
    uids = {n: p["metadata"]["uid"] for n, p in pods.items()}
    volumes_before = claim_volumes(stowage)
    assert sorted(volumes_before) == [f"data-{n}" for n in MEMBERS] and all(volumes_before.values())
    start = recorder.mark()

    scale(stowage, 1)
    poll("only web-0 left", lambda: sorted(stowage.pods(SELECTOR)) == ["web-0"], 300, diagnose=stowage.describe)
    gone2 = recorder.first(start, lambda s: s.type == "DELETED" and s.uid == uids["web-2"])
    marked1 = recorder.first(start, lambda s: s.uid == uids["web-1"] and (s.deleting or s.type == "DELETED"))
    assert gone2 is not None and marked1 is not None
    assert gone2 < marked1, "S2: web-1 began terminating before web-2 was fully gone"
    assert recorder.first(start, lambda s: s.uid == uids["web-0"] and s.deleting) is None, "web-0 was touched"
    claims, _ = stowage.client.list("persistentvolumeclaims", "default", label_selector=SELECTOR)
    assert {c["metadata"]["name"]: c["status"].get("phase") for c in claims} == \
        {f"data-{n}": "Bound" for n in MEMBERS}, "S5: Retain keeps the claims of removed members"

    scale(stowage, 3)
    pods = pods_ready(stowage)
    assert claim_volumes(stowage) == volumes_before
    for name, pod in pods.items():
        assert runc_exec(stowage, pod, "cat", "/data/owner").stdout.strip() == name
    assert runc_exec(stowage, pods["web-1"], "cat", "/data/marker").stdout.strip() == "before-delete"
    assert pods["web-0"]["metadata"]["uid"] == uids["web-0"]
    assert_no_restarts(pods)


def test_rolling_update_replaces_members_from_the_highest_ordinal_down_S4(cluster: Cluster) -> None:
    stowage, recorder = cluster.stowage, cluster.recorder
    pods = pods_ready(stowage)
    old = {n: p["metadata"]["uid"] for n, p in pods.items()}
    start = recorder.mark()
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/env/1",
              "value": {"name": "GENERATION", "value": "2"}}]
    stowage.cli("patch", "statefulset", SET, "--type", "json", "-p", json.dumps(patch))

    status = stowage.cli("rollout", "status", "statefulset", SET, "--timeout", "10m", check=False, timeout=660)
    assert status.returncode == 0, f"rollout status failed ({status.returncode}): {status.stdout}{status.stderr}"
    assert "rolling update complete" in status.stdout

    pods = pods_ready(stowage)
    assert all(pods[n]["metadata"]["uid"] != old[n] for n in MEMBERS), "a member kept the old revision"
    marked = {n: recorder.first(start, lambda s, u=old[n]: s.uid == u and (s.deleting or s.type == "DELETED"))
              for n in MEMBERS}
    new_ready = {n: recorder.first(start, lambda s, n=n: s.name == n and s.uid != old[n] and s.ready) for n in MEMBERS}
    assert all(v is not None for v in marked.values()) and all(v is not None for v in new_ready.values())
    assert marked["web-2"] < marked["web-1"] < marked["web-0"], f"S4: replaced out of order: {marked}"  # type: ignore[operator]
    # One at a time: the next member goes only once the one before it is back and Ready.
    assert new_ready["web-2"] < marked["web-1"] and new_ready["web-1"] < marked["web-0"]  # type: ignore[operator]
    for name, pod in pods.items():
        assert runc_exec(stowage, pod, "sh", "-c", "echo $GENERATION").stdout.strip() == "2"
        assert runc_exec(stowage, pod, "cat", "/data/owner").stdout.strip() == name
    sts = stowage.client.get("statefulsets", SET, "default")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    assert sts["status"].get("updatedReplicas") == 3
    assert_no_restarts(pods)


def test_a_member_failing_readiness_blocks_scale_up_and_describe_names_it_S7(cluster: Cluster) -> None:
    stowage = cluster.stowage
    pods = pods_ready(stowage)
    runc_exec(stowage, pods["web-1"], "rm", "/data/healthz")
    poll("web-1 not Ready", lambda: not is_ready(stowage.pods(SELECTOR)["web-1"]), 60, diagnose=stowage.describe)

    scale(stowage, 4)

    def blocked() -> str | None:
        text = stowage.cli("describe", "statefulset", SET).stdout
        line = next((l for l in text.splitlines() if l.strip().startswith("Rollout Blocked")), "")
        return text if "web-1" in line and "Ready" in line else None
    described = poll("describe to name web-1 as the blocker", blocked, 60, diagnose=stowage.describe)
    assert "containers with unready status: [main]" in described
    assert "web-3" not in stowage.pods(SELECTOR), "S2: web-3 was created while web-1 is not Ready"
    # web-3 stays absent as long as web-1 is unready: a few further passes of the controller change nothing.
    poll("the controller to have seen web-1 unready", lambda: stowage.client.get("statefulsets", SET, "default")
         ["status"].get("readyReplicas") == 2, 60)
    assert "web-3" not in stowage.pods(SELECTOR)

    runc_exec(stowage, pods["web-1"], "touch", "/data/healthz")
    pods = pods_ready(stowage, MEMBERS + ["web-3"])  # recovers as soon as the member is fixed
    assert "Rollout Blocked" not in stowage.cli("describe", "statefulset", SET).stdout
    assert_no_restarts(pods)
    scale(stowage, 3)
    pods_ready(stowage)
