"""Issue 8 item 2: Pod Security Admission with Kubernetes' levels, labels and messages.

The pure checks are tested against the wording of Kubernetes' own checks
(pod-security-admission, policy version latest); the admission plugin over
real HTTP: enforce refuses, warn sends ``Warning: 299`` headers, audit logs,
workloads are only warned, and a namespace without labels gets Stowage's
default level, baseline.
"""
from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml
from structlog.testing import capture_logs

from serverutil import running_server

from storage.api.podsecurity import LevelVersion, Violation, check_pod, describe, parse_policy
from storage.apiserver.server import RunningServer, start_in_thread
from storage.store import open_store
from support import stowage_executable

BASELINE, RESTRICTED, PRIVILEGED = LevelVersion("baseline"), LevelVersion("restricted"), LevelVersion("privileged")
ENFORCE = "pod-security.kubernetes.io/enforce"


def spec(**extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": "c", "image": "busybox"}], **extra}


def with_container_sc(sc: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": "c", "image": "busybox", "securityContext": sc}], **extra}


def restricted_spec(**pod_sc: Any) -> dict[str, Any]:
    return {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}, **pod_sc},
        "containers": [{"name": "c", "image": "busybox", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    }


def message(level: LevelVersion, pod_spec: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    return describe(check_pod(level, meta or {}, pod_spec))


# ---- the checks, one by one, with Kubernetes' words ------------------------------------------

@pytest.mark.parametrize(("pod_spec", "meta", "expected"), [
    (spec(hostNetwork=True, hostPID=True, hostIPC=True), {}, "host namespaces (hostIPC=true, hostNetwork=true, hostPID=true)"),
    (with_container_sc({"privileged": True}), {}, 'privileged (container "c" must not set securityContext.privileged=true)'),
    (with_container_sc({"capabilities": {"add": ["SYS_ADMIN", "CHOWN", "DAC_READ_SEARCH"]}}), {},
     'non-default capabilities (container "c" must not include "DAC_READ_SEARCH", "SYS_ADMIN" in securityContext.capabilities.add)'),
    (spec(volumes=[{"name": "data", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}]), {},
     'hostPath volumes (volume "data")'),
    ({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]},
                     {"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 443}]}]}, {},
     'hostPort (containers "a", "b" use hostPorts 443, 8080)'),
    (spec(securityContext={"appArmorProfile": {"type": "Unconfined"}}), {},
     'forbidden AppArmor profile (pod must not set AppArmor profile type to "Unconfined")'),
    (spec(), {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}},
     'forbidden AppArmor profile (annotation must not set AppArmor profile type to '
     '"container.apparmor.security.beta.kubernetes.io/c="unconfined"")'),
    (spec(securityContext={"seLinuxOptions": {"type": "spc_t", "user": "root"}}), {},
     'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "spc_t"; user may not be set)'),
    (with_container_sc({"procMount": "Unmasked"}), {},
     'procMount (container "c" must not set securityContext.procMount to "Unmasked")'),
    (spec(securityContext={"seccompProfile": {"type": "Unconfined"}}), {},
     'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")'),
    (spec(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_rmem", "value": "1 2 3"}]}),
     {}, "forbidden sysctls (kernel.msgmax)"),
    (with_container_sc({"windowsOptions": {"hostProcess": True}}, securityContext={"windowsOptions": {"hostProcess": True}}), {},
     'hostProcess (pod and container "c" must not set securityContext.windowsOptions.hostProcess=true)'),
    ({"containers": [{"name": "c", "image": "x", "livenessProbe": {"httpGet": {"host": "169.254.169.254", "port": 80}}}]}, {},
     'probe or lifecycle host (container "c" uses probe or lifecycle host "169.254.169.254")'),
])
def test_each_baseline_check_refuses_with_kubernetes_words(pod_spec: dict[str, Any], meta: dict[str, Any], expected: str) -> None:
    assert message(BASELINE, pod_spec, meta) == expected
    assert message(PRIVILEGED, pod_spec, meta) == ""  # privileged allows everything


def test_baseline_allows_what_kubernetes_allows() -> None:
    allowed = {
        "hostUsers": True,  # no level restricts hostUsers itself
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "appArmorProfile": {"type": "Localhost", "localhostProfile": "p"},
                            "seLinuxOptions": {"type": "container_engine_t"}, "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 1"}]},
        "volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}],
        "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}],
                        "securityContext": {"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE", "SYS_CHROOT"]},
                                            "procMount": "Default", "privileged": False}}],
    }
    assert check_pod(BASELINE, {}, allowed) == []


def test_the_default_pod_fails_restricted_with_the_four_familiar_reasons_in_kubernetes_order() -> None:
    assert message(RESTRICTED, spec()) == (
        'allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), '
        'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
    )
    assert check_pod(RESTRICTED, {}, restricted_spec()) == []


def test_restricted_checks() -> None:
    volumes = restricted_spec()
    volumes["volumes"] = [{"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {"server": "s", "path": "/"}},
                          {"name": "ok", "persistentVolumeClaim": {"claimName": "c"}}, {"name": "odd", "somethingNew": {}}]
    assert message(RESTRICTED, volumes) == (
        'restricted volume types (volumes "h", "n", "odd" use restricted volume types "hostPath", "nfs", "unknown")')

    root = restricted_spec(runAsUser=0)
    assert message(RESTRICTED, root) == "runAsUser=0 (pod must not set runAsUser=0)"
    caps = restricted_spec()
    caps["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE", "SYS_TIME"]
    assert message(RESTRICTED, caps) == (
        'unrestricted capabilities (container "c" must not include "SYS_TIME" in securityContext.capabilities.add)')
    caps["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    assert check_pod(RESTRICTED, {}, caps) == []
    explicit = restricted_spec(runAsNonRoot=False)
    assert message(RESTRICTED, explicit) == "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)"


def test_user_namespaces_relax_what_kubernetes_relaxes_and_nothing_more() -> None:
    """Policy v1.35+: hostUsers=false skips runAsNonRoot/runAsUser and baseline procMount; restricted procMount stays."""
    userns = restricted_spec(runAsUser=0)
    del userns["securityContext"]["runAsNonRoot"]
    userns["containers"][0]["securityContext"]["procMount"] = "Unmasked"
    assert [v.check for v in check_pod(RESTRICTED, {}, userns)] == ["procMount_restricted", "runAsNonRoot", "runAsUser"]
    userns["hostUsers"] = False
    assert [v.check for v in check_pod(RESTRICTED, {}, userns)] == ["procMount_restricted"]
    assert check_pod(BASELINE, {}, userns) == []
    assert [v.check for v in check_pod(LevelVersion("restricted", "v1.34"), {}, userns)] == [
        "procMount", "runAsNonRoot", "runAsUser"]


def test_pinned_versions_use_that_versions_rules() -> None:
    rmem = spec(securityContext={"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1 2 3"}]})
    assert check_pod(BASELINE, {}, rmem) == []
    assert message(LevelVersion("baseline", "v1.31"), rmem) == "forbidden sysctls (net.ipv4.tcp_rmem)"
    probe = {"containers": [{"name": "c", "image": "x", "readinessProbe": {"tcpSocket": {"host": "10.0.0.1", "port": 1}}}]}
    assert check_pod(LevelVersion("baseline", "v1.33"), {}, probe) == []
    assert check_pod(LevelVersion("baseline", "v1.34"), {}, probe) != []


def test_labels_parse_as_kubernetes_parses_them() -> None:
    policy, errors = parse_policy({ENFORCE: "restricted", f"{ENFORCE}-version": "v1.30",
                                   "pod-security.kubernetes.io/warn": "baseline"}, BASELINE)
    assert (str(policy.enforce), str(policy.warn), str(policy.audit)) == ("restricted:v1.30", "baseline:latest", "baseline:latest")
    assert errors == []
    policy, errors = parse_policy({ENFORCE: "Privileged", "pod-security.kubernetes.io/audit-version": "1.30"}, BASELINE)
    assert policy.enforce.level == "restricted"  # a bad level fails closed
    assert {(e.field, e.detail) for e in errors} == {
        (f"metadata.labels[{ENFORCE}]", "must be one of privileged, baseline, restricted"),
        ("metadata.labels[pod-security.kubernetes.io/audit-version]", 'must be "latest" or "v1.x"'),
    }


def test_hostile_shapes_do_not_break_the_checks() -> None:
    for hostile in ({"containers": "x"}, {"containers": [None, 1, {"securityContext": "x"}]}, {"volumes": [1, None]},
                    {"securityContext": {"sysctls": [None, {"name": 3}]}}, None, [], "spec"):
        for level in (BASELINE, RESTRICTED):
            assert all(isinstance(v, Violation) for v in check_pod(level, {"annotations": "x"}, hostile))


# ---- the admission plugin over HTTP ------------------------------------------------------------

@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[RunningServer, Any]] = []

    def start(default: str = "baseline") -> httpx.Client:
        data_dir = tmp_path / f"apiserver-{len(started)}"
        data_dir.mkdir()
        store = open_store(str(data_dir / "stowage.db"))
        srv = start_in_thread(store, data_dir=data_dir, pod_security_default=default)
        started.append((srv, store))
        return httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60, verify=srv.verify())

    try:
        yield start
    finally:
        for srv, store in started:
            srv.stop()
            store.close()


@pytest.fixture
def http(server_factory: Any) -> httpx.Client:
    return server_factory()  # type: ignore[no-any-return]


def pod(name: str, pod_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec or spec()}


def namespace(http: httpx.Client, name: str, **labels: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {f"pod-security.kubernetes.io/{k.replace('_', '-')}": v for k, v in labels.items()}}}
    response = http.post("/api/v1/namespaces", json=body)
    assert response.status_code == 201, response.text


HOSTPATH = spec(volumes=[{"name": "data", "hostPath": {"path": "/"}}], hostNetwork=True)


def test_a_hostpath_pod_is_refused_in_an_unlabelled_namespace_and_allowed_under_enforce_privileged(http: httpx.Client) -> None:
    response = http.post("/api/v1/namespaces/default/pods", json=pod("x", HOSTPATH))
    assert response.status_code == 403
    status = response.json()
    assert status["reason"] == "Forbidden"
    assert status["message"] == ('pods "x" is forbidden: violates PodSecurity "baseline:latest": '
                                 'host namespaces (hostNetwork=true), hostPath volumes (volume "data")')
    assert http.get("/api/v1/namespaces/default/pods").json()["items"] == []

    namespace(http, "infra", enforce="privileged")
    response = http.post("/api/v1/namespaces/infra/pods", json=pod("x", HOSTPATH))
    assert response.status_code == 201, response.text
    # Only enforce was relaxed: warn still has the server's default level (baseline), so the pod comes with a warning.
    assert response.headers.get_list("warning") == ['299 - "would violate PodSecurity \\"baseline:latest\\": '
                                                    'host namespaces (hostNetwork=true), hostPath volumes (volume \\"data\\")"']


def test_a_plain_pod_passes_the_default_without_warnings(http: httpx.Client) -> None:
    response = http.post("/api/v1/namespaces/default/pods", json=pod("plain"))
    assert response.status_code == 201 and response.headers.get_list("warning") == []


def test_added_capabilities_beyond_baseline_need_a_namespace_that_allows_them(http: httpx.Client) -> None:
    escape = with_container_sc({"capabilities": {"add": ["DAC_READ_SEARCH"]}})
    response = http.post("/api/v1/namespaces/default/pods", json=pod("escape", escape))
    assert response.status_code == 403
    assert 'non-default capabilities (container "c" must not include "DAC_READ_SEARCH"' in response.json()["message"]
    privileged = with_container_sc({"privileged": True})
    assert http.post("/api/v1/namespaces/default/pods", json=pod("priv", privileged)).status_code == 403


def test_enforce_restricted_and_warn_and_audit_labels(http: httpx.Client) -> None:
    namespace(http, "strict", enforce="restricted")
    response = http.post("/api/v1/namespaces/strict/pods", json=pod("p"))
    assert response.status_code == 403
    assert response.json()["message"].startswith('pods "p" is forbidden: violates PodSecurity "restricted:latest": '
                                                 "allowPrivilegeEscalation != false")
    assert http.post("/api/v1/namespaces/strict/pods", json=pod("ok", restricted_spec())).status_code == 201

    namespace(http, "lenient", enforce="privileged", warn="restricted", audit="baseline")
    with capture_logs() as logs:
        response = http.post("/api/v1/namespaces/lenient/pods", json=pod("p", HOSTPATH))
    assert response.status_code == 201
    (warning,) = response.headers.get_list("warning")
    assert warning.startswith('299 - "would violate PodSecurity \\"restricted:latest\\": allowPrivilegeEscalation != false')
    audits = [e for e in logs if e["event"] == "pod security audit"]
    assert [(e["namespace"], e["name"], e["policy"]) for e in audits] == [("lenient", "p", "baseline:latest")]
    assert audits[0]["violations"] == 'host namespaces (hostNetwork=true), hostPath volumes (volume "data")'


def test_pinned_version_labels_appear_in_the_message(http: httpx.Client) -> None:
    namespace(http, "pinned", enforce="baseline", enforce_version="v1.31")
    rmem = spec(securityContext={"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}]})
    response = http.post("/api/v1/namespaces/pinned/pods", json=pod("p", rmem))
    assert response.status_code == 403
    assert response.json()["message"] == 'pods "p" is forbidden: violates PodSecurity "baseline:v1.31": forbidden sysctls (net.ipv4.tcp_rmem)'
    assert http.post("/api/v1/namespaces/default/pods", json=pod("p", rmem)).status_code == 201


def test_workloads_are_warned_not_refused(http: httpx.Client) -> None:
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
           "spec": {"serviceName": "web", "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": HOSTPATH}}}
    response = http.post("/apis/apps/v1/namespaces/default/statefulsets", json=sts)
    assert response.status_code == 201, response.text
    assert response.headers.get_list("warning") == ['299 - "would violate PodSecurity \\"baseline:latest\\": '
                                                    'host namespaces (hostNetwork=true), hostPath volumes (volume \\"data\\")"']
    # An update that leaves the template alone is not warned again.
    patch = {"metadata": {"labels": {"tier": "front"}}}
    response = http.patch("/apis/apps/v1/namespaces/default/statefulsets/web", json=patch,
                          headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200 and response.headers.get_list("warning") == []


def test_namespace_labels_are_validated(http: httpx.Client) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bad", "labels": {ENFORCE: "root"}}}
    response = http.post("/api/v1/namespaces", json=body)
    assert response.status_code == 422
    assert response.json()["message"] == (
        f'Namespace "bad" is invalid: metadata.labels[{ENFORCE}]: Invalid value: "root": must be one of privileged, baseline, restricted')


def test_tightening_a_namespace_warns_about_its_existing_pods_and_leaves_them_be(http: httpx.Client) -> None:
    namespace(http, "apps", enforce="privileged")
    for name in ("a", "b", "c"):
        assert http.post("/api/v1/namespaces/apps/pods", json=pod(name, HOSTPATH)).status_code == 201
    assert http.post("/api/v1/namespaces/apps/pods", json=pod("fine")).status_code == 201
    response = http.patch("/api/v1/namespaces/apps", json={"metadata": {"labels": {ENFORCE: "baseline"}}},
                          headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200
    assert response.headers.get_list("warning") == [
        '299 - "existing pods in namespace \\"apps\\" violate the new PodSecurity enforce level \\"baseline:latest\\""',
        '299 - "a (and 2 other pods): host namespaces, hostPath volumes"',
    ]
    # Existing pods stay; an update that changes nothing Pod Security looks at still goes through (e.g. a label).
    response = http.patch("/api/v1/namespaces/apps/pods/a", json={"metadata": {"labels": {"x": "y"}}},
                          headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text
    assert http.post("/api/v1/namespaces/apps/pods", json=pod("d", HOSTPATH)).status_code == 403


@pytest.mark.parametrize(("default", "plain", "hostpath"), [("privileged", 201, 201), ("baseline", 201, 403), ("restricted", 403, 403)])
def test_the_server_default_level_is_configurable(server_factory: Any, default: str, plain: int, hostpath: int) -> None:
    http = server_factory(default)
    assert http.post("/api/v1/namespaces/default/pods", json=pod("plain")).status_code == plain
    assert http.post("/api/v1/namespaces/default/pods", json=pod("host", copy.deepcopy(HOSTPATH))).status_code == hostpath
    # A label still wins over the default either way.
    namespace(http, "open", enforce="privileged")
    assert http.post("/api/v1/namespaces/open/pods", json=pod("host", copy.deepcopy(HOSTPATH))).status_code == 201


def test_stowage_apply_shows_warnings_and_refusals_as_kubectl_does(tmp_path: Path) -> None:
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
           "spec": {"serviceName": "web", "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec(hostNetwork=True)}}}
    files = {"sts.yaml": sts, "pod.yaml": pod("host", HOSTPATH)}
    for name, obj in files.items():
        (tmp_path / name).write_text(yaml.safe_dump(obj))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    with running_server(tmp_path) as srv:
        def apply(name: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([stowage_executable(), "apply", "-f", str(tmp_path / name), "--kubeconfig", str(srv.kubeconfig)],
                                  capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)

        done = apply("sts.yaml")
        assert done.returncode == 0, done.stderr
        assert 'Warning: would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)' in done.stderr
        done = apply("pod.yaml")
        assert done.returncode != 0
        assert ('pods "host" is forbidden: violates PodSecurity "baseline:latest": '
                'host namespaces (hostNetwork=true), hostPath volumes (volume "data")') in done.stderr


def test_updates_that_change_nothing_pod_security_reads_are_not_evaluated() -> None:
    from storage.apiserver.admission import _security_relevant

    base = {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}], "hostNetwork": True}
    bound = {**copy.deepcopy(base), "nodeName": "node-1", "tolerations": [{"operator": "Exists"}]}
    assert _security_relevant({"labels": {"a": "b"}}, bound) == _security_relevant({}, base)
    for changed in ({**base, "hostPID": True},
                    {**base, "containers": [{"name": "c", "image": "other", "securityContext": {"privileged": True}}]},
                    {**base, "volumes": [{"name": "v", "hostPath": {"path": "/"}}]}):
        assert _security_relevant({}, changed) != _security_relevant({}, base)
    assert (_security_relevant({"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}, base)
            != _security_relevant({}, base))
