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


def list_all(conn: http.client.HTTPConnection, token: str, accept: str, expected: int, chunk: int = 0) -> tuple[float, int, int]:
    """Seconds to list every pod (following ``continue`` when ``chunk`` is set), bytes and requests it took."""
    headers = {"Authorization": f"Bearer {token}", "Accept": accept}
    size, requests, seen, cont = 0, 0, 0, ""
    start = time.perf_counter()
    while True:
        query = {"limit": str(chunk)} if chunk else {}
        if cont:
            query["continue"] = cont
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
        cont = page["metadata"].get("continue") or ""
        if not cont:
            break
    elapsed = time.perf_counter() - start
    if seen != expected:
        raise RuntimeError(f"listed {seen} pods, expected {expected}")
    return elapsed, size, requests


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
            for first in range(0, args.count, 1000):
                store.create_many("pods", [pod(i) for i in range(first, min(first + 1000, args.count))])
        finally:
            store.close()
        server = ApiServerProcess(url, tmp / "api", tls=False)  # every list over the same plain transport
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        forms = {"json": ("application/json", 0), "table": (KUBECTL_TABLE, 0), "paged": (KUBECTL_TABLE, args.chunk_size)}
        times: dict[str, list[float]] = {form: [] for form in forms}
        sizes: dict[str, tuple[int, int]] = {}
        try:
            for form, (accept, chunk) in forms.items():  # warm caches
                list_all(conn, server.token, accept, args.count, chunk)
            # Interleaved rounds, so a load change on a shared machine hits every form alike.
            for _ in range(args.repeat):
                for form, (accept, chunk) in forms.items():
                    elapsed, size, requests = list_all(conn, server.token, accept, args.count, chunk)
                    times[form].append(elapsed)
                    sizes[form] = (size, requests)
        finally:
            conn.close()
            server.stop()
    json_s, table_s, paged_s = (statistics.median(times[form]) for form in forms)
    print(f"{args.count} pods, JSON list, one response       : {json_s:.3f} s ({sizes['json'][0] / 1e6:.1f} MB)")
    print(f"{args.count} pods, Table, one response           : {table_s:.3f} s ({sizes['table'][0] / 1e6:.1f} MB)")
    print(f"{args.count} pods, Table, {sizes['paged'][1]} pages of {args.chunk_size:<5}     : {paged_s:.3f} s "
          f"({sizes['paged'][0] / 1e6:.1f} MB)")
    print(f"Table / JSON: {table_s / json_s:.2f}x; paged Table (kubectl get pods -A) / JSON: {paged_s / json_s:.2f}x "
          f"(medians of {args.repeat})")


if __name__ == "__main__":
    main()
