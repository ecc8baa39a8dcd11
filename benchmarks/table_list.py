"""Server-side printing cost: listing N pods as kubectl's Table against the same list as plain JSON.

The pods go straight into the store, then one API server process answers
``GET /api/v1/pods`` (all namespaces, as ``kubectl get pods -A``) with each
Accept header R times; prints the median seconds of each and their ratio.

usage: python benchmarks/table_list.py [--count 10000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_load import ApiServerProcess  # noqa: E402

KUBECTL_TABLE = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
                 "application/json")


def pod(i: int) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"web-{i:06d}", "namespace": f"ns-{i % 20}", "labels": {"app": "web"},
                     "creationTimestamp": "2026-01-01T00:00:00Z", "uid": f"{i:036d}"},
        "spec": {"nodeName": f"node-{i % 50}", "containers": [{"name": "main", "image": "nginx:1.27",
                                                               "ports": [{"containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": f"10.0.{i // 250}.{i % 250}",
                   "containerStatuses": [{"name": "main", "ready": True, "restartCount": 0,
                                          "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}}]},
    }


def timed_get(port: int, token: str, accept: str, repeat: int) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    times, size = [], 0
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            conn.request("GET", "/api/v1/pods", headers={"Authorization": f"Bearer {token}", "Accept": accept})
            response = conn.getresponse()
            body = response.read()
            times.append(time.perf_counter() - start)
            if response.status != 200:
                raise RuntimeError(f"GET /api/v1/pods: {response.status} {body[:200]!r}")
            size = len(body)
    finally:
        conn.close()
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from storage.store import open_store

    with tempfile.TemporaryDirectory(prefix="stowage-bench-table-") as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp}/api.db"
        store = open_store(url)
        try:
            for i in range(args.count):
                store.create("pods", pod(i))
        finally:
            store.close()
        server = ApiServerProcess(url, tmp / "api", tls=False)  # both lists over the same plain transport
        try:
            timed_get(server.port, server.token, "application/json", 1)  # warm caches
            json_s, json_size = timed_get(server.port, server.token, "application/json", args.repeat)
            table_s, table_size = timed_get(server.port, server.token, KUBECTL_TABLE, args.repeat)
        finally:
            server.stop()
    print(f"{args.count} pods, JSON list : {json_s:.3f} s ({json_size / 1e6:.1f} MB)")
    print(f"{args.count} pods, Table     : {table_s:.3f} s ({table_size / 1e6:.1f} MB)")
    print(f"Table / JSON: {table_s / json_s:.2f}x")


if __name__ == "__main__":
    main()
