"""The real kubectl against RBAC: ``auth can-i`` (one check and ``--list``), ``auth whoami``, and a 403.

kubectl sends a bearer token only over TLS, so the app is served here over TLS
with a throw-away self-signed certificate (kubectl told to skip verification);
the server's own TLS set-up is not what this tests. kubectl posts its reviews
as protobuf (storage/apiserver/review_proto.py reads them).
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

from sec_authz_util import namespace, role_binding, secret
from storage.apiserver.app import create_app
from storage.apiserver.auth import TOKEN_FILE, User, append_token, load_token_auth
from storage.apiserver.server import bind_socket
from storage.store import open_store

pytestmark = pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")


@contextlib.contextmanager
def tls_server(tmp_path: Path) -> Iterator[tuple[str, object]]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (needed for a throw-away certificate)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    data = tmp_path / "data"
    data.mkdir()
    append_token(data / TOKEN_FILE, "alice-token", User("alice", "uid-a", ("team-a",)))
    store = open_store(str(data / "stowage.db"))
    app = create_app(store, load_token_auth(data))
    sock = bind_socket("127.0.0.1", 0)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ssl_keyfile=str(key), ssl_certfile=str(cert))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "TLS test server did not start"
            time.sleep(0.05)
        yield f"https://127.0.0.1:{sock.getsockname()[1]}", store
    finally:
        server.should_exit = True
        app.state.watches.close_all()
        thread.join(timeout=30)
        app.state.authz.close()
        sock.close()
        store.close()


def test_kubectl_auth_can_i_whoami_and_forbidden(tmp_path: Path) -> None:
    with tls_server(tmp_path) as (url, store):
        store.create("namespaces", namespace("ns1"))
        store.create("secrets", secret("s", "ns1"))
        store.create("rolebindings", role_binding("alice-view", "ns1", "view", user="alice"))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{url}", insecure-skip-tls-verify: true}}}}]
users: [{{name: alice, user: {{token: alice-token}}}}]
contexts: [{{name: x, context: {{cluster: c, user: alice, namespace: ns1}}}}]
current-context: x
""")

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                                  timeout=60)

        def can_i(*args: str) -> str:
            # The index may still be reading the binding written behind the API's back: a denial waits for it.
            done = kubectl("auth", "can-i", *args)
            assert done.stdout.strip() in ("yes", "no"), f"kubectl auth can-i {args}: {done.stderr}"
            return done.stdout.strip()

        assert can_i("list", "pods") == "yes"
        assert can_i("get", "secrets") == "no"
        assert can_i("list", "pods", "-n", "ns2") == "no"
        assert can_i("get", "pods", "--subresource=log") == "yes"
        listed = kubectl("auth", "can-i", "--list")
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
        assert "pods" in rows and "secrets" not in rows and "selfsubjectaccessreviews.authorization.k8s.io" in rows
        whoami = kubectl("auth", "whoami")
        assert whoami.returncode == 0, whoami.stderr
        assert "alice" in whoami.stdout and "system:authenticated" in whoami.stdout and "team-a" in whoami.stdout
        denied = kubectl("get", "secret", "s")
        assert denied.returncode != 0
        assert ('secrets "s" is forbidden: User "alice" cannot get resource "secrets" in API group "" '
                'in the namespace "ns1"') in denied.stderr
        pods = kubectl("get", "pods")
        assert pods.returncode == 0 and "No resources found" in pods.stderr + pods.stdout
