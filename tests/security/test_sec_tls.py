"""TLS by default (issue 9 item 1): the API server serves HTTPS with a certificate from the cluster CA,
clients verify it, plain HTTP exists only with --insecure-http, users may bring their own certificate, and an
old plain-HTTP data dir is upgraded in place."""
from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import httpx
import pytest
import yaml

from serverutil import running_server
from storage.apiserver.server import start_in_thread
from storage.apiserver.tls import TLSOptions
from storage.client import Client
from storage.client.kubeconfig import load_access, write_kubeconfig
from storage.store import open_store
from storage.system import pki
from support import UpProcess

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v"}}


def test_handshake_verifies_against_the_cluster_ca_and_nothing_else(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        assert server.url.startswith("https://") and server.tls is not None
        # The kubeconfig carries the CA; a client built from it verifies the server's certificate.
        access = load_access(server.kubeconfig)
        assert access.ca_data == server.tls.pki.ca_pem and access.server == server.url
        with Client.from_access(access) as client:
            client.create(CM)
        # The certificate names the loopback addresses and the host, and chains to the CA.
        cert = pki.load_cert(server.tls.cert_file.read_bytes())
        assert {"127.0.0.1", "::1", "localhost", socket.gethostname()} <= pki.cert_sans(cert)
        # Trusting only the system roots, or another CA, the handshake fails.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(server.url + "/healthz", timeout=10)
        other_ca, _ = pki.new_ca("someone-else")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(server.url + "/healthz", timeout=10, verify=pki.client_context(pki.cert_pem(other_ca)))
        # Plain HTTP to the TLS port gets no answer from the API: no request is served in clear.
        plain = server.url.replace("https://", "http://")
        try:
            response = httpx.get(plain + "/api/v1/namespaces/default/configmaps",
                                 headers={"Authorization": f"Bearer {server.token}"}, timeout=10)
        except httpx.TransportError:
            pass
        else:
            assert response.status_code == 400 and b"ConfigMap" not in response.content


def test_key_files_are_private(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        pki_dir = server.data_dir / "pki"
        assert pki_dir.stat().st_mode & 0o077 == 0
        for key in pki_dir.glob("*.key"):
            assert key.stat().st_mode & 0o777 == 0o600, key
        assert server.kubeconfig is not None and server.kubeconfig.stat().st_mode & 0o077 == 0


def test_extra_sans_and_the_listen_address_are_in_the_certificate(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "db"))
    try:
        server = start_in_thread(store, host="127.0.0.1", port=0, data_dir=tmp_path / "d",
                                 tls_options=TLSOptions(extra_sans=("api.example.test", "10.9.8.7")))
        try:
            assert server.tls is not None
            sans = pki.cert_sans(pki.load_cert(server.tls.cert_file.read_bytes()))
            assert {"api.example.test", "10.9.8.7", "127.0.0.1"} <= sans
        finally:
            server.stop()
        # A restart with another extra name issues a new certificate that has it.
        again = start_in_thread(store, host="127.0.0.1", port=0, data_dir=tmp_path / "d",
                                tls_options=TLSOptions(extra_sans=("other.example.test",)))
        try:
            assert again.tls is not None
            assert "other.example.test" in pki.cert_sans(pki.load_cert(again.tls.cert_file.read_bytes()))
        finally:
            again.stop()
    finally:
        store.close()


def test_bring_your_own_certificate(tmp_path: Path) -> None:
    own_ca, own_ca_key = pki.new_ca("my-company-ca")
    key = pki.new_key()
    cert = pki.sign(own_ca, own_ca_key, key.public_key(), "api.internal", server=True, sans=["127.0.0.1"])
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(pki.cert_pem(cert) + pki.cert_pem(own_ca))
    pki.write_private(key_file, pki.key_pem(key))
    store = open_store(str(tmp_path / "db"))
    try:
        server = start_in_thread(store, host="127.0.0.1", port=0, data_dir=tmp_path / "d",
                                 kubeconfig=tmp_path / "d" / "kubeconfig",
                                 tls_options=TLSOptions(cert_file=str(cert_file), key_file=str(key_file)))
        try:
            served = ssl.get_server_certificate(("127.0.0.1", server.port))
            assert pki.identity(pki.load_cert(served.encode()))[0] == "api.internal"
            # Verified against the user's own CA, through the written kubeconfig.
            with Client.from_kubeconfig(tmp_path / "d" / "kubeconfig") as client:
                client.create(CM)
            httpx.get(server.url + "/healthz", verify=pki.client_context(pki.cert_pem(own_ca)), timeout=10).raise_for_status()
        finally:
            server.stop()
    finally:
        store.close()


def test_insecure_http_only_when_asked_and_it_warns(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    up = UpProcess("serve", ["--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--insecure-http"], env)
    try:
        ready = up.wait_for("stowage is ready")
        assert ready["server"].startswith("http://")
        assert "--insecure-http" in up.output() and "unencrypted" in up.output()
        with Client.from_kubeconfig(ready["kubeconfig"]) as client:
            client.create(CM)
    finally:
        assert up.stop() == 0


def test_an_old_plain_http_data_dir_is_upgraded_in_place(tmp_path: Path) -> None:
    """A data dir from before TLS: tokens, a store, and a kubeconfig pointing at http://."""
    data = tmp_path / "d"
    data.mkdir()
    from storage.apiserver.auth import ensure_admin_token

    token = ensure_admin_token(data)
    store = open_store(str(data / "stowage.db"))
    store.create("configmaps", dict(CM))
    store.close()
    write_kubeconfig(data / "kubeconfig", "http://127.0.0.1:6443", token)
    assert not (data / "pki").exists()

    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    up = UpProcess("serve", ["--data-dir", str(data), "--listen", "127.0.0.1:0"], env)
    try:
        up.wait_for("stowage is ready")
        config = yaml.safe_load((data / "kubeconfig").read_text())
        cluster = config["clusters"][0]["cluster"]
        assert cluster["server"].startswith("https://127.0.0.1:")
        assert cluster["certificate-authority-data"]
        assert config["users"][0]["user"]["token"] == token  # the same admin, now over TLS
        with Client.from_kubeconfig(data / "kubeconfig") as client:
            assert client.get("configmaps", "c", "default")["data"] == {"k": "v"}
    finally:
        assert up.stop() == 0
