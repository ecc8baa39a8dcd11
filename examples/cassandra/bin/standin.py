#!/usr/bin/env python3
"""STAND-IN for Cassandra, for machines without a Cassandra installation.

This is NOT Cassandra. It lets the orchestration (identity, DNS, storage,
readiness, restarts) be exercised where no Cassandra is installed: it listens
on the member's CQL (9042) and intra-node (7000) ports, answers every
connection with one line naming itself, and records each start in a marker
file on the data volume. Standard library only (runs with the host's python3).

  standin.py                 run the stand-in (until SIGTERM)
  standin.py --probe ADDR    readiness check: exit 0 when the stand-in answers on ADDR:9042
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

PORTS = (9042, 7000)
BANNER = "stowage-cassandra-standin"
MARKER = "STOWAGE_CASSANDRA_STANDIN.json"


def log(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "standin": True, **fields}), flush=True)


def address() -> str:
    pod_ip = os.environ.get("POD_IP", "").strip()
    return pod_ip or socket.gethostbyname(socket.gethostname())


def write_marker(data_root: Path, addr: str) -> dict[str, object]:
    """Append this start to the marker so restarts on the same claim are visible."""
    marker = data_root / MARKER
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        record = {"note": "written by the Cassandra stand-in, not by Cassandra", "starts": []}
    record["starts"].append({
        "hostname": socket.gethostname(),
        "address": addr,
        "seeds": os.environ.get("CASSANDRA_SEEDS", ""),
        "cluster_name": os.environ.get("CASSANDRA_CLUSTER_NAME", ""),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())  # the point of the marker is to survive the pod: make it durable
    tmp.replace(marker)
    return record


def serve(listener: socket.socket, reply: bytes) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                conn.sendall(reply)
            except OSError:
                pass


def run() -> int:
    addr = address()
    data_root = Path(os.environ.get("CASSANDRA_DATA_DIR") or "/cassandra_data")
    log("starting the Cassandra STAND-IN (no Cassandra installation found or STOWAGE_CASSANDRA_STANDIN=1)",
        address=addr, data_root=str(data_root))
    listeners = []
    for port in PORTS:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(16)
        listeners.append(s)
    record = write_marker(data_root, addr)
    reply = f"{BANNER} {socket.gethostname()} {addr}\n".encode()
    for s in listeners:
        threading.Thread(target=serve, args=(s, reply), daemon=True).start()
    log("stand-in ready", address=addr, ports=list(PORTS), starts=len(record["starts"]))  # type: ignore[arg-type]
    stop = threading.Event()
    # As PID 1 a process gets no default signal handlers: without these SIGTERM would be ignored.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    for s in listeners:
        s.close()
    log("stand-in stopped", address=addr)
    return 0


def probe(addr: str) -> int:
    try:
        with socket.create_connection((addr, PORTS[0]), timeout=2) as conn:
            line = conn.makefile("rb").readline().decode(errors="replace")
    except OSError as exc:
        print(f"not ready: {addr}:{PORTS[0]}: {exc}")
        return 1
    if not line.startswith(BANNER):
        print(f"not ready: unexpected answer on {addr}:{PORTS[0]}: {line!r}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--probe":
        return probe(argv[1])
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    return run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
