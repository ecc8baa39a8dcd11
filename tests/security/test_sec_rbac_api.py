"""RBAC through the real API server: token-file users, default roles, aggregation, access reviews.

The attack of issue 8 reproduced here: a ``view`` user reading Secrets, in its
own namespace and across namespaces. Uses httpx and the kubernetes client:
kubectl sends bearer tokens only over TLS, which this server does not serve yet (see
test_sec_kubectl_auth.py). SEMANTICS R1-R5, R8 (proposed with this change).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from sec_authz_util import (
    RBAC,
    AuthzServer,
    authz_server,
    cluster_role,
    config_map,
    namespace,
    pod,
    role_binding,
    secret,
    until,
)
from storage.errors import Forbidden

USERS = {
    "alice": ("team-a",),
    "bob": (),
    "carol": (),
    "dave": (),
    "system:serviceaccount:ns1:robot": (),
}


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[AuthzServer]:
    with authz_server(tmp_path, USERS) as s:
        admin = s.admin()
        for ns in ("ns1", "ns2"):
            admin.create(namespace(ns))
            admin.create(secret("s", ns))
            admin.create(config_map("cm", ns))
            admin.create(pod("p", ns))
        admin.create(role_binding("alice-view", "ns1", "view", user="alice"))
        yield s


def test_view_user_lists_pods_but_reads_no_secret_in_its_namespace(srv: AuthzServer) -> None:
    alice = srv.client("alice")
    items, _ = alice.list("pods", "ns1")
    assert [p["metadata"]["name"] for p in items] == ["p"]
    assert alice.get("configmaps", "cm", "ns1")["data"] == {"k": "v"}
    resp = srv.http("alice", "GET", "/api/v1/namespaces/ns1/secrets/s")
    assert resp.status_code == 403
    status = resp.json()
    assert status["reason"] == "Forbidden" and status["kind"] == "Status"
    assert status["message"] == ('secrets "s" is forbidden: User "alice" cannot get resource "secrets" '
                                 'in API group "" in the namespace "ns1"')
    assert "c2VjcmV0" not in resp.text
    listed = srv.http("alice", "GET", "/api/v1/namespaces/ns1/secrets")
    assert listed.status_code == 403 and "c2VjcmV0" not in listed.text
    watched = srv.http("alice", "GET", "/api/v1/namespaces/ns1/secrets?watch=true")
    assert watched.status_code == 403
    # No writes either: view is read-only.
    with pytest.raises(Forbidden):
        alice.create(config_map("mine", "ns1"))


def test_view_user_reads_nothing_in_another_namespace(srv: AuthzServer) -> None:
    for path in ("/api/v1/namespaces/ns2/secrets/s", "/api/v1/namespaces/ns2/pods", "/api/v1/namespaces/ns2/configmaps/cm",
                 "/api/v1/secrets", "/api/v1/pods"):
        resp = srv.http("alice", "GET", path)
        assert resp.status_code == 403, path
        assert "c2VjcmV0" not in resp.text
    assert srv.http("alice", "GET", "/api/v1/pods").json()["message"] == (
        'pods is forbidden: User "alice" cannot list resource "pods" in API group "" at the cluster scope')


def test_user_without_bindings_gets_only_discovery(srv: AuthzServer) -> None:
    assert srv.http("bob", "GET", "/api").status_code == 200  # system:discovery via system:authenticated
    assert srv.http("bob", "GET", "/apis/apps/v1").status_code == 200
    resp = srv.http("bob", "GET", "/api/v1/namespaces")
    assert resp.status_code == 403
    assert resp.json()["message"] == ('namespaces is forbidden: User "bob" cannot list resource "namespaces" '
                                      'in API group "" at the cluster scope')
    assert srv.http("bob", "GET", "/healthz").status_code == 200


def test_a_new_binding_works_at_once_and_its_removal_too(srv: AuthzServer) -> None:
    admin = srv.admin()
    assert srv.http("bob", "GET", "/api/v1/namespaces/ns2/secrets/s").status_code == 403
    admin.create(role_binding("bob-edit", "ns2", "edit", user="bob"))
    # Read-your-writes: the binding applies to the next request, no waiting.
    assert srv.http("bob", "GET", "/api/v1/namespaces/ns2/secrets/s").status_code == 200
    assert srv.http("bob", "GET", "/api/v1/namespaces/ns1/secrets/s").status_code == 403
    admin.delete("rolebindings", "bob-edit", "ns2")
    until(lambda: srv.http("bob", "GET", "/api/v1/namespaces/ns2/secrets/s").status_code == 403,
          "bob to lose edit in ns2")


def test_group_role_and_service_account_subjects(srv: AuthzServer) -> None:
    admin = srv.admin()
    admin.create({"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": "cm-reader", "namespace": "ns2"},
                  "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["cm"]}]})
    admin.create(role_binding("team-a", "ns2", "cm-reader", group="team-a", kind="Role"))
    assert srv.http("alice", "GET", "/api/v1/namespaces/ns2/configmaps/cm").status_code == 200
    assert srv.http("alice", "GET", "/api/v1/namespaces/ns2/configmaps").status_code == 403  # resourceNames: no list
    sa = "system:serviceaccount:ns1:robot"
    assert srv.http(sa, "GET", "/api/v1/namespaces/ns1/pods").status_code == 403
    admin.create(role_binding("robot", "ns1", "view", sa=("ns1", "robot")))
    assert srv.http(sa, "GET", "/api/v1/namespaces/ns1/pods").status_code == 200
    # A ServiceAccount subject names one account in one namespace, not a user called "robot".
    admin.create(role_binding("robot-ns2", "ns2", "view", sa=("ns2", "robot")))
    assert srv.http(sa, "GET", "/api/v1/namespaces/ns2/pods").status_code == 403


def test_aggregation_grows_view_edit_and_admin(srv: AuthzServer) -> None:
    admin = srv.admin()
    view = admin.get("clusterroles", "view")
    assert view["aggregationRule"]["clusterRoleSelectors"] == [{"matchLabels": {f"{RBAC}/aggregate-to-view": "true"}}]
    assert not any("secrets" in r.get("resources", []) for r in view["rules"])
    assert srv.http("alice", "GET", "/api/v1/namespaces/ns1/events").status_code == 200
    assert srv.http("alice", "GET", "/apis/storage.k8s.io/v1/storageclasses").status_code == 403
    admin.create(cluster_role("sc-viewer", [{"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"],
                                             "verbs": ["get", "list", "watch"]}],
                              labels={f"{RBAC}/aggregate-to-view": "true"}))
    wanted = {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]}
    for role in ("view", "edit", "admin"):
        until(lambda: wanted in admin.get("clusterroles", role)["rules"], f"{role} to aggregate sc-viewer")
    # A RoleBinding to a ClusterRole grants it in the binding's namespace only (storage classes are cluster-wide).
    assert srv.http("alice", "GET", "/apis/storage.k8s.io/v1/storageclasses").status_code == 403
    admin.delete("clusterroles", "sc-viewer")
    until(lambda: wanted not in admin.get("clusterroles", "admin")["rules"], "admin to drop sc-viewer's rules")
    # Edits to an aggregated role's rules are put back (level-triggered).
    view = admin.get("clusterroles", "view")
    admin.update({**view, "rules": []})
    until(lambda: admin.get("clusterroles", "view")["rules"], "view's rules to come back")


def test_bootstrap_policy_is_kubernetes_shaped(srv: AuthzServer) -> None:
    admin = srv.admin()
    names = {r["metadata"]["name"] for r in admin.list("clusterroles")[0]}
    assert {"cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user",
            "system:public-info-viewer", "system:node"} <= names
    binding = admin.get("clusterrolebindings", "cluster-admin")
    assert binding["subjects"] == [{"apiGroup": RBAC, "kind": "Group", "name": "system:masters"}]
    edit = admin.get("clusterroles", "edit")
    assert any("secrets" in r.get("resources", []) and "get" in r["verbs"] for r in edit["rules"])
    bad = srv.http("admin", "POST", f"/apis/{RBAC}/v1/namespaces/ns1/rolebindings",
                   json={"metadata": {"name": "x"}, "roleRef": {"apiGroup": RBAC, "kind": "Nope", "name": "v"},
                         "subjects": [{"kind": "Robot", "name": "r"}]})
    assert bad.status_code == 422
    assert {c["field"] for c in bad.json()["details"]["causes"]} == {"roleRef.kind", "subjects[0].kind"}
    rb = admin.get("rolebindings", "alice-view", "ns1")
    changed = srv.http("admin", "PUT", f"/apis/{RBAC}/v1/namespaces/ns1/rolebindings/alice-view",
                       json={**rb, "roleRef": {**rb["roleRef"], "name": "edit"}})
    assert changed.status_code == 422 and "cannot change roleRef" in changed.text


def test_self_subject_access_review_and_rules_review(srv: AuthzServer) -> None:
    def can(user: str, verb: str, resource: str, ns: str = "ns1", name: str = "") -> bool:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "resource": resource, "name": name}}}
        resp = srv.http(user, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=body)
        assert resp.status_code == 201, resp.text
        return bool(resp.json()["status"]["allowed"])

    assert can("alice", "list", "pods") and not can("alice", "get", "secrets", name="s")
    assert not can("alice", "list", "pods", ns="ns2")
    assert can("admin", "delete", "nodes", ns="")
    rules = srv.http("alice", "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                     json={"kind": "SelfSubjectRulesReview", "spec": {"namespace": "ns1"}}).json()["status"]
    assert any("pods" in r.get("resources", []) and "list" in r["verbs"] for r in rules["resourceRules"])
    assert not any("secrets" in r.get("resources", []) for r in rules["resourceRules"])
    assert any("/api" in r["nonResourceURLs"] for r in rules["nonResourceRules"])
    me = srv.http("alice", "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                  json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert me.status_code == 201
    assert me.json()["status"]["userInfo"] == {"username": "alice", "uid": "uid-alice",
                                               "groups": ["team-a", "system:authenticated"]}
    # Reviews are answered, never stored: nothing to get or list.
    assert srv.http("admin", "GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").status_code == 405


def test_subject_access_review_needs_permission_and_answers_for_others(srv: AuthzServer) -> None:
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "alice", "groups": ["team-a"],
                     "resourceAttributes": {"namespace": "ns1", "verb": "get", "resource": "secrets"}}}
    denied = srv.http("alice", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", json=body)
    assert denied.status_code == 403
    answer = srv.http("admin", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", json=body).json()
    assert answer["status"]["allowed"] is False
    body["spec"]["resourceAttributes"]["resource"] = "pods"
    assert srv.http("admin", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                    json=body).json()["status"]["allowed"] is True
    non_resource = {"kind": "SubjectAccessReview",
                    "spec": {"user": "x", "groups": ["system:authenticated"],
                             "nonResourceAttributes": {"path": "/apis/apps", "verb": "get"}}}
    assert srv.http("admin", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                    json=non_resource).json()["status"]["allowed"] is True
    local = {"kind": "LocalSubjectAccessReview",
             "spec": {"user": "alice", "resourceAttributes": {"namespace": "ns2", "verb": "list", "resource": "pods"}}}
    wrong_ns = srv.http("admin", "POST", "/apis/authorization.k8s.io/v1/namespaces/ns1/localsubjectaccessreviews",
                        json=local)
    assert wrong_ns.status_code == 400 and "must match namespace" in wrong_ns.text
    local["spec"]["resourceAttributes"]["namespace"] = "ns1"
    ok = srv.http("admin", "POST", "/apis/authorization.k8s.io/v1/namespaces/ns1/localsubjectaccessreviews", json=local)
    assert ok.status_code == 201 and ok.json()["status"]["allowed"] is True


def test_kubernetes_python_client_as_a_view_user(srv: AuthzServer) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    config = kubernetes.client.Configuration()
    config.host = srv.url
    config.ssl_ca_cert = str(srv.server.data_dir / "pki" / "ca.crt")
    config.api_key = {"authorization": f"Bearer {srv.tokens['alice']}"}
    with kubernetes.client.ApiClient(config) as api:
        core = kubernetes.client.CoreV1Api(api)
        assert [p.metadata.name for p in core.list_namespaced_pod("ns1").items] == ["p"]
        with pytest.raises(kubernetes.client.ApiException) as err:
            core.read_namespaced_secret("s", "ns2")
        assert err.value.status == 403
        review = kubernetes.client.AuthorizationV1Api(api).create_self_subject_access_review(
            kubernetes.client.V1SelfSubjectAccessReview(spec=kubernetes.client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=kubernetes.client.V1ResourceAttributes(namespace="ns1", verb="get",
                                                                          resource="secrets"))))
        assert review.status.allowed is False


def test_no_escalation_through_roles_or_bindings(srv: AuthzServer) -> None:
    admin = srv.admin()
    # carol may write roles and bindings in ns1, and holds nothing else.
    admin.create({"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": "rbac-writer", "namespace": "ns1"},
                  "rules": [{"apiGroups": [RBAC], "resources": ["roles", "rolebindings"], "verbs": ["create", "get"]}]})
    admin.create(role_binding("carol", "ns1", "rbac-writer", user="carol", kind="Role"))
    base = f"/apis/{RBAC}/v1/namespaces/ns1"
    grab = srv.http("carol", "POST", f"{base}/rolebindings", json=role_binding("grab", "ns1", "cluster-admin", user="carol"))
    assert grab.status_code == 403
    assert "attempting to grant RBAC permissions not currently held" in grab.json()["message"]
    wide = {"kind": "Role", "metadata": {"name": "all"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    assert srv.http("carol", "POST", f"{base}/roles", json=wide).status_code == 403
    narrow = {"kind": "Role", "metadata": {"name": "subset"},
              "rules": [{"apiGroups": [RBAC], "resources": ["rolebindings"], "verbs": ["get"]}]}
    assert srv.http("carol", "POST", f"{base}/roles", json=narrow).status_code == 201
    assert srv.http("carol", "GET", "/api/v1/namespaces/ns1/secrets/s").status_code == 403  # nothing was granted
    # The bind verb on one named role lets carol hand out exactly that role.
    admin.create({"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": "bind-view", "namespace": "ns1"},
                  "rules": [{"apiGroups": [RBAC], "resources": ["clusterroles"], "verbs": ["bind"],
                             "resourceNames": ["view"]}]})
    admin.create(role_binding("carol-bind", "ns1", "bind-view", user="carol", kind="Role"))
    assert srv.http("carol", "POST", f"{base}/rolebindings",
                    json=role_binding("bob-view", "ns1", "view", user="bob")).status_code == 201
    assert srv.http("carol", "POST", f"{base}/rolebindings",
                    json=role_binding("bob-edit", "ns1", "edit", user="bob")).status_code == 403
    # A namespace admin may grant what it holds (edit) there, not cluster-admin, and nothing in another namespace.
    admin.create(role_binding("dave-admin", "ns1", "admin", user="dave"))
    assert srv.http("dave", "POST", f"{base}/rolebindings",
                    json=role_binding("carol-edit", "ns1", "edit", user="carol")).status_code == 201
    assert srv.http("dave", "POST", f"{base}/rolebindings",
                    json=role_binding("dave-root", "ns1", "cluster-admin", user="dave")).status_code == 403
    assert srv.http("dave", "POST", f"/apis/{RBAC}/v1/namespaces/ns2/rolebindings",
                    json=role_binding("dave-ns2", "ns2", "edit", user="dave")).status_code == 403


def test_pod_log_is_authorized_at_the_server_and_the_agent_sees_the_server(srv: AuthzServer) -> None:
    import threading
    import time

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from storage.apiserver.server import bind_socket

    seen: list[str | None] = []

    async def log(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        return Response("a line\n", media_type="text/plain")

    sock = bind_socket("127.0.0.1", 0)
    # A stand-in agent serving HTTPS with a certificate from the cluster CA, as real agents do.
    assert srv.server.tls is not None
    cert, key = srv.server.tls.pki.issue_serving("system:node:n1", ["127.0.0.1"])
    cert_file, key_file = srv.server.data_dir / "standin.crt", srv.server.data_dir / "standin.key"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    agent = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/pods/{ns}/{name}/log", log)]),
                                          log_level="warning", lifespan="off", ssl_certfile=str(cert_file),
                                          ssl_keyfile=str(key_file)))
    thread = threading.Thread(target=agent.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not agent.started:
            assert thread.is_alive() and time.monotonic() < deadline, "stand-in agent did not start"
            time.sleep(0.01)
        admin = srv.admin()
        admin.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
        node = admin.get("nodes", "n1")
        admin.update_status({**node, "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                                                "daemonEndpoints": {"kubeletEndpoint": {"Port": sock.getsockname()[1]}}}})
        for ns in ("ns1", "ns2"):
            admin.create(pod("logged", ns, "n1"))
        ok = srv.http("alice", "GET", "/api/v1/namespaces/ns1/pods/logged/log")
        assert ok.status_code == 200 and ok.text == "a line\n"
        # The agent is asked by the API server itself (its client certificate), never with the user's token.
        assert seen == [None]
        assert srv.http("alice", "GET", "/api/v1/namespaces/ns2/pods/logged/log").status_code == 403
        assert srv.http("bob", "GET", "/api/v1/namespaces/ns1/pods/logged/log").status_code == 403
        assert len(seen) == 1
    finally:
        agent.should_exit = True
        thread.join(30)
        sock.close()


def test_impersonation_needs_the_impersonate_verb(srv: AuthzServer) -> None:
    # kubectl --as alice: the admin acts as alice and gets alice's answer.
    as_alice = srv.http("admin", "GET", "/api/v1/namespaces/ns1/secrets/s", headers={"Impersonate-User": "alice"})
    assert as_alice.status_code == 403 and 'User "alice" cannot get resource "secrets"' in as_alice.json()["message"]
    assert srv.http("admin", "GET", "/api/v1/namespaces/ns1/pods", headers={"Impersonate-User": "alice"}).status_code == 200
    groups = srv.http("admin", "GET", "/api/v1/namespaces/ns2/pods",
                      headers=[("Impersonate-User", "zed"), ("Impersonate-Group", "team-b"),
                               ("Impersonate-Group", "other")])
    assert groups.status_code == 403
    srv.admin().create(role_binding("team-b", "ns2", "view", group="team-b"))
    assert srv.http("admin", "GET", "/api/v1/namespaces/ns2/pods",
                    headers=[("Impersonate-User", "zed"), ("Impersonate-Group", "team-b")]).status_code == 200
    # Without the verb, impersonating the admin is refused.
    escalate = srv.http("alice", "GET", "/api/v1/namespaces/ns1/secrets/s", headers={"Impersonate-User": "admin"})
    assert escalate.status_code == 403
    assert escalate.json()["message"] == ('users "admin" is forbidden: User "alice" cannot impersonate resource "users" '
                                          'in API group "" at the cluster scope')
    sneaky = srv.http("alice", "GET", "/api/v1/namespaces/ns1/pods",
                      headers=[("Impersonate-User", "alice"), ("Impersonate-Group", "system:masters")])
    assert sneaky.status_code == 403 and 'cannot impersonate resource' in sneaky.json()["message"]
    assert srv.http("admin", "GET", "/api/v1/pods", headers={"Impersonate-Group": "x"}).status_code == 400
    # Allowed to act as alice only: the alice part works, adding a group is a separate right.
    admin = srv.admin()
    admin.create(cluster_role("impersonate-alice", [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
                                                     "resourceNames": ["alice"]}]))
    admin.create({"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "carol-as-alice"},
                  "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "impersonate-alice"},
                  "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "carol"}]})
    assert srv.http("carol", "GET", "/api/v1/namespaces/ns1/pods", headers={"Impersonate-User": "alice"}).status_code == 200
    masters = srv.http("carol", "GET", "/api/v1/namespaces/ns1/secrets/s",
                       headers=[("Impersonate-User", "alice"), ("Impersonate-Group", "system:masters")])
    assert masters.status_code == 403 and 'cannot impersonate resource "groups"' in masters.json()["message"]
    # A uid and extras are rights of their own (kubectl --as-uid, --as-user-extra), checked, not dropped.
    with_uid = srv.http("carol", "GET", "/api/v1/namespaces/ns1/pods", headers={"Impersonate-User": "alice", "Impersonate-Uid": "u-1"})
    assert with_uid.status_code == 403
    assert 'cannot impersonate resource "uids" in API group "authentication.k8s.io"' in with_uid.json()["message"]
    with_extra = srv.http("carol", "GET", "/api/v1/namespaces/ns1/pods",
                          headers={"Impersonate-User": "alice", "Impersonate-Extra-Scopes": "view"})
    assert with_extra.status_code == 403
    assert 'cannot impersonate resource "userextras/scopes" in API group "authentication.k8s.io"' in with_extra.json()["message"]
    assert srv.http("admin", "GET", "/api/v1/pods", headers={"Impersonate-Uid": "u-1"}).status_code == 400
    review = srv.http("admin", "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                      json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                      headers={"Impersonate-User": "alice", "Impersonate-Uid": "u-1"})
    assert review.status_code == 201 and review.json()["status"]["userInfo"]["uid"] == "u-1", review.text
