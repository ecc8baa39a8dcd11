"""A small CSI driver written for the tests, in the manner of kubernetes-csi's hostpath driver (which
cannot be built here: the Go module proxy refuses its module). Volumes are directories under
``--statedir``; NodeStage and NodePublish are real bind mounts; snapshots are tar archives.

    python csi_test_driver.py --endpoint unix:///path/csi.sock --nodeid NODE --drivername NAME \
        --statedir DIR [--attach] [--require-secret KEY=VALUE] [--max-volumes N]

Runs until SIGTERM; it leaves its mounts to the CO (NodeUnpublish/NodeUnstage), like a real driver.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from storage.system.csi import csi_pb2 as pb  # noqa: E402
from storage.system.csi import csi_pb2_grpc as pbg  # noqa: E402

TOPOLOGY_KEY = "topology.csi-test.stowage.io/node"


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    context.abort(code, message)


def _is_mount(path: str) -> bool:
    return subprocess.run(["mountpoint", "-q", path]).returncode == 0


class State:
    def __init__(self, statedir: Path) -> None:
        self.dir = statedir
        self.file = statedir / "state.json"
        self.lock = threading.Lock()
        (statedir / "volumes").mkdir(parents=True, exist_ok=True)
        (statedir / "snapshots").mkdir(exist_ok=True)
        (statedir / "published").mkdir(exist_ok=True)
        self.data = json.loads(self.file.read_text()) if self.file.exists() else {"volumes": {}, "snapshots": {},
                                                                                  "attached": {}}

    def save(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.file)


class Driver(pbg.IdentityServicer, pbg.ControllerServicer, pbg.NodeServicer):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state = State(Path(args.statedir))
        self.log = open(Path(args.statedir) / "calls.log", "a", buffering=1)
        self.log_lock = threading.Lock()

    def _record(self, method: str, request: object) -> None:
        # What the CO sent, minus secrets (they are checked, never written).
        fields = {f.name: v for f, v in request.ListFields() if f.name != "secrets"}  # type: ignore[attr-defined]
        line = json.dumps({"method": method, "request": {k: str(v) for k, v in fields.items()},
                           "secret_keys": sorted(getattr(request, "secrets", {}) or {})}) + "\n"
        with self.log_lock:  # gRPC serves calls on several threads: one whole line at a time
            self.log.write(line)

    def _check_secret(self, request: object, context: grpc.ServicerContext) -> None:
        if not self.args.require_secret:
            return
        key, _, value = self.args.require_secret.partition("=")
        if dict(getattr(request, "secrets", {})).get(key) != value:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "wrong or missing secret")

    # Identity
    def GetPluginInfo(self, request, context):
        return pb.GetPluginInfoResponse(name=self.args.drivername, vendor_version="0.1.0")

    def GetPluginCapabilities(self, request, context):
        S = pb.PluginCapability.Service
        return pb.GetPluginCapabilitiesResponse(capabilities=[
            pb.PluginCapability(service=S(type=S.CONTROLLER_SERVICE)),
            pb.PluginCapability(service=S(type=S.VOLUME_ACCESSIBILITY_CONSTRAINTS)),
            pb.PluginCapability(volume_expansion=pb.PluginCapability.VolumeExpansion(
                type=pb.PluginCapability.VolumeExpansion.ONLINE)),
        ])

    def Probe(self, request, context):
        resp = pb.ProbeResponse()
        resp.ready.value = True
        return resp

    # Controller
    def ControllerGetCapabilities(self, request, context):
        T = pb.ControllerServiceCapability.RPC.Type
        types = [T.CREATE_DELETE_VOLUME, T.EXPAND_VOLUME, T.CREATE_DELETE_SNAPSHOT, T.LIST_SNAPSHOTS, T.CLONE_VOLUME]
        if self.args.attach:
            types.append(T.PUBLISH_UNPUBLISH_VOLUME)
        if self.args.accepted_mutable_parameter_names is not None:
            types.append(T.MODIFY_VOLUME)
        if self.args.capacity is not None:
            types.append(T.GET_CAPACITY)
        return pb.ControllerGetCapabilitiesResponse(capabilities=[
            pb.ControllerServiceCapability(rpc=pb.ControllerServiceCapability.RPC(type=t)) for t in types])

    def CreateVolume(self, request, context):
        self._record("CreateVolume", request)
        self._check_secret(request, context)
        if not request.name:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "name missing")
        if self.args.parameters is not None:
            unknown = sorted(set(request.parameters) - set(filter(None, self.args.parameters.split(","))))
            if unknown:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unknown parameters: {', '.join(unknown)}")
        self._check_mutable(request.mutable_parameters, context)
        mine = {TOPOLOGY_KEY: self.args.nodeid}
        req = request.accessibility_requirements
        if req.requisite and not any(dict(t.segments) == mine for t in req.requisite):
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "requisite topology not served here")
        with self.state.lock:
            vols = self.state.data["volumes"]
            size = request.capacity_range.required_bytes or (1 << 20)
            if request.name in vols:
                v = vols[request.name]
                if v["size"] < size:
                    _abort(context, grpc.StatusCode.ALREADY_EXISTS, "exists with a smaller size")
            else:
                v = {"id": str(uuid.uuid4()), "size": size, "parameters": dict(request.parameters),
                     "mutable": dict(request.mutable_parameters)}
                path = self.state.dir / "volumes" / v["id"]
                path.mkdir()
                if request.volume_content_source.HasField("snapshot"):
                    snap = self.state.data["snapshots"].get(request.volume_content_source.snapshot.snapshot_id)
                    if snap is None:
                        shutil.rmtree(path)
                        _abort(context, grpc.StatusCode.NOT_FOUND, "snapshot not found")
                    subprocess.run(["tar", "-xf", snap["archive"], "-C", str(path)], check=True)
                elif request.volume_content_source.HasField("volume"):
                    source = self._by_id(request.volume_content_source.volume.volume_id)
                    if source is None:
                        shutil.rmtree(path)
                        _abort(context, grpc.StatusCode.NOT_FOUND, "source volume not found")
                    shutil.copytree(self.state.dir / "volumes" / source[1]["id"], path, symlinks=True,
                                    dirs_exist_ok=True)
                vols[request.name] = v
                self.state.save()
        vol = pb.Volume(volume_id=v["id"], capacity_bytes=v["size"], volume_context={"origin": "csi-test"},
                        accessible_topology=[pb.Topology(segments=mine)])
        return pb.CreateVolumeResponse(volume=vol)

    def _by_id(self, volume_id: str) -> tuple[str, dict] | None:
        for name, v in self.state.data["volumes"].items():
            if v["id"] == volume_id:
                return name, v
        return None

    def DeleteVolume(self, request, context):
        self._record("DeleteVolume", request)
        self._check_secret(request, context)
        with self.state.lock:
            found = self._by_id(request.volume_id)
            if found is not None:
                shutil.rmtree(self.state.dir / "volumes" / request.volume_id, ignore_errors=True)
                del self.state.data["volumes"][found[0]]
                self.state.save()
        return pb.DeleteVolumeResponse()

    def ControllerPublishVolume(self, request, context):
        self._record("ControllerPublishVolume", request)
        if self._by_id(request.volume_id) is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
        if request.node_id != self.args.nodeid:
            _abort(context, grpc.StatusCode.NOT_FOUND, "no such node")
        with self.state.lock:
            self.state.data["attached"][request.volume_id] = request.node_id
            self.state.save()
        return pb.ControllerPublishVolumeResponse(publish_context={"attached-by": "csi-test"})

    def ControllerUnpublishVolume(self, request, context):
        self._record("ControllerUnpublishVolume", request)
        with self.state.lock:
            self.state.data["attached"].pop(request.volume_id, None)
            self.state.save()
        return pb.ControllerUnpublishVolumeResponse()

    def ControllerExpandVolume(self, request, context):
        self._record("ControllerExpandVolume", request)
        with self.state.lock:
            found = self._by_id(request.volume_id)
            if found is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
            found[1]["size"] = max(found[1]["size"], request.capacity_range.required_bytes)
            self.state.save()
            return pb.ControllerExpandVolumeResponse(capacity_bytes=found[1]["size"], node_expansion_required=True)

    def _check_mutable(self, parameters, context) -> None:
        # As the hostpath driver's --accepted-mutable-parameter-names: any other name is INVALID_ARGUMENT.
        if not parameters:
            return
        if self.args.accepted_mutable_parameter_names is None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "mutable parameters given to a driver without MODIFY_VOLUME")
        accepted = set(filter(None, self.args.accepted_mutable_parameter_names.split(",")))
        unknown = sorted(set(parameters) - accepted)
        if unknown:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unknown mutable parameters: {', '.join(unknown)}")

    def GetCapacity(self, request, context):
        # What is left of --capacity after the volumes made so far, in this driver's one topology segment.
        self._record("GetCapacity", request)
        if self.args.capacity is None:
            _abort(context, grpc.StatusCode.UNIMPLEMENTED, "no GET_CAPACITY")
        segment = dict(request.accessible_topology.segments)
        with self.state.lock:
            used = sum(v["size"] for v in self.state.data["volumes"].values())
        free = max(0, self.args.capacity - used) if segment in ({}, {TOPOLOGY_KEY: self.args.nodeid}) else 0
        resp = pb.GetCapacityResponse(available_capacity=free)
        if self.args.max_volume_size is not None:
            resp.maximum_volume_size.value = min(free, self.args.max_volume_size)
        return resp

    def ControllerModifyVolume(self, request, context):
        self._record("ControllerModifyVolume", request)
        self._check_secret(request, context)
        self._check_mutable(request.mutable_parameters, context)
        with self.state.lock:
            found = self._by_id(request.volume_id)
            if found is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
            found[1].setdefault("mutable", {}).update(dict(request.mutable_parameters))
            self.state.save()
        return pb.ControllerModifyVolumeResponse()

    def CreateSnapshot(self, request, context):
        self._record("CreateSnapshot", request)
        with self.state.lock:
            snaps = self.state.data["snapshots"]
            for sid, s in snaps.items():
                if s["name"] == request.name:
                    break
            else:
                if self._by_id(request.source_volume_id) is None:
                    _abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
                sid = str(uuid.uuid4())
                archive = self.state.dir / "snapshots" / f"{sid}.tar"
                subprocess.run(["tar", "-cf", str(archive), "-C",
                                str(self.state.dir / "volumes" / request.source_volume_id), "."], check=True)
                # A snapshot restores to a volume as big as its source (CSI's size_bytes).
                s = snaps[sid] = {"name": request.name, "source": request.source_volume_id, "archive": str(archive),
                                  "size": self._by_id(request.source_volume_id)[1]["size"], "created": time.time()}
                self.state.save()
        return pb.CreateSnapshotResponse(snapshot=self._snapshot(sid, s))

    @staticmethod
    def _snapshot(sid: str, s: dict) -> pb.Snapshot:
        snap = pb.Snapshot(snapshot_id=sid, source_volume_id=s["source"], size_bytes=s["size"], ready_to_use=True)
        snap.creation_time.FromNanoseconds(int(s.get("created", 0) * 1e9))
        return snap

    def ListSnapshots(self, request, context):
        self._record("ListSnapshots", request)
        with self.state.lock:
            snaps = dict(self.state.data["snapshots"])
        found = [(sid, s) for sid, s in snaps.items()
                 if (not request.snapshot_id or sid == request.snapshot_id)
                 and (not request.source_volume_id or s["source"] == request.source_volume_id)]
        return pb.ListSnapshotsResponse(entries=[pb.ListSnapshotsResponse.Entry(snapshot=self._snapshot(sid, s))
                                                 for sid, s in found])

    def DeleteSnapshot(self, request, context):
        self._record("DeleteSnapshot", request)
        with self.state.lock:
            s = self.state.data["snapshots"].pop(request.snapshot_id, None)
            if s is not None:
                Path(s["archive"]).unlink(missing_ok=True)
                self.state.save()
        return pb.DeleteSnapshotResponse()

    # Node
    def _apply_mount_group(self, request, path: str) -> None:
        # A driver with VOLUME_MOUNT_GROUP gives the pod's group the volume's root (a real one mounts with gid=).
        group = request.volume_capability.mount.volume_mount_group if request.volume_capability.HasField("mount") else ""
        if group and self.args.volume_mount_group:
            os.chown(path, -1, int(group))
            os.chmod(path, 0o2775)

    def NodeGetCapabilities(self, request, context):
        T = pb.NodeServiceCapability.RPC.Type
        return pb.NodeGetCapabilitiesResponse(capabilities=[
            pb.NodeServiceCapability(rpc=pb.NodeServiceCapability.RPC(type=t))
            for t in (T.STAGE_UNSTAGE_VOLUME, T.GET_VOLUME_STATS, T.EXPAND_VOLUME,
                      *((T.VOLUME_MOUNT_GROUP,) if self.args.volume_mount_group else ()))])

    def NodeGetInfo(self, request, context):
        return pb.NodeGetInfoResponse(node_id=self.args.nodeid, max_volumes_per_node=self.args.max_volumes,
                                      accessible_topology=pb.Topology(segments={TOPOLOGY_KEY: self.args.nodeid}))

    def _bind(self, source: str, target: str, readonly: bool = False) -> None:
        subprocess.run(["mount", "--bind", source, target], check=True, capture_output=True)
        if readonly:
            subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True, capture_output=True)

    def NodeStageVolume(self, request, context):
        self._record("NodeStageVolume", request)
        self._check_secret(request, context)
        if self.args.attach and not self.args.attach_optional and request.publish_context.get("attached-by") != "csi-test":
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "not published to this node")
        src = self.state.dir / "volumes" / request.volume_id
        if not src.is_dir():
            _abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
        if not _is_mount(request.staging_target_path):
            self._bind(str(src), request.staging_target_path)
        self._apply_mount_group(request, request.staging_target_path)
        return pb.NodeStageVolumeResponse()

    def NodeUnstageVolume(self, request, context):
        self._record("NodeUnstageVolume", request)
        if os.path.exists(request.staging_target_path) and _is_mount(request.staging_target_path):
            subprocess.run(["umount", request.staging_target_path], check=True)
        return pb.NodeUnstageVolumeResponse()

    def NodePublishVolume(self, request, context):
        self._record("NodePublishVolume", request)
        target = request.target_path
        ephemeral = request.volume_context.get("csi.storage.k8s.io/ephemeral") == "true"
        if ephemeral:
            src = self.state.dir / "volumes" / request.volume_id
            src.mkdir(exist_ok=True)
        else:
            if not request.staging_target_path:
                _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "staging target path missing")
            src = Path(request.staging_target_path)
        # Replaced whole: a repeated publish must never let a reader see a half-written record.
        record = self.state.dir / "published" / f"{request.volume_id}.json"
        staged = record.with_name(f".{record.name}.{threading.get_ident()}")
        staged.write_text(json.dumps(dict(request.volume_context)))
        staged.replace(record)
        os.makedirs(target, exist_ok=True)  # the SP creates the target (spec)
        if not _is_mount(target):
            self._bind(str(src), target, request.readonly)
        return pb.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request, context):
        self._record("NodeUnpublishVolume", request)
        target = request.target_path
        if os.path.exists(target):
            if _is_mount(target):
                subprocess.run(["umount", target], check=True)
            os.rmdir(target)
        if (self.state.dir / "volumes" / request.volume_id).is_dir() and self._by_id(request.volume_id) is None:
            shutil.rmtree(self.state.dir / "volumes" / request.volume_id, ignore_errors=True)  # ephemeral
        return pb.NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(self, request, context):
        if not os.path.exists(request.volume_path):
            _abort(context, grpc.StatusCode.NOT_FOUND, "volume path not found")
        st = os.statvfs(request.volume_path)
        used = sum(f.stat().st_size for f in Path(request.volume_path).rglob("*") if f.is_file())
        found = self._by_id(request.volume_id)
        total = found[1]["size"] if found else st.f_blocks * st.f_frsize
        return pb.NodeGetVolumeStatsResponse(usage=[
            pb.VolumeUsage(unit=pb.VolumeUsage.BYTES, total=total, used=used, available=max(total - used, 0)),
            pb.VolumeUsage(unit=pb.VolumeUsage.INODES, total=st.f_files, used=st.f_files - st.f_ffree,
                           available=st.f_favail)])

    def NodeExpandVolume(self, request, context):
        self._record("NodeExpandVolume", request)
        found = self._by_id(request.volume_id)
        if found is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, "no such volume")
        return pb.NodeExpandVolumeResponse(capacity_bytes=found[1]["size"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--nodeid", required=True)
    ap.add_argument("--drivername", default="csi-test.stowage.io")
    ap.add_argument("--statedir", required=True)
    ap.add_argument("--attach", action="store_true")
    # Offers PUBLISH_UNPUBLISH_VOLUME but stages without it (for a CSIDriver with attachRequired: false).
    ap.add_argument("--attach-optional", action="store_true")
    ap.add_argument("--require-secret", default="")
    ap.add_argument("--max-volumes", type=int, default=0)
    # When given, CreateVolume refuses any other parameter (INVALID_ARGUMENT naming it), as real drivers do.
    ap.add_argument("--parameters", default=None)
    # When given, the driver has MODIFY_VOLUME and takes these VolumeAttributesClass parameters (comma list).
    ap.add_argument("--accepted-mutable-parameter-names", default=None)
    # When given, the driver has GET_CAPACITY: this many bytes in all, less the volumes made.
    ap.add_argument("--capacity", type=int, default=None)
    ap.add_argument("--max-volume-size", type=int, default=None)
    # The node service has VOLUME_MOUNT_GROUP: it applies the pod's fsGroup to the volume itself.
    ap.add_argument("--volume-mount-group", action="store_true")
    args = ap.parse_args()
    sock = args.endpoint.removeprefix("unix://")
    if os.path.exists(sock):
        os.unlink(sock)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    driver = Driver(args)
    pbg.add_IdentityServicer_to_server(driver, server)
    pbg.add_ControllerServicer_to_server(driver, server)
    pbg.add_NodeServicer_to_server(driver, server)
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
