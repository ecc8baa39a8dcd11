"""Server-side printing and paging cost: listing N pods as kubectl does against one plain JSON list.

The pods go straight into the store, then one API server process answers
``GET /api/v1/pods`` (all namespaces, as ``kubectl get pods -A``), R times each:

- plain JSON, one response (the baseline);
- kubectl's Table, one response;
- kubectl's Table paged as kubectl pages by default (``limit=500``, following
  ``metadata.continue`` to the last page), the way ``kubectl get pods -A`` lists.

Prints the median seconds of each and their ratios to the JSON list (aim: the
paged Table at most 1.5x).

usage: python benchmarks/table_list.py [--count 10000] [--repeat 5] [--chunk-size 500]
"""
from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import orjson

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


def timed_get(port: int, token: str, accept: str, repeat: int, expected: int, chunk: int = 0) -> tuple[float, int, int]:
    """Median seconds to list every pod (following ``continue`` with ``chunk``), bytes and requests per list."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    times, size, requests = [], 0, 0
    headers = {"Authorization": f"Bearer {token}", "Accept": accept}
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            size, requests, seen, token_ = 0, 0, 0, ""
            while True:
                query = {"limit": str(chunk)} if chunk else {}
                if token_:
                    query["continue"] = token_
                path = "/api/v1/pods" + ("?" + urllib.parse.urlencode(query) if query else "")
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
                size += len(body)
                requests += 1
                page = orjson.loads(body)
                seen += len(page["rows"] if page.get("kind") == "Table" else page["items"])
                token_ = page["metadata"].get("continue") or ""
                if not token_:
                    break
            times.append(time.perf_counter() - start)
            if seen != expected:
                raise RuntimeError(f"listed {seen} pods, expected {expected}")
    finally:
        conn.close()
    return statistics.median(times), size, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=500, help="kubectl's default page size")
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
        server = ApiServerProcess(url, tmp / "api", tls=False)  # every list over the same plain transport
        try:
            n, port, token = args.count, server.port, server.token
            timed_get(port, token, "application/json", 1, n)  # warm caches
            timed_get(port, token, KUBECTL_TABLE, 1, n, args.chunk_size)
            json_s, json_size, _ = timed_get(port, token, "application/json", args.repeat, n)
            table_s, table_size, _ = timed_get(port, token, KUBECTL_TABLE, args.repeat, n)
            paged_s, paged_size, pages = timed_get(port, token, KUBECTL_TABLE, args.repeat, n, args.chunk_size)
        finally:
            server.stop()
    print(f"{args.count} pods, JSON list, one response       : {json_s:.3f} s ({json_size / 1e6:.1f} MB)")
    print(f"{args.count} pods, Table, one response           : {table_s:.3f} s ({table_size / 1e6:.1f} MB)")
    print(f"{args.count} pods, Table, {pages} pages of {args.chunk_size:<5}     : {paged_s:.3f} s ({paged_size / 1e6:.1f} MB)")
    print(f"Table / JSON: {table_s / json_s:.2f}x; paged Table (kubectl get pods -A) / JSON: {paged_s / json_s:.2f}x")


if __name__ == "__main__":
    main()
