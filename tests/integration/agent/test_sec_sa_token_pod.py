"""A real pod (real agent, runc) uses its projected service-account token the way in-cluster client config does:
``$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` over HTTPS verified with the projected ``ca.crt``,
``Authorization: Bearer <token>``, in the namespace of the projected ``namespace`` file."""
from __future__ import annotations

import json

from agent_cluster import Cluster, pod, wait_until
from support import need_programs

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _in_cluster_script() -> str:
    """Asks the API server who the pod is (SelfSubjectReview, which every authenticated user may create)."""
    body = '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'
    return (
        f'ns=$(cat {SA_DIR}/namespace); token=$(cat {SA_DIR}/token); '
        f'base="https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"; '
        f'code=$(curl -s -o /tmp/out -w "%{{http_code}}" --cacert {SA_DIR}/ca.crt -H "Authorization: Bearer $token" '
        f'-H "Content-Type: application/json" -X POST --data \'{body}\' '
        f'"$base/apis/authentication.k8s.io/v1/selfsubjectreviews"); '
        f'echo "namespace=$ns create=$code"; cat /tmp/out; echo; '
        "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"
    )


def test_pod_calls_the_api_with_its_projected_token(cluster: Cluster) -> None:
    need_programs("curl")
    cluster.start_controllers()
    cluster.add_agent("n1")
    created = cluster.apply(pod("caller", _in_cluster_script()))[0]
    # Admission gave it the default service account and the kube-api-access projected volume.
    spec = created["spec"]
    assert spec["serviceAccountName"] == "default"
    [access] = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert {"name": access["name"], "readOnly": True, "mountPath": SA_DIR} in spec["containers"][0]["volumeMounts"]
    cluster.wait_running("caller")
    log = wait_until(lambda: (lambda t: t if "create=" in t and "userInfo" in t else None)(
        b"".join(cluster.client.logs("caller", "default")).decode()), "the pod's report", 90)
    assert "namespace=default create=201" in log
    review = json.loads(log.split("create=201", 1)[1].strip().splitlines()[0])
    assert review["status"]["userInfo"]["username"] == "system:serviceaccount:default:default"
    assert "system:serviceaccounts:default" in review["status"]["userInfo"]["groups"]


def test_automount_false_projects_nothing(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    created = cluster.apply(pod("quiet", f"test ! -e {SA_DIR}/token && echo absent; "
                                         "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                                automountServiceAccountToken=False))[0]
    assert not any(v["name"].startswith("kube-api-access-") for v in created["spec"].get("volumes") or [])
    cluster.wait_running("quiet")
    wait_until(lambda: "absent" in b"".join(cluster.client.logs("quiet", "default")).decode(), "the pod's report", 60)


def test_a_pod_waits_for_its_service_account_then_starts(cluster: Cluster) -> None:
    """Created before its namespace has a default account (no controllers yet): it waits, and starts once the
    account and the root CA exist, with nothing else happening to wake it."""
    cluster.add_agent("n1")
    cluster.apply(pod("early", "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; "
                               "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done", nodeName="n1"))

    def waiting_for_account(p: dict) -> bool:
        return any('serviceaccount "default" not found' in str((cs.get("state") or {}).get("waiting"))
                   for cs in (p.get("status") or {}).get("containerStatuses") or [])
    cluster.wait_pod("early", waiting_for_account, "waiting for its service account")
    cluster.start_controllers()
    cluster.wait_running("early")
    wait_until(lambda: "default" in b"".join(cluster.client.logs("early", "default")).decode(), "the namespace file", 60)
