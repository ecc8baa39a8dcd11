"""Watch fan-out: one API server feeding the watches of many node agents while objects are written.

Each simulated agent holds the watches a node agent opens that matter at
scale: its own pods (``fieldSelector=spec.nodeName=<node>``, one event in H
reaches it) and every PersistentVolume (every event reaches every agent).
One writer then creates N PersistentVolumes and N pods spread over the H
nodes, over one keep-alive HTTPS connection, as in ``api_load.py``.

Measured, each against a baseline in the same run (the same writes to a
fresh server with no watch open):
- the write time with H agents watching, as a ratio of the baseline's;
- how long after the last write every watch has delivered its last event;
- the API server's peak RSS.

usage: python benchmarks/watch_fanout.py [--hosts 50] [--count 1000] [--json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import ApiServerProcess, post_all  # noqa: E402

# Streams per watcher process: enough that the clients never become the bottleneck on two cores.
_STREAMS_PER_PROCESS = 25


def pv(name: str) -> tuple[str, bytes]:
    return "/api/v1/persistentvolumes", json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                 "hostPath": {"path": f"/mnt/disks/{name}"}}}).encode()


def pod(name: str, node: str) -> tuple[str, bytes]:
    return "/api/v1/namespaces/default/pods", json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}).encode()


def writes(count: int, hosts: int) -> list[tuple[str, bytes]]:
    work: list[tuple[str, bytes]] = []
    for i in range(count):
        work.append(pv(f"pv-{i:06d}"))
        work.append(pod(f"pod-{i:06d}", f"node-{i % hosts}"))
    # Markers last: a watch has seen everything once it has seen its marker.
    work.append(pv("end"))
    work.extend(pod(f"end-node-{h}", f"node-{h}") for h in range(hosts))
    return work


def watch_process(port: int, token: str, ca_pem: bytes, streams: list[tuple[str, str]], ready: Any, results: Any) -> None:
    """Child: opens ``streams`` (path, marker name), reads each to its marker, reports (events, bytes, seen_at)."""
    import http.client

    context = ssl.create_default_context(cadata=ca_pem.decode())

    def follow(path: str, marker: str, opened: threading.Barrier) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=600, context=context)
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        opened.wait()
        needle = f'"name":"{marker}"'.encode()
        events = size = 0
        while True:
            raw = response.readline()
            if not raw:
                results.put((path, events, size, None))
                return
            events += 1
            size += len(raw)
            if needle in raw:
                results.put((path, events, size, time.time()))
                conn.close()
                return

    opened = threading.Barrier(len(streams) + 1)
    threads = [threading.Thread(target=follow, args=(p, m, opened), daemon=True) for p, m in streams]
    for t in threads:
        t.start()
    opened.wait()
    ready.set()
    for t in threads:
        t.join()


def peak_rss_mib(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def run(tmp: Path, name: str, hosts: int, count: int, watching: bool) -> dict[str, Any]:
    server = ApiServerProcess(f"sqlite:///{tmp}/{name}.db", tmp / name, tls=True)
    assert server.ca_pem is not None
    procs: list[Any] = []
    try:
        ctx = mp.get_context("fork")
        results = ctx.Queue()
        streams: list[tuple[str, str]] = []
        if watching:
            for h in range(hosts):
                streams.append((f"/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dnode-{h}", f"end-node-{h}"))
                streams.append(("/api/v1/persistentvolumes?watch=true", "end"))
        readies = []
        for k in range(0, len(streams), _STREAMS_PER_PROCESS):
            ready = ctx.Event()
            proc = ctx.Process(target=watch_process, daemon=True,
                               args=(server.port, server.token, server.ca_pem, streams[k:k + _STREAMS_PER_PROCESS], ready, results))
            proc.start()
            procs.append(proc)
            readies.append(ready)
        for ready in readies:
            if not ready.wait(120):
                raise RuntimeError("watches did not open")
        work = writes(count, hosts)
        start = time.time()
        failed = post_all(server.port, server.token, server.ca_pem, work)
        written = time.time()
        if failed:
            raise RuntimeError(f"{failed} creates failed")
        seen: list[tuple[str, int, int, float | None]] = [results.get(timeout=1800) for _ in streams]
        missing = [path for path, _, _, at in seen if at is None]
        if missing:
            raise RuntimeError(f"{len(missing)} watches ended before their marker, e.g. {missing[0]}")
        last = max((at for _, _, _, at in seen if at is not None), default=written)
        return {"objects": len(work), "write_s": written - start, "caught_up_s": max(0.0, last - written),
                "events_sent": sum(e for _, e, _, _ in seen), "mib_sent": sum(b for _, _, b, _ in seen) / 2**20,
                "server_peak_rss_mib": peak_rss_mib(server._proc.pid)}
    finally:
        for proc in procs:
            proc.kill()
            proc.join(10)
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stowage-bench-fanout-") as tmp_name:
        tmp = Path(tmp_name)
        base = run(tmp, "baseline", args.hosts, args.count, watching=False)
        print(f"baseline: {base['objects']} writes in {base['write_s']:.2f} s, server peak RSS "
              f"{base['server_peak_rss_mib']:.0f} MiB", flush=True)
        load = run(tmp, "watched", args.hosts, args.count, watching=True)
        ratio = load["write_s"] / base["write_s"]
        print(f"{args.hosts} agents x 2 watches: {load['objects']} writes in {load['write_s']:.2f} s "
              f"({ratio:.2f}x the baseline); every watch caught up {load['caught_up_s']:.2f} s after the last write; "
              f"{load['events_sent']:,} events ({load['mib_sent']:.1f} MiB) sent; server peak RSS "
              f"{load['server_peak_rss_mib']:.0f} MiB", flush=True)
        if args.json:
            print(json.dumps({"hosts": args.hosts, "count": args.count, "baseline": base, "watched": load,
                              "write_ratio": ratio}))


if __name__ == "__main__":
    main()
