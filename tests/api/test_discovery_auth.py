"""Discovery documents, health endpoints and bearer-token authentication."""
from __future__ import annotations

import httpx
import pytest

from storage.api.registry import RESOURCES, groups
from storage.apiserver.auth import TOKEN_FILE, TokenAuth, User, ensure_admin_token, read_token_file
from storage.client import Client
from storage.errors import Unauthorized


def get(api_server, path: str, token: str | None = "admin") -> httpx.Response:
    headers = {}
    if token == "admin":
        headers["Authorization"] = f"Bearer {api_server.token}"
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(api_server.url + path, headers=headers, timeout=30, verify=api_server.verify())


def test_core_and_group_discovery(api_server) -> None:
    api = get(api_server, "/api").json()
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    groups = get(api_server, "/apis").json()
    assert groups["kind"] == "APIGroupList"
    names = {g["name"]: g for g in groups["groups"]}
    assert {"apps", "storage.k8s.io"} <= set(names)
    assert names["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert get(api_server, "/apis/storage.k8s.io").json()["kind"] == "APIGroup"


def test_resource_lists_cover_the_registry(api_server) -> None:
    seen = {}
    for path in ["/api/v1"] + [f"/apis/{gv}" for gv in groups() if "/" in gv]:
        doc = get(api_server, path).json()
        assert doc["kind"] == "APIResourceList"
        for r in doc["resources"]:
            seen[(doc["groupVersion"], r["name"])] = r
    for info in RESOURCES:
        entry = seen[(info.api_version, info.plural)]
        assert entry["kind"] == info.kind and entry["namespaced"] == info.namespaced
        assert entry["singularName"] == info.singular
        # Reviews are create-only (SEMANTICS: answered, never stored); every stored kind can be watched.
        assert ("watch" in entry["verbs"]) == info.stored and "create" in entry["verbs"]
        assert entry.get("shortNames", []) == list(info.short_names)
        assert ((info.api_version, f"{info.plural}/status") in seen) == info.has_status
    assert seen[("v1", "persistentvolumeclaims")]["shortNames"] == ["pvc"]
    for gv, plural in (("apps/v1", "statefulsets"), ("apps/v1", "replicasets"), ("apps/v1", "deployments"),
                       ("v1", "replicationcontrollers")):
        scale = seen[(gv, f"{plural}/scale")]  # kubectl scale looks for this
        assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
        assert "patch" in scale["verbs"]
    assert ("v1", "pods/scale") not in seen
    assert seen[("v1", "namespaces/finalize")]["verbs"] == ["update"]


def test_version_and_health_need_no_token(api_server) -> None:
    version = get(api_server, "/version", token=None)
    assert version.status_code == 200
    assert version.json()["gitVersion"].startswith("v1.") and version.json()["gitVersion"].endswith("-stowage")
    for path in ("/healthz", "/readyz", "/livez"):
        resp = get(api_server, path, token=None)
        assert resp.status_code == 200 and resp.text == "ok"
    # OpenAPI documents are for authenticated users only.
    assert get(api_server, "/openapi/v2", token=None).status_code == 401
    assert get(api_server, "/openapi/v3", token=None).status_code == 401


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_401(api_server, token: str | None) -> None:
    for path in ("/api/v1/persistentvolumes", "/api", "/apis/apps/v1"):
        resp = get(api_server, path, token=token)
        assert resp.status_code == 401
        assert resp.json()["kind"] == "Status" and resp.json()["reason"] == "Unauthorized"
    with pytest.raises(Unauthorized):
        Client(api_server.url, token, ca_data=api_server.ca_pem).list("persistentvolumes")


def test_admin_token_is_created_once_and_private(tmp_path) -> None:
    first = ensure_admin_token(tmp_path)
    assert ensure_admin_token(tmp_path) == first
    path = tmp_path / TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_token_file(path)[first].name == "admin"


def test_token_file_format_and_user_lookup(tmp_path) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_text('# comment\nt1,node-a,uid-1,"system:nodes,extra"\nt2,bob\n')
    auth = TokenAuth.from_file(path)
    assert auth.authenticate("Bearer t1") == User("node-a", "uid-1", ("system:nodes", "extra"))
    assert auth.authenticate("bearer t2").name == "bob"
    for header in (None, "", "Bearer", "Basic t1", "Bearer t3"):
        with pytest.raises(Unauthorized):
            auth.authenticate(header)
    assert TokenAuth.disabled().authenticate(None).is_admin()
