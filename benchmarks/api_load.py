"""API server write throughput: PersistentVolume creates per second, over HTTPS and plain HTTP.

Two API server processes in the same run (their own store connections, as
``stowage serve`` runs it), one serving HTTPS with the cluster CA (the
default) and one plain HTTP (``--insecure-http``), and C client processes,
each a keep-alive HTTP/1.1 connection sending one POST per object and
waiting for the answer, as kubectl and client-go do. Prints creates/s for
each client count and the HTTPS/HTTP time ratio (issue 9 aims at 1.15x at most).

The floor, in the same run: the same clients against a bare uvicorn + Starlette app (the API server's HTTP
stack, plain HTTP) that parses each JSON body and answers 201 with it, storing nothing. Its requests/s bound
what any Python API server on this stack can do on the machine; the ratio floor/Stowage is how much of each
create is Stowage's own work (authentication, decoding, validation, admission, the store's commit, watches).

The API servers keep their threads on one CPU, as ``stowage serve`` does by default (PF92); ``--free``
also runs each with its threads free (``--api-server-cpu none``), right after the pinned one, and prints
the time ratio free/pinned.

``--profile DIR`` (needs py-spy) samples each Stowage API server (the pinned ones) while the clients'
creates run, only while a thread holds the GIL (its Python CPU; SQLite's statements and the kernel's
work are not in it), and prints its top functions by self and total time; the raw stacks and the
summaries are written into DIR. Each run also prints the server process's CPU seconds (user and
kernel) against the run's wall time: whether the one process is saturated.

usage: python benchmarks/api_load.py [--backend sqlite|postgres] [--count 3000] [--clients 1,4] [--scheme both|https|http]
                                     [--free] [--no-floor] [--profile DIR]
"""
from __future__ import annotations

import argparse
import http.client
import json
import ssl
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from spy import Sampler, missing

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def serve_process(store_url: str, data_dir: str, tls: bool, cpu: int | None, port_out: Any, stop: Any) -> None:
    """Child: serve ``store_url`` until ``stop`` is set; reports the bound port through ``port_out``."""
    import logging
    import threading

    import structlog

    from storage.apiserver.server import bind_socket, serve
    from storage.store import open_store

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    store = open_store(store_url)
    sock = bind_socket("127.0.0.1", 0)
    port_out.send(sock.getsockname()[1])
    stop_event = threading.Event()
    threading.Thread(target=lambda: (stop.wait(), stop_event.set()), daemon=True).start()
    try:
        serve(store, port=sock.getsockname()[1], data_dir=data_dir, stop_event=stop_event, sock=sock,
              insecure_http=not tls, cpu=cpu)
    finally:
        store.close()


class ServerProcess:
    """A server in a spawned process running ``target(*args, port_out, stop)``; ``port`` once it reports it."""

    def __init__(self, target: Any, *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        receive, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=target, args=(*args, send, self._stop), daemon=True)
        self._proc.start()
        if not receive.poll(60):
            self.stop()
            raise RuntimeError(f"{target.__name__} did not report its port")
        self.port: int = receive.recv()

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None, "started in __init__"
        return self._proc.pid

    def stop(self) -> None:
        self._stop.set()
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(10)


class ApiServerProcess(ServerProcess):
    """An API server in its own process."""

    def __init__(self, store_url: str, data_dir: Path, tls: bool, cpu: int | None = -1) -> None:
        """``cpu`` as ``stowage serve --api-server-cpu`` (-1: auto, its default; None: free)."""
        from storage.apiserver.auth import ensure_admin_token
        from storage.apiserver.tls import TLSOptions

        data_dir.mkdir(parents=True, exist_ok=True)
        self.token = ensure_admin_token(data_dir)
        # The CA the server will use (made here, first, so the clients can trust it).
        self.ca_pem: bytes | None = TLSOptions().prepare(data_dir, "127.0.0.1").pki.ca_pem if tls else None
        super().__init__(serve_process, store_url, str(data_dir), tls, cpu)


def floor_process(port_out: Any, stop: Any) -> None:
    """Child: the bare HTTP stack (uvicorn with the API server's settings, one Starlette route) until ``stop``."""
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from storage.apiserver.server import bind_socket

    async def create(request: Request) -> Response:
        obj = json.loads(await request.body())
        obj.setdefault("metadata", {})["uid"] = "00000000-0000-0000-0000-000000000000"
        return Response(json.dumps(obj), status_code=201, media_type="application/json")

    sock = bind_socket("127.0.0.1", 0)
    port_out.send(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/api/v1/persistentvolumes", create,
                                                                    methods=["POST"])]),
                                           log_level="warning", access_log=False, lifespan="off"))
    threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True).start()
    server.run(sockets=[sock])


def post_all(port: int, token: str, ca_pem: bytes | None, paths_and_bodies: list[tuple[str, bytes]]) -> int:
    """One keep-alive connection, one POST per object, each answer read before the next request."""
    if ca_pem is not None:
        context = ssl.create_default_context(cadata=ca_pem.decode())
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    failed = 0
    try:
        for path, body in paths_and_bodies:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                failed += 1
    finally:
        conn.close()
    return failed


def create_through_api(port: int, token: str, ca_pem: bytes | None, objs: list[tuple[str, dict[str, Any]]],
                       clients: int) -> float:
    """Create ``objs`` (path, body) from ``clients`` processes; returns the seconds taken."""
    work = [[(p, json.dumps(o).encode()) for p, o in objs[k::clients]] for k in range(clients)]
    ctx = mp.get_context("fork")
    with ctx.Pool(clients) as pool:
        pool.apply(time.sleep, (0,))  # workers are up before the clock starts
        start = time.perf_counter()
        failed = sum(pool.starmap(post_all, [(port, token, ca_pem, w) for w in work]))
        elapsed = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"{failed} creates failed")
    return elapsed


def pv(i: int, prefix: str) -> tuple[str, dict[str, Any]]:
    return "/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{prefix}-{i:06d}", "labels": {"zone": "a"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                 "hostPath": {"path": f"/mnt/disks/{i}"}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--scheme", choices=["both", "https", "http"], default="both")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare HTTP stack's run")
    parser.add_argument("--free", action="store_true",
                        help="also run each server with its threads free (--api-server-cpu none) and compare")
    parser.add_argument("--profile", type=Path, default=None,
                        help="sample the API servers with py-spy while the creates run; stacks and summaries here")
    args = parser.parse_args()
    if args.profile is not None and (problem := missing()) is not None:
        raise SystemExit(problem)
    schemes = ["https", "http"] if args.scheme == "both" else [args.scheme]
    with tempfile.TemporaryDirectory(prefix="stowage-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        pg = None
        if args.backend == "postgres":
            from pgserver import PostgresServer

            pg = PostgresServer().start()
        servers: dict[str, ApiServerProcess] = {}
        free: dict[str, ApiServerProcess] = {}
        floor = None if args.no_floor else ServerProcess(floor_process)
        try:
            def server_on_own_store(scheme: str, name: str, cpu: int | None) -> ApiServerProcess:
                url = (pg.create_database(f"bench_{name.replace('-', '_')}") if pg is not None
                       else f"sqlite:///{tmp}/{name}.db")
                return ApiServerProcess(url, tmp / name, tls=scheme == "https", cpu=cpu)

            for scheme in schemes:
                servers[scheme] = server_on_own_store(scheme, f"api-{scheme}", -1)
                if args.free:
                    free[scheme] = server_on_own_store(scheme, f"api-{scheme}-free", None)
            # 200/s: one run of creates lasts seconds.
            sampler = (Sampler(args.profile, {f"api-{scheme}": server.pid for scheme, server in servers.items()}, 200)
                       if args.profile is not None else None)
            for clients in (int(c) for c in args.clients.split(",")):
                seconds: dict[str, float] = {}
                for scheme, server in servers.items():
                    objs = [pv(i, f"c{clients}") for i in range(args.count)]
                    before = psutil.Process(server.pid).cpu_times()
                    seconds[scheme] = create_through_api(server.port, server.token, server.ca_pem, objs, clients)
                    after = psutil.Process(server.pid).cpu_times()
                    user, kernel = after.user - before.user, after.system - before.system
                    print(f"{args.backend:<9} {scheme:<5} clients {clients}: {args.count / seconds[scheme]:,.0f} creates/s "
                          f"({args.count} in {seconds[scheme]:.2f} s; the server's CPU {user:.2f} s user + {kernel:.2f} s "
                          f"kernel, {100 * (user + kernel) / seconds[scheme]:.0f}% of one core)", flush=True)
                    if scheme in free:
                        other = free[scheme]
                        loose = create_through_api(other.port, other.token, other.ca_pem, objs, clients)
                        print(f"{args.backend:<9} {scheme:<5} clients {clients}: {args.count / loose:,.0f} creates/s with the "
                              f"threads free; free/pinned time ratio {loose / seconds[scheme]:.2f}x", flush=True)
                if len(seconds) == 2:
                    print(f"{args.backend:<9} clients {clients}: HTTPS/HTTP time ratio {seconds['https'] / seconds['http']:.2f}x",
                          flush=True)
                if floor is not None:
                    objs = [pv(i, f"f{clients}") for i in range(args.count)]
                    bare = create_through_api(floor.port, "unused", None, objs, clients)
                    print(f"floor     http  clients {clients}: {args.count / bare:,.0f} requests/s on the bare HTTP stack"
                          + (f"; Stowage over HTTP takes {seconds['http'] / bare:.1f}x its time" if "http" in seconds
                             else ""), flush=True)
            if sampler is not None:
                sampler.finish()
        finally:
            if floor is not None:
                floor.stop()
            for server in [*servers.values(), *free.values()]:
                server.stop()
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    main()
