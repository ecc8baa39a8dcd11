"""A tiny stand-in for kubernetes-csi's node-driver-registrar (which the Go module proxy refuses here):
serves the pluginregistration v1 Registration API on ``<registration dir>/<driver>-reg.sock`` for one
CSI driver, as the real registrar does, and records what the agent answered.

    python csi_registrar.py --csi-address unix:///path/csi.sock --kubelet-registration-path /path/csi.sock \
        --plugin-registration-path DIR [--status-file FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from storage.system.csi import CsiClient  # noqa: E402
from storage.system.csi import pluginregistration_pb2 as rpb  # noqa: E402
from storage.system.csi import pluginregistration_pb2_grpc as rpbg  # noqa: E402


class Registrar(rpbg.RegistrationServicer):
    def __init__(self, name: str, endpoint: str, status_file: Path | None) -> None:
        self.name, self.endpoint, self.status_file = name, endpoint, status_file

    def GetInfo(self, request, context):
        return rpb.PluginInfo(type="CSIPlugin", name=self.name, endpoint=self.endpoint, supported_versions=["1.0.0"])

    def NotifyRegistrationStatus(self, request, context):
        if self.status_file is not None:
            # Replaced whole: the test waits for the file to exist and must never read it half-written.
            staged = self.status_file.with_name(f".{self.status_file.name}.tmp")
            staged.write_text(json.dumps({"registered": request.plugin_registered, "error": request.error}))
            staged.replace(self.status_file)
        return rpb.RegistrationStatusResponse()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csi-address", required=True)
    ap.add_argument("--kubelet-registration-path", required=True)
    ap.add_argument("--plugin-registration-path", required=True)
    ap.add_argument("--status-file", default=None)
    args = ap.parse_args()
    name = CsiClient(args.csi_address).info().name  # as node-driver-registrar: ask the driver its name
    sock = Path(args.plugin_registration_path) / f"{name}-reg.sock"
    sock.parent.mkdir(parents=True, exist_ok=True)
    if sock.exists():
        sock.unlink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpbg.add_RegistrationServicer_to_server(
        Registrar(name, args.kubelet_registration_path, Path(args.status_file) if args.status_file else None), server)
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()
    if sock.exists():
        os.unlink(sock)


if __name__ == "__main__":
    main()
