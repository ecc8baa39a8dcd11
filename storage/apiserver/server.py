"""Run the API server under uvicorn, in the calling thread or a background one."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import structlog
import uvicorn

from storage.apiserver.admission import Admission
from storage.apiserver.app import create_app
from storage.apiserver.namespaces import ensure_system_objects
from storage.apiserver.auth import TokenAuth, ensure_admin_token, load_token_auth
from storage.apiserver.spdy_upgrade import HttpProtocol
from storage.apiserver.authn import Authenticator
from storage.apiserver.satokens import ServiceAccountTokens
from storage.apiserver.tls import ServerTLS, TLSOptions
from storage.system.affinity import pin_current_thread
from storage.system.tlsserver import PeerCertWSProtocol, uvicorn_ssl_options
from storage.store.base import Store

log = structlog.get_logger(__name__)

# Long-lived watch streams are ended by the app itself; this only bounds a stuck request at shutdown.
_GRACEFUL_SHUTDOWN_SECONDS = 5
_IDLE_TIMEOUT_SECONDS = 90


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event | None) -> None:
        super().__init__(config)
        self._ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # serve() handles signals itself: uvicorn's own handling re-raises them afterwards, killing the
        # process before the caller's cleanup (closing the store) can run.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._ready is not None and not self.should_exit:
            self._ready.set()


def publish_root_ca(store: Store, ca_pem: bytes) -> None:
    """``kube-system/kube-root-ca.crt``: the CA pods trust, copied into every namespace by a controller."""
    from storage.errors import AlreadyExists, Conflict, NotFound

    data = {"ca.crt": ca_pem.decode("ascii")}
    for _ in range(5):
        try:
            current = store.get("configmaps", "kube-system", "kube-root-ca.crt")
        except NotFound:
            try:
                store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                                            "metadata": {"name": "kube-root-ca.crt", "namespace": "kube-system"}})
                return
            except AlreadyExists:
                continue
        if current.get("data") == data:
            return
        try:
            store.update("configmaps", {**current, "data": data})
            return
        except Conflict:
            continue


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before starting uvicorn so port 0 resolves to a real port the caller can report."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    store: Store,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: str | os.PathLike[str],
    stop_event: threading.Event | None = None,
    ready: threading.Event | None = None,
    admission: Admission | None = None,
    tokens: TokenAuth | None = None,
    sock: socket.socket | None = None,
    pod_security_default: str = "baseline",
    tls: ServerTLS | None = None,
    insecure_http: bool = False,
    bookmark_interval: float | None = 30.0,
    cpu: int | None = None,
) -> None:
    """Serve until ``stop_event`` is set (or SIGTERM/SIGINT when in the main thread).

    HTTPS with ``tls`` (by default the data dir's cluster PKI); plain HTTP only with ``insecure_http``.
    ``cpu`` (-1: the least busy one) keeps the calling thread, and so every thread the server starts,
    on one CPU (PF92); None leaves them free. The calling thread must start no host commands after."""
    # First: the threads made below (the authorizer's index, the store's pools) inherit the affinity.
    pin_current_thread(cpu)
    tokens = tokens if tokens is not None else load_token_auth(data_dir)
    tls = tls if tls is not None else TLSOptions().prepare(Path(data_dir), host)
    sa_tokens = ServiceAccountTokens(tls.pki.directory)
    app = create_app(store, Authenticator(tokens, store, sa_tokens), admission=admission,
                     pod_security_default=pod_security_default, cluster_pki=tls.pki,
                     sa_tokens=sa_tokens, agent_tls=tls.pki.agent_client_context(), bookmark_interval=bookmark_interval)
    sock = sock if sock is not None else bind_socket(host, port)
    real_port = sock.getsockname()[1]
    if getattr(store, "corrupt", None):
        log.error("the database is corrupt: the system namespaces, the kubernetes Service and the root CA "
                  "are not refreshed until it is restored")
    else:
        ensure_system_objects(store, host, real_port)
        publish_root_ca(store, tls.pki.ca_pem)
    ssl_options: dict[str, Any] = {}
    if insecure_http:
        log.warning("serving plain HTTP (--insecure-http): tokens and data cross the network unencrypted")
    else:
        ssl_options = uvicorn_ssl_options(str(tls.cert_file), str(tls.key_file), str(tls.client_ca_file))
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        # kube-apiserver's idle timeout (Go's client keeps idle connections as long). uvicorn's 5 s default
        # closed connections just as kubectl drain reused them for its retry 5 s later: the POST got EOF.
        timeout_keep_alive=_IDLE_TIMEOUT_SECONDS, **{
            **ssl_options,
            # The SPDY upgrade of pods/portforward (kubectl 1.30) on top of the client-certificate
            # protocol; WebSockets with the client certificate too (wsproto).
            "http": HttpProtocol, "ws": PeerCertWSProtocol,
        },
    )
    server = _Server(config, ready)
    stop_event = stop_event if stop_event is not None else threading.Event()

    def wait_for_stop() -> None:
        stop_event.wait()
        # End watch streams first: uvicorn otherwise waits for them until the grace period runs out.
        app.state.watches.close_all()
        server.should_exit = True

    watcher = threading.Thread(target=wait_for_stop, name="apiserver-stop", daemon=True)
    watcher.start()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop_event.set())
    log.info("api server listening", host=host, port=real_port, tls=not insecure_http)
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.state.watches.close_all()
        app.state.store_executor.shutdown(wait=False, cancel_futures=True)
        app.state.authz.close()
        stop_event.set()
        sock.close()
        log.info("api server stopped", port=real_port)


@dataclass
class RunningServer:
    url: str
    port: int
    token: str
    data_dir: Path
    store: Store
    kubeconfig: Path | None = None
    tls: ServerTLS | None = None  # None when serving plain HTTP
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _errors: list[BaseException] = field(default_factory=list, repr=False)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def client(self) -> Any:
        from storage.client import Client

        return Client(self.url, self.token, ca_data=self.tls.trust_pem if self.tls else None)

    def verify(self) -> Any:
        """httpx's ``verify=`` for this server: a context trusting its CA (True when serving plain HTTP)."""
        from storage.system.pki import client_context

        return client_context(self.tls.trust_pem) if self.tls else True

    @property
    def ca_pem(self) -> bytes | None:
        return self.tls.trust_pem if self.tls else None

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(
    store: Store,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: str | os.PathLike[str],
    admission: Admission | None = None,
    kubeconfig: str | os.PathLike[str] | None = None,
    startup_timeout: float = 30.0,
    pod_security_default: str = "baseline",
    tls_options: TLSOptions | None = None,
    bookmark_interval: float | None = 30.0,
    cpu: int | None = None,
) -> RunningServer:
    """Start serving in a daemon thread; returns once the server accepts connections.

    ``cpu`` as for ``serve``: it pins that thread only, never the caller's."""
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    token = ensure_admin_token(data)
    options = tls_options or TLSOptions()
    tls = options.prepare(data, host)
    sock = bind_socket(host, port)
    real_port = sock.getsockname()[1]
    scheme = "http" if options.insecure_http else "https"
    url = f"{scheme}://{'[' + host + ']' if ':' in host else _client_host(host)}:{real_port}"
    ready = threading.Event()
    running = RunningServer(url, real_port, token, data, store, tls=None if options.insecure_http else tls)

    def run() -> None:
        try:
            serve(store, host=host, port=real_port, data_dir=data, stop_event=running._stop, ready=ready,
                  admission=admission, sock=sock, pod_security_default=pod_security_default, tls=tls,
                  insecure_http=options.insecure_http, bookmark_interval=bookmark_interval, cpu=cpu)
        except BaseException as e:  # surfaced to the starter, which would otherwise wait forever
            running._errors.append(e)
            ready.set()

    thread = threading.Thread(target=run, name=f"apiserver-{real_port}", daemon=True)
    running._thread = thread
    thread.start()
    if not ready.wait(startup_timeout) or running._errors:
        running.stop()
        raise RuntimeError(f"api server did not start: {running._errors[0] if running._errors else 'timeout'}")
    if kubeconfig is not None:
        from storage.client.kubeconfig import write_kubeconfig

        write_kubeconfig(kubeconfig, url, token, ca_data=running.ca_pem)
        running.kubeconfig = Path(kubeconfig)
    return running


def _client_host(host: str) -> str:
    # A wildcard listen address is no address to connect to; the loopback is covered by the certificate.
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def main() -> None:  # pragma: no cover - exercised through the CLI
    """``python -m storage.apiserver.server DATA_DIR [PORT]``: serve a SQLite store until a signal."""
    import sys

    from storage.store import open_store

    data_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    store = open_store(str(data_dir / "stowage.db"))
    try:
        serve(store, port=port, data_dir=data_dir)
    finally:
        store.close()


if __name__ == "__main__":  # pragma: no cover
    main()
