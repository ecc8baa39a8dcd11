"""LimitRange and ResourceQuota through the API server (SEMANTICS QL1-QL8): Kubernetes' status codes and words,
quota released on deletion, concurrent creates never exceeding a quota, and the real kubectl."""
from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from storage.apiserver.server import RunningServer
from storage.controllers.manager import ControllerManager
from storage.controllers.resourcequota import ResourceQuotaReconciler
from support import kubectl_binary, wait_for


@pytest.fixture(scope="module")
def quota_controller(module_server: RunningServer) -> Iterator[ControllerManager]:
    manager = ControllerManager(module_server.store, [ResourceQuotaReconciler])
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()


def _namespace(http: httpx.Client, name: str) -> str:
    r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return name


def _claim(name: str, size: str, cls: str = "") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                     "resources": {"requests": {"storage": size}}}}


def _create_claim(http: httpx.Client, ns: str, name: str, size: str, cls: str = "") -> httpx.Response:
    return http.post(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", json=_claim(name, size, cls))


def _quota(http: httpx.Client, ns: str, name: str, hard: dict[str, str]) -> None:
    r = http.post(f"/api/v1/namespaces/{ns}/resourcequotas", json={
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}})
    assert r.status_code == 201, r.text
    assert "status" not in r.json() or not r.json()["status"].get("used")


def _status(http: httpx.Client, ns: str, name: str) -> dict[str, Any]:
    return http.get(f"/api/v1/namespaces/{ns}/resourcequotas/{name}").json().get("status") or {}


def _wait_used(http: httpx.Client, ns: str, name: str, used: dict[str, str]) -> None:
    wait_for(lambda: _status(http, ns, name).get("used") == used, f"quota {name} used {used}", timeout=30)


def test_ql7_limit_range_refuses_claims_outside_min_and_max(http: httpx.Client) -> None:
    ns = _namespace(http, "ql7")
    r = http.post(f"/api/v1/namespaces/{ns}/limitranges", json={
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "storage"},
        "spec": {"limits": [{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]}})
    assert r.status_code == 201, r.text
    small = _create_claim(http, ns, "data", "500Mi")
    assert small.status_code == 403, small.text
    assert small.json()["message"] == ('persistentvolumeclaims "data" is forbidden: minimum storage usage per '
                                       'PersistentVolumeClaim is 1Gi, but request is 500Mi')
    big = _create_claim(http, ns, "data", "20Gi")
    assert big.status_code == 403, big.text
    assert big.json()["message"] == ('persistentvolumeclaims "data" is forbidden: maximum storage usage per '
                                     'PersistentVolumeClaim is 10Gi, but request is 20Gi')
    assert _create_claim(http, ns, "data", "5Gi").status_code == 201


def test_ql6_invalid_limit_range_is_422(http: httpx.Client) -> None:
    r = http.post("/api/v1/namespaces/default/limitranges", json={
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "upside-down"},
        "spec": {"limits": [{"type": "PersistentVolumeClaim", "min": {"storage": "2Gi"}, "max": {"storage": "1Gi"}}]}})
    assert r.status_code == 422, r.text
    assert "min value 2Gi is greater than max value 1Gi" in r.json()["message"]


def test_ql4_ql5_quota_refuses_over_limit_and_deletion_releases(http: httpx.Client,
                                                                quota_controller: ControllerManager) -> None:
    ns = _namespace(http, "ql4")
    _quota(http, ns, "q1", {"requests.storage": "10Gi", "persistentvolumeclaims": "5", "count/configmaps": "1"})
    _wait_used(http, ns, "q1", {"requests.storage": "0", "persistentvolumeclaims": "0", "count/configmaps": "0"})
    assert _create_claim(http, ns, "first", "8Gi").status_code == 201
    over = _create_claim(http, ns, "data", "5Gi")
    assert over.status_code == 403, over.text
    assert over.json()["reason"] == "Forbidden"
    assert over.json()["message"] == (
        'persistentvolumeclaims "data" is forbidden: exceeded quota: q1, requested: requests.storage=5Gi, '
        'used: requests.storage=8Gi, limited: requests.storage=10Gi')
    # Object counts: the second ConfigMap is one too many.
    assert http.post(f"/api/v1/namespaces/{ns}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one"}}).status_code == 201
    second = http.post(f"/api/v1/namespaces/{ns}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two"}})
    assert second.status_code == 403 and "exceeded quota: q1" in second.json()["message"], second.text
    # A claim being deleted still holds its quota; once gone, the controller gives it back.
    assert http.delete(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/first").status_code == 200
    assert _create_claim(http, ns, "data", "5Gi").status_code == 403
    r = http.patch(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/first", json={"metadata": {"finalizers": None}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    _wait_used(http, ns, "q1", {"requests.storage": "0", "persistentvolumeclaims": "0", "count/configmaps": "1"})
    assert _create_claim(http, ns, "data", "5Gi").status_code == 201


def test_ql4_per_class_quota_and_dry_run_charges_nothing(http: httpx.Client,
                                                         quota_controller: ControllerManager) -> None:
    ns = _namespace(http, "ql4-class")
    _quota(http, ns, "gold", {"gold.storageclass.storage.k8s.io/requests.storage": "1Gi"})
    _wait_used(http, ns, "gold", {"gold.storageclass.storage.k8s.io/requests.storage": "0"})
    assert _create_claim(http, ns, "silver", "5Gi", "silver").status_code == 201  # another class: not limited
    dry = http.post(f"/api/v1/namespaces/{ns}/persistentvolumeclaims?dryRun=All", json=_claim("g0", "1Gi", "gold"))
    assert dry.status_code == 201, dry.text
    assert _status(http, ns, "gold")["used"] == {"gold.storageclass.storage.k8s.io/requests.storage": "0"}
    assert _create_claim(http, ns, "g1", "1Gi", "gold").status_code == 201
    over = _create_claim(http, ns, "g2", "1Mi", "gold")
    assert over.status_code == 403 and "exceeded quota: gold" in over.json()["message"], over.text


def test_ql8_concurrent_creates_never_exceed_the_quota(http: httpx.Client, module_server: RunningServer) -> None:
    """Admission's charges under the quota's resourceVersion keep the count, whether or not the controller runs
    (QL15: its recounts never follow a create or a charge)."""
    ns = _namespace(http, "ql8")
    _quota(http, ns, "q", {"requests.storage": "5Gi"})
    # The module's server may run the quota controller (another test started it), which writes the same status
    # when it sees the quota: a 409 then only means it was first, and the write is tried again on the new version.
    for _ in range(20):
        r = http.put(f"/api/v1/namespaces/{ns}/resourcequotas/q/status", json={
            **http.get(f"/api/v1/namespaces/{ns}/resourcequotas/q").json(),
            "status": {"hard": {"requests.storage": "5Gi"}, "used": {"requests.storage": "0"}}})
        if r.status_code != 409:
            break
    assert r.status_code == 200, r.text

    def create(i: int) -> int:
        with httpx.Client(base_url=module_server.url, headers={"Authorization": f"Bearer {module_server.token}"},
                          timeout=60, verify=module_server.verify()) as c:
            return _create_claim(c, ns, f"c{i}", "1Gi").status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(create, range(24)))
    assert codes.count(201) == 5, codes
    assert set(codes) <= {201, 403}, codes
    claims = http.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims").json()["items"]
    assert len(claims) == 5
    assert _status(http, ns, "q")["used"] == {"requests.storage": "5Gi"}


def _kubectl(server: RunningServer, tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return subprocess.run([kubectl_binary(), "--kubeconfig", str(server.kubeconfig), "--cache-dir",
                           str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=120, env=clean,
                          input=stdin)


def test_ql1_kubectl_create_get_describe_quota_and_refused_apply(http: httpx.Client, module_server: RunningServer,
                                                                 quota_controller: ControllerManager,
                                                                 tmp_path: Path) -> None:
    ns = _namespace(http, "ql1")
    made = _kubectl(module_server, tmp_path, "-n", ns, "create", "quota", "q",
                    "--hard=requests.storage=1Gi,persistentvolumeclaims=2")
    assert made.returncode == 0, made.stderr
    _wait_used(http, ns, "q", {"requests.storage": "0", "persistentvolumeclaims": "0"})
    listed = _kubectl(module_server, tmp_path, "-n", ns, "get", "quota")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\n")[0].split() == ["NAME", "AGE", "REQUEST", "LIMIT"]
    assert "persistentvolumeclaims: 0/2, requests.storage: 0/1Gi" in listed.stdout
    described = _kubectl(module_server, tmp_path, "-n", ns, "describe", "quota", "q")
    assert described.returncode == 0, described.stderr
    rows = [line.split() for line in described.stdout.splitlines()]
    assert ["Resource", "Used", "Hard"] in rows
    assert ["requests.storage", "0", "1Gi"] in rows and ["persistentvolumeclaims", "0", "2"] in rows
    manifest = ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: big\nspec:\n"
                "  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n"
                "  resources:\n    requests:\n      storage: 2Gi\n")
    applied = _kubectl(module_server, tmp_path, "-n", ns, "apply", "-f", "-", stdin=manifest)
    assert applied.returncode != 0
    assert "Error from server (Forbidden)" in applied.stderr and "exceeded quota: q" in applied.stderr, applied.stderr
    limits = _kubectl(module_server, tmp_path, "-n", ns, "get", "limits")
    assert limits.returncode == 0 and "No resources found" in limits.stderr, limits.stderr


# --- Pods: LimitRange defaults and limits, compute quota (QL10-QL13) -------------------------------------------


def _pod(name: str, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "debian:12", "resources": resources}]}}


def _create_pod(http: httpx.Client, ns: str, pod: dict[str, Any]) -> httpx.Response:
    return http.post(f"/api/v1/namespaces/{ns}/pods", json=pod)


def _limit_range(http: httpx.Client, ns: str, *items: dict[str, Any]) -> dict[str, Any]:
    r = http.post(f"/api/v1/namespaces/{ns}/limitranges", json={
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"}, "spec": {"limits": list(items)}})
    assert r.status_code == 201, r.text
    return r.json()


def test_ql10_ql13_limit_range_defaults_containers_and_refuses_what_breaks_it(http: httpx.Client) -> None:
    from storage.agent.runtime.oci import CPU_PERIOD_US, cgroup_limits

    ns = _namespace(http, "ql10")
    stored = _limit_range(http, ns, {"type": "Container", "max": {"cpu": "1", "memory": "1Gi"},
                                     "min": {"memory": "64Mi"}, "default": {"cpu": "500m", "memory": "256Mi"},
                                     "maxLimitRequestRatio": {"cpu": "2"}},
                          {"type": "Pod", "max": {"memory": "1Gi"}})
    # Kubernetes' LimitRange defaulting: defaultRequest falls back to default.
    assert stored["spec"]["limits"][0]["defaultRequest"] == {"cpu": "500m", "memory": "256Mi"}
    r = _create_pod(http, ns, _pod("bare"))
    assert r.status_code == 201, r.text
    pod = http.get(f"/api/v1/namespaces/{ns}/pods/bare").json()
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"cpu": "500m", "memory": "256Mi"},
                                      "requests": {"cpu": "500m", "memory": "256Mi"}}
    assert pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c")
    # What the agent gives the container's cgroup comes from the stored (defaulted) spec.
    assert cgroup_limits(container) == {"memory": {"limit": 256 * 1024 ** 2},
                                        "cpu": {"shares": 512, "quota": CPU_PERIOD_US // 2, "period": CPU_PERIOD_US}}
    # A set limit is the request when none is given, so only memory's default request applies here.
    r = _create_pod(http, ns, _pod("limited", limits={"cpu": "800m"}))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "800m", "memory": "256Mi"}

    over = _create_pod(http, ns, _pod("p", requests={"memory": "32Mi"}, limits={"cpu": "2"}))
    assert over.status_code == 403, over.text
    assert over.json()["reason"] == "Forbidden"
    assert over.json()["message"] == (
        'pods "p" is forbidden: [minimum memory usage per Container is 64Mi, but request is 32Mi, '
        'maximum cpu usage per Container is 1, but limit is 2]')
    ratio = _create_pod(http, ns, _pod("p", requests={"cpu": "200m"}, limits={"cpu": "800m"}))
    assert ratio.status_code == 403, ratio.text
    assert ratio.json()["message"] == ('pods "p" is forbidden: cpu max limit to request ratio per Container is 2, '
                                       'but provided ratio is 4.000000')
    two = _pod("p", limits={"memory": "768Mi"})
    two["spec"]["containers"].append({"name": "d", "image": "debian:12", "resources": {"limits": {"memory": "768Mi"}}})
    summed = _create_pod(http, ns, two)
    assert summed.status_code == 403, summed.text
    assert summed.json()["message"] == 'pods "p" is forbidden: maximum memory usage per Pod is 1Gi, but limit is 1536Mi'
    assert http.get(f"/api/v1/namespaces/{ns}/pods/p").status_code == 404


def _set_phase(http: httpx.Client, ns: str, name: str, phase: str) -> None:
    pod = http.get(f"/api/v1/namespaces/{ns}/pods/{name}").json()
    r = http.put(f"/api/v1/namespaces/{ns}/pods/{name}/status", json={**pod, "status": {**pod["status"], "phase": phase}})
    assert r.status_code == 200, r.text


def test_ql11_ql12_compute_quota_counts_live_pods_and_needs_every_container_to_state_it(
        http: httpx.Client, quota_controller: ControllerManager) -> None:
    ns = _namespace(http, "ql11")
    _quota(http, ns, "q", {"requests.cpu": "1", "limits.memory": "1Gi", "count/pods": "10"})
    _wait_used(http, ns, "q", {"requests.cpu": "0", "limits.memory": "0", "count/pods": "0"})
    bare = _create_pod(http, ns, _pod("p"))
    assert bare.status_code == 403, bare.text
    assert bare.json()["message"] == ('pods "p" is forbidden: failed quota: q: must specify limits.memory for: c; '
                                      'requests.cpu for: c')
    first = _create_pod(http, ns, _pod("first", requests={"cpu": "600m"}, limits={"memory": "512Mi"}))
    assert first.status_code == 201, first.text
    _wait_used(http, ns, "q", {"requests.cpu": "600m", "limits.memory": "512Mi", "count/pods": "1"})
    over = _create_pod(http, ns, _pod("second", requests={"cpu": "500m"}, limits={"memory": "512Mi"}))
    assert over.status_code == 403, over.text
    assert over.json()["message"] == ('pods "second" is forbidden: exceeded quota: q, requested: requests.cpu=500m, '
                                      'used: requests.cpu=600m, limited: requests.cpu=1')
    # A finished pod gives its compute back; it still counts as a stored pod.
    _set_phase(http, ns, "first", "Succeeded")
    _wait_used(http, ns, "q", {"requests.cpu": "0", "limits.memory": "0", "count/pods": "1"})
    assert _create_pod(http, ns, _pod("second", requests={"cpu": "500m"}, limits={"memory": "512Mi"})).status_code == 201


def test_ql12_limit_range_defaults_are_what_the_quota_charges(http: httpx.Client,
                                                               quota_controller: ControllerManager) -> None:
    ns = _namespace(http, "ql12")
    _limit_range(http, ns, {"type": "Container", "default": {"cpu": "300m", "memory": "128Mi"}})
    _quota(http, ns, "q", {"requests.cpu": "500m", "limits.memory": "1Gi"})
    _wait_used(http, ns, "q", {"requests.cpu": "0", "limits.memory": "0"})
    assert _create_pod(http, ns, _pod("a")).status_code == 201
    _wait_used(http, ns, "q", {"requests.cpu": "300m", "limits.memory": "128Mi"})
    over = _create_pod(http, ns, _pod("b"))
    assert over.status_code == 403, over.text
    assert "exceeded quota: q, requested: requests.cpu=300m, used: requests.cpu=300m" in over.json()["message"]


def test_ql10_ql11_kubectl_shows_defaults_and_compute_quota_refusal(http: httpx.Client, module_server: RunningServer,
                                                                    quota_controller: ControllerManager,
                                                                    tmp_path: Path) -> None:
    ns = _namespace(http, "ql10-kubectl")
    _limit_range(http, ns, {"type": "Container", "default": {"cpu": "250m", "memory": "128Mi"}})
    ran = _kubectl(module_server, tmp_path, "-n", ns, "run", "web", "--image=debian:12", "--restart=Never")
    assert ran.returncode == 0, ran.stderr
    shown = _kubectl(module_server, tmp_path, "-n", ns, "get", "pod", "web", "-o", "yaml")
    assert shown.returncode == 0, shown.stderr
    assert ("    resources:\n      limits:\n        cpu: 250m\n        memory: 128Mi\n"
            "      requests:\n        cpu: 250m\n        memory: 128Mi\n") in shown.stdout, shown.stdout
    assert yaml.safe_load(shown.stdout)["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container web; cpu, memory limit for container web")
    made = _kubectl(module_server, tmp_path, "-n", ns, "create", "quota", "compute", "--hard=requests.cpu=400m")
    assert made.returncode == 0, made.stderr
    _wait_used(http, ns, "compute", {"requests.cpu": "250m"})
    refused = _kubectl(module_server, tmp_path, "-n", ns, "run", "web2", "--image=debian:12", "--restart=Never")
    assert refused.returncode != 0
    assert refused.stderr.strip() == (
        'Error from server (Forbidden): pods "web2" is forbidden: exceeded quota: compute, requested: '
        'requests.cpu=250m, used: requests.cpu=250m, limited: requests.cpu=400m'), refused.stderr
