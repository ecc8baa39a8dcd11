"""A small fake of the Compute Engine v1 REST API: disks, regional disks, instances and operations.

No emulator of Compute Engine exists, so this fake serves the endpoints the real
``google-cloud-compute`` client calls (over plain HTTP on 127.0.0.1, any free
port) and refuses what the real API refuses, with the real error body
(``{"error": {"code", "message", "errors": [{"domain", "reason", "message"}]}}``):

* insert of an existing name: 409 ``alreadyExists``;
* an unknown project, zone, region, disk, instance or operation: 404 ``notFound``;
* a name that is not ``[a-z]([-a-z0-9]{0,61}[a-z0-9])?``, an unknown disk type, a size under the type's
  minimum (10 GB; regional pd-standard 200 GB) or over 65,536 GB, a regional disk without exactly two
  zones of its region, bad labels, shrinking a disk: 400 ``invalid``;
* deleting a disk some instance uses: 400 ``resourceInUseByAnotherResource``;
* attaching a disk that another instance uses read-write, or read-write while others read it, or to an
  instance that already has it: 400 ``resourceInUseByAnotherResource``; attaching across zones (or a
  regional disk to an instance outside its two zones): 400 ``invalid``;
* detaching a device name the instance does not have: 400 ``invalid``;
* snapshots (global): an invalid or existing name (400 / 409), a missing source disk or snapshot (404), a
  source disk that is not READY, a disk from a snapshot that is not READY (400 ``resourceNotReady``), a disk
  smaller than its source snapshot (400 ``invalid``).

Mutations are asynchronous as in Compute Engine: a call returns a RUNNING operation and its effect lands
when the operation is DONE (a new disk is CREATING until then). ``op_delay`` holds operations RUNNING;
``inject`` makes the next matching calls fail (5xx, 429 ``rateLimitExceeded`` ...) and
``fail_operation`` the next operation of a kind (e.g. an insert that runs out of zone capacity). Test code reads and
changes the state through the methods of ``GceFake``; the API only through HTTP.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]

DISK_TYPES = ("pd-standard", "pd-ssd", "pd-balanced", "pd-extreme")
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_GB = 65536


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, domain: str = "global") -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.domain = code, reason, message, domain

    def body(self) -> Obj:
        return {"error": {"code": self.code, "message": self.message,
                          "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}]}}


def not_found(path: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{path}' was not found")


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid", message)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _path_of(url: str) -> str:
    """``projects/...`` of a full or partial resource URL."""
    i = url.find("projects/")
    return url[i:] if i >= 0 else url


@dataclass
class Injection:
    method: str
    pattern: re.Pattern[str]
    code: int
    reason: str
    remaining: int


@dataclass
class Operation:
    name: str
    scope: str  # "zones/Z" or "regions/R"
    project: str
    op_type: str
    target: str  # projects/... of the target resource
    done_at: float
    apply: Callable[[], None]
    error: tuple[str, str] | None = None  # (code, message): the operation ends DONE with this error
    status: str = "RUNNING"
    insert_time: str = field(default_factory=_now)
    end_time: str = ""


class GceFake:
    def __init__(self, project: str = "test-project",
                 zones: tuple[str, ...] = ("us-central1-a", "us-central1-b", "us-central1-c", "europe-west1-b")) -> None:
        self.project = project
        self.zones = set(zones)
        self.regions = {z.rsplit("-", 1)[0] for z in zones}
        self.disks: dict[str, Obj] = {}  # "zones/Z/disks/N" or "regions/R/disks/N" -> Disk JSON
        self.snapshots: dict[str, Obj] = {}  # "global/snapshots/N" -> Snapshot JSON
        self.instances: dict[str, Obj] = {}  # "zones/Z/instances/N" -> Instance JSON
        self.operations: dict[str, Operation] = {}
        self.op_delay = 0.0  # seconds an operation stays RUNNING
        self.requests: list[tuple[str, str]] = []  # (method, path) of every API call
        self._pending_users: dict[str, dict[str, str]] = {}  # disk key -> instance path -> mode, attach in flight
        self._injections: list[Injection] = []
        self._op_errors: list[tuple[str, str, str]] = []  # (operationType, code, message), next ones to fail
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base(self) -> str:
        return f"{self.endpoint}/compute/v1/"

    def start(self) -> "GceFake":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, body = fake.handle(self.command, self.path, raw)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gce-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def reset(self) -> None:
        with self._lock:
            self.disks.clear()
            self.snapshots.clear()
            self.instances.clear()
            self.operations.clear()
            self._pending_users.clear()
            self._injections.clear()
            self._op_errors.clear()
            self.requests.clear()
            self.op_delay = 0.0

    # ---- test controls ---------------------------------------------------------------------------------
    def add_instance(self, zone: str, name: str) -> Obj:
        """A running VM with its boot disk (device ``persistent-disk-0``), as Compute Engine shows one."""
        with self._lock:
            boot = self._new_disk(f"zones/{zone}", f"{name}-boot", 10, "pd-balanced", {}, "")
            boot["status"] = "READY"
            key = f"zones/{zone}/instances/{name}"
            self.instances[key] = {
                "kind": "compute#instance", "id": str(next(self._ids)), "name": name, "status": "RUNNING",
                "zone": self._url(f"zones/{zone}"), "selfLink": self._url(key), "creationTimestamp": _now(),
                "disks": [{"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE",
                           "source": boot["selfLink"], "deviceName": "persistent-disk-0", "index": 0,
                           "boot": True, "autoDelete": True, "interface": "SCSI"}],
            }
            boot["users"] = [self._url(key)]
            return self.instances[key]

    def inject(self, method: str, path_regex: str, code: int, reason: str = "", count: int = 1) -> None:
        """The next ``count`` calls whose method and ``projects/...`` path match fail with ``code``."""
        default = {429: "rateLimitExceeded", 500: "backendError", 503: "backendError", 403: "rateLimitExceeded"}
        with self._lock:
            self._injections.append(Injection(method.upper(), re.compile(path_regex), code,
                                              reason or default.get(code, "error"), count))

    def fail_operation(self, op_type: str, code: str, message: str) -> None:
        """The next operation of ``op_type`` (insert, attachDisk ...) ends DONE with this error, its effect
        undone as Compute Engine leaves it (a failed insert leaves the disk FAILED)."""
        with self._lock:
            self._op_errors.append((op_type, code, message))

    def disk(self, name: str) -> Obj | None:
        with self._lock:
            self._tick()
            return next((d for k, d in self.disks.items() if k.endswith(f"/disks/{name}")), None)

    def disk_names(self) -> list[str]:
        with self._lock:
            self._tick()
            return sorted(d["name"] for d in self.disks.values() if not d["name"].endswith("-boot"))

    def attached(self, instance: str) -> list[Obj]:
        """The data disks (not the boot disk) an instance has, as ``AttachedDisk`` JSON."""
        with self._lock:
            self._tick()
            vm = next(v for k, v in self.instances.items() if k.endswith(f"/instances/{instance}"))
            return [d for d in vm["disks"] if not d.get("boot")]

    def finish_operations(self) -> None:
        """Let every RUNNING operation complete now."""
        with self._lock:
            for op in self.operations.values():
                op.done_at = min(op.done_at, time.monotonic())
            self._tick()

    # ---- HTTP ------------------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.base}projects/{self.project}/{path}"

    def handle(self, method: str, raw_path: str, raw_body: bytes) -> tuple[int, Obj]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        with self._lock:
            self.requests.append((method, path))
            self._tick()
            try:
                rel = _path_of(path)
                for inj in self._injections:
                    if inj.remaining > 0 and inj.method == method and inj.pattern.search(rel):
                        inj.remaining -= 1
                        raise ApiError(inj.code, inj.reason,
                                       "Rate Limit Exceeded" if inj.code == 429 else f"injected error {inj.code}",
                                       domain="usageLimits" if inj.code in (403, 429) else "global")
                body = json.loads(raw_body) if raw_body else {}
                return 200, self._route(method, path, query, body)
            except ApiError as exc:
                return exc.code, exc.body()
            except (ValueError, KeyError) as exc:
                return 400, invalid(f"Invalid JSON payload received. {exc}").body()

    def _route(self, method: str, path: str, query: dict[str, str], body: Obj) -> Obj:
        g = re.fullmatch(r"/compute/v1/projects/([^/]+)/global/(snapshots|operations)(?:/([^/]+))?(/wait)?", path)
        if g:
            project, collection, name, wait = g.groups()
            if project != self.project:
                raise not_found(f"projects/{project}")
            if collection == "operations" and name:
                if wait and method == "POST":
                    return self._wait("global", name)
                if not wait and method == "GET":
                    return self._op_json(self._op("global", name))
            elif collection == "snapshots" and not wait:
                if name is None and method == "POST":
                    return self._insert_snapshot(body)
                if name is not None and method == "GET":
                    return self._snapshot(name)
                if name is not None and method == "DELETE":
                    return self._delete_snapshot(name)
            raise ApiError(404, "notFound", f"The requested URL {path} was not found on this server.")
        m = re.fullmatch(r"/compute/v1/projects/([^/]+)/(zones|regions)/([^/]+)/(.*)", path)
        if not m:
            raise not_found(_path_of(path))
        project, kind, where, rest = m.groups()
        if project != self.project:
            raise not_found(f"projects/{project}")
        if (kind == "zones" and where not in self.zones) or (kind == "regions" and where not in self.regions):
            raise not_found(f"projects/{project}/{kind}/{where}")
        scope = f"{kind}/{where}"
        segs = rest.split("/")
        if segs[0] == "disks":
            if len(segs) == 1:
                if method == "POST":
                    return self._insert_disk(scope, body)
                if method == "GET":
                    return self._list_disks(scope, query)
            elif len(segs) == 2:
                if method == "GET":
                    return self._get_disk(scope, segs[1])
                if method == "DELETE":
                    return self._delete_disk(scope, segs[1])
            elif len(segs) == 3 and segs[2] == "resize" and method == "POST":
                return self._resize_disk(scope, segs[1], body)
        elif segs[0] == "instances" and kind == "zones" and len(segs) >= 2:
            key = f"{scope}/instances/{segs[1]}"
            if len(segs) == 2 and method == "GET":
                return self._instance(key)
            if len(segs) == 3 and segs[2] == "attachDisk" and method == "POST":
                return self._attach(key, body)
            if len(segs) == 3 and segs[2] == "detachDisk" and method == "POST":
                return self._detach(key, query.get("deviceName", ""))
        elif segs[0] == "operations" and len(segs) >= 2:
            if len(segs) == 2 and method == "GET":
                return self._op_json(self._op(scope, segs[1]))
            if len(segs) == 3 and segs[2] == "wait" and method == "POST":
                return self._wait(scope, segs[1])
        raise ApiError(404, "notFound", f"The requested URL {path} was not found on this server.")

    # ---- operations ------------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        for op in sorted(self.operations.values(), key=lambda o: o.done_at):
            if op.status != "DONE" and op.done_at <= now:
                op.status, op.end_time = "DONE", _now()
                if op.error is None:
                    op.apply()
                elif op.op_type == "insert":
                    disk = self.disks.get(op.target.split("/", 2)[2]) or self.snapshots.get(op.target.split("/", 2)[2])
                    if disk is not None:
                        disk["status"] = "FAILED"
                elif op.op_type == "attachDisk":
                    for users in self._pending_users.values():
                        users.pop(op.target, None)

    def _start(self, scope: str, op_type: str, target: str, apply: Callable[[], None]) -> Obj:
        name = f"operation-{int(time.time() * 1000)}-{next(self._ids)}"
        op = Operation(name, scope, self.project, op_type, target, time.monotonic() + self.op_delay, apply)
        failing = next((e for e in self._op_errors if e[0] == op_type), None)
        if failing is not None:
            self._op_errors.remove(failing)
            op.error = (failing[1], failing[2])
        self.operations[name] = op
        self._tick()
        return self._op_json(op)

    def _op(self, scope: str, name: str) -> Operation:
        op = self.operations.get(name)
        if op is None or op.scope != scope:
            raise not_found(f"projects/{self.project}/{scope}/operations/{name}")
        return op

    def _op_json(self, op: Operation) -> Obj:
        kind, _, where = op.scope.partition("/")
        out: Obj = {"kind": "compute#operation", "id": str(abs(hash(op.name)) % 10**18), "name": op.name,
                    "operationType": op.op_type, "targetLink": self._url(op.target.split("/", 2)[2]),
                    "status": op.status, "progress": 100 if op.status == "DONE" else 0,
                    "insertTime": op.insert_time, "startTime": op.insert_time,
                    "selfLink": self._url(f"{op.scope}/operations/{op.name}")}
        if op.scope != "global":  # a global operation names neither
            out["zone" if kind == "zones" else "region"] = self._url(op.scope)
        if op.end_time:
            out["endTime"] = op.end_time
        if op.status == "DONE" and op.error is not None:
            out["error"] = {"errors": [{"code": op.error[0], "message": op.error[1]}]}
            out["httpErrorStatusCode"] = 400
            out["httpErrorMessage"] = "BAD REQUEST"
        return out

    def _wait(self, scope: str, name: str) -> Obj:
        """Like Compute Engine's ``wait``: returns when DONE or after a while (here at most 2 s)."""
        op = self._op(scope, name)
        deadline = time.monotonic() + 2.0
        while op.status != "DONE" and time.monotonic() < deadline:
            self._lock.release()
            try:
                time.sleep(0.02)
            finally:
                self._lock.acquire()
            self._tick()
        return self._op_json(op)

    # ---- disks -----------------------------------------------------------------------------------------
    def _new_disk(self, scope: str, name: str, size: int, disk_type: str, labels: dict[str, str],
                  description: str, replica_zones: list[str] | None = None, kms: str = "") -> Obj:
        key = f"{scope}/disks/{name}"
        kind, where = scope.split("/")
        disk: Obj = {
            "kind": "compute#disk", "id": str(next(self._ids)), "name": name, "sizeGb": str(size),
            "status": "CREATING", "selfLink": self._url(key), "type": self._url(f"{scope}/diskTypes/{disk_type}"),
            "creationTimestamp": _now(), "labelFingerprint": "42WmSpB8rSM=", "physicalBlockSizeBytes": "4096",
        }
        disk["zone" if kind == "zones" else "region"] = self._url(scope)
        if labels:
            disk["labels"] = dict(labels)
        if description:
            disk["description"] = description
        if replica_zones:
            disk["replicaZones"] = [self._url(f"zones/{z}") for z in replica_zones]
        if kms:
            disk["diskEncryptionKey"] = {"kmsKeyName": kms}
        self.disks[key] = disk
        return disk

    def _insert_disk(self, scope: str, body: Obj) -> Obj:
        kind, where = scope.split("/")
        name = str(body.get("name") or "")
        if not NAME_RE.match(name):
            raise invalid(f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                          "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        key = f"{scope}/disks/{name}"
        if key in self.disks:
            raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/{key}' already exists")
        type_url = str(body.get("type") or f"{scope}/diskTypes/pd-standard")
        tm = re.search(r"(?:^|/)(zones|regions)/([^/]+)/diskTypes/([^/]+)$", type_url)
        if not tm or f"{tm.group(1)}/{tm.group(2)}" != scope or tm.group(3) not in DISK_TYPES:
            raise invalid(f"Invalid value for field 'resource.type': '{type_url}'. Unknown disk type.")
        disk_type = tm.group(3)
        replica_zones: list[str] = []
        if kind == "regions":
            for z in body.get("replicaZones") or []:
                zm = re.search(r"zones/([^/]+)$", str(z))
                replica_zones.append(zm.group(1) if zm else str(z))
            if len(replica_zones) != 2 or len(set(replica_zones)) != 2 or any(
                    z not in self.zones or z.rsplit("-", 1)[0] != where for z in replica_zones):
                raise invalid(f"Invalid value for field 'resource.replicaZones': '{replica_zones}'. "
                              f"Regional disks need exactly two distinct zones of region {where}.")
        try:
            size = int(body.get("sizeGb") or 0)
        except (TypeError, ValueError):
            raise invalid(f"Invalid value for field 'resource.sizeGb': '{body.get('sizeGb')}'.") from None
        source_snapshot = str(body.get("sourceSnapshot") or "")
        snapshot: Obj | None = None
        if source_snapshot:
            snapshot = self.snapshots.get(_path_of(source_snapshot).split("/", 2)[-1])
            if snapshot is None:
                raise not_found(_path_of(source_snapshot))
            if snapshot["status"] != "READY":
                raise ApiError(400, "resourceNotReady", f"The resource '{_path_of(source_snapshot)}' is not ready")
            if not size:
                size = int(snapshot["diskSizeGb"])
            if size < int(snapshot["diskSizeGb"]):
                raise invalid(f"Invalid value for field 'resource.sizeGb': '{size}'. Requested disk size cannot be "
                              f"smaller than the snapshot size ({snapshot['diskSizeGb']} GB).")
        minimum = 200 if (kind == "regions" and disk_type == "pd-standard") else 10
        if size < minimum:
            raise invalid(f"Invalid value for field 'resource.sizeGb': '{size}'. Disk size cannot be smaller than "
                          f"{minimum} GB.")
        if size > MAX_GB:
            raise invalid(f"Invalid value for field 'resource.sizeGb': '{size}'. Disk size cannot be larger than "
                          f"{MAX_GB} GB.")
        labels = {str(k): str(v) for k, v in (body.get("labels") or {}).items()}
        for k, v in labels.items():
            if not LABEL_KEY_RE.match(k) or not LABEL_VALUE_RE.match(v):
                raise invalid(f"Invalid value for field 'resource.labels': '{k}={v}'.")
        kms = str((body.get("diskEncryptionKey") or {}).get("kmsKeyName") or "")
        disk = self._new_disk(scope, name, size, disk_type, labels, str(body.get("description") or ""),
                              replica_zones, kms)
        if snapshot is not None:
            disk["sourceSnapshot"], disk["sourceSnapshotId"] = snapshot["selfLink"], snapshot["id"]

        def done() -> None:
            disk["status"] = "READY"
        return self._start(scope, "insert", f"projects/{self.project}/{key}", done)

    # ---- snapshots ---------------------------------------------------------------------------------------
    def snapshot_names(self) -> list[str]:
        with self._lock:
            self._tick()
            return sorted(s["name"] for s in self.snapshots.values())

    def set_snapshot_status(self, name: str, status: str) -> None:
        with self._lock:
            self._tick()
            self.snapshots[f"global/snapshots/{name}"]["status"] = status

    def _insert_snapshot(self, body: Obj) -> Obj:
        name = str(body.get("name") or "")
        if not NAME_RE.match(name):
            raise invalid(f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                          "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        key = f"global/snapshots/{name}"
        if key in self.snapshots:
            raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/{key}' already exists")
        source = str(body.get("sourceDisk") or "")
        if not source:
            raise ApiError(400, "required", "Required field 'resource.sourceDisk' not specified")
        disk = self.disks.get(_path_of(source).split("/", 2)[-1])
        if disk is None:
            raise not_found(_path_of(source))
        if disk["status"] != "READY":
            raise ApiError(400, "resourceNotReady", f"The resource '{_path_of(source)}' is not ready")
        labels = {str(k): str(v) for k, v in (body.get("labels") or {}).items()}
        for k, v in labels.items():
            if not LABEL_KEY_RE.match(k) or not LABEL_VALUE_RE.match(v):
                raise invalid(f"Invalid value for field 'resource.labels': '{k}={v}'.")
        snapshot: Obj = {
            "kind": "compute#snapshot", "id": str(next(self._ids)), "name": name, "status": "CREATING",
            "selfLink": self._url(key), "creationTimestamp": _now(), "diskSizeGb": disk["sizeGb"],
            "sourceDisk": disk["selfLink"], "sourceDiskId": disk["id"], "storageBytes": "0",
            "labelFingerprint": "42WmSpB8rSM=",
        }
        if labels:
            snapshot["labels"] = labels
        if body.get("storageLocations"):
            snapshot["storageLocations"] = [str(x) for x in body["storageLocations"]]
        if body.get("description"):
            snapshot["description"] = str(body["description"])
        self.snapshots[key] = snapshot

        def done() -> None:
            snapshot["status"] = "READY"
        return self._start("global", "insert", f"projects/{self.project}/{key}", done)

    def _snapshot(self, name: str) -> Obj:
        snapshot = self.snapshots.get(f"global/snapshots/{name}")
        if snapshot is None:
            raise not_found(f"projects/{self.project}/global/snapshots/{name}")
        return snapshot

    def _delete_snapshot(self, name: str) -> Obj:
        key = f"global/snapshots/{name}"
        snapshot = self._snapshot(name)
        snapshot["status"] = "DELETING"
        return self._start("global", "delete", f"projects/{self.project}/{key}", lambda: self.snapshots.pop(key, None))

    def _disk(self, scope: str, name: str) -> Obj:
        disk = self.disks.get(f"{scope}/disks/{name}")
        if disk is None:
            raise not_found(f"projects/{self.project}/{scope}/disks/{name}")
        return disk

    def _get_disk(self, scope: str, name: str) -> Obj:
        return self._disk(scope, name)

    def _list_disks(self, scope: str, query: dict[str, str]) -> Obj:
        items = [d for k, d in sorted(self.disks.items()) if k.startswith(scope + "/")]
        flt = query.get("filter", "").strip()
        if flt:
            fm = re.fullmatch(r'\(?\s*(name|labels\.[a-z0-9_-]+)\s*=\s*"?([^")]*)"?\s*\)?', flt)
            if not fm:
                raise invalid(f"Invalid value for field 'filter': '{flt}'. Invalid list filter expression.")
            field_name, value = fm.groups()
            if field_name == "name":
                items = [d for d in items if d["name"] == value]
            else:
                items = [d for d in items if (d.get("labels") or {}).get(field_name[7:]) == value]
        return {"kind": "compute#diskList", "id": f"projects/{self.project}/{scope}/disks", "items": items,
                "selfLink": self._url(f"{scope}/disks")}

    def _users(self, key: str) -> dict[str, str]:
        """instance path -> mode of every instance that has the disk or is getting it."""
        disk = self.disks[key]
        out: dict[str, str] = {}
        for user in disk.get("users") or []:
            vm = self.instances.get(_path_of(user).split("/", 2)[2])
            if vm is None:
                continue
            mode = next((d.get("mode", "READ_WRITE") for d in vm["disks"] if _path_of(d["source"]).endswith(key)),
                        "READ_WRITE")
            out[_path_of(user)] = mode
        out.update(self._pending_users.get(key, {}))
        return out

    def _delete_disk(self, scope: str, name: str) -> Obj:
        disk = self._disk(scope, name)
        key = f"{scope}/disks/{name}"
        users = self._users(key)
        if users:
            raise ApiError(400, "resourceInUseByAnotherResource",
                           f"The disk resource 'projects/{self.project}/{key}' is already being used by "
                           f"'{sorted(users)[0]}'")
        disk["status"] = "DELETING"

        def done() -> None:
            self.disks.pop(key, None)
        return self._start(scope, "delete", f"projects/{self.project}/{key}", done)

    def _resize_disk(self, scope: str, name: str, body: Obj) -> Obj:
        disk = self._disk(scope, name)
        key = f"{scope}/disks/{name}"
        try:
            size = int(body.get("sizeGb") or 0)
        except (TypeError, ValueError):
            raise invalid(f"Invalid value for field 'sizeGb': '{body.get('sizeGb')}'.") from None
        if size <= int(disk["sizeGb"]):
            raise invalid(f"Invalid value for field 'sizeGb': '{size}'. New disk size '{size}' GB must be larger "
                          f"than existing size '{disk['sizeGb']}' GB.")
        if size > MAX_GB:
            raise invalid(f"Invalid value for field 'sizeGb': '{size}'. Disk size cannot be larger than {MAX_GB} GB.")

        def done() -> None:
            disk["sizeGb"] = str(size)
        return self._start(scope, "resize", f"projects/{self.project}/{key}", done)

    # ---- instances -------------------------------------------------------------------------------------
    def _instance(self, key: str) -> Obj:
        vm = self.instances.get(key)
        if vm is None:
            raise not_found(f"projects/{self.project}/{key}")
        return vm

    def _attach(self, key: str, body: Obj) -> Obj:
        vm = self._instance(key)
        zone = key.split("/")[1]
        source = _path_of(str(body.get("source") or ""))
        sm = re.fullmatch(rf"projects/{re.escape(self.project)}/((zones|regions)/([^/]+)/disks/([^/]+))", source)
        if not sm:
            raise invalid(f"Invalid value for field 'resource.source': '{body.get('source')}'. "
                          "The URL is malformed.")
        disk_key, kind, where, name = sm.groups()
        disk = self.disks.get(disk_key)
        if disk is None:
            raise not_found(source)
        if kind == "zones" and where != zone:
            raise invalid(f"Invalid value for field 'resource.source': '{body.get('source')}'. "
                          f"Disk must be in the same zone as the instance ({zone}).")
        if kind == "regions" and zone not in [re.sub(r".*zones/", "", z) for z in disk.get("replicaZones") or []]:
            raise invalid(f"Invalid value for field 'resource.source': '{body.get('source')}'. "
                          f"Regional disk's replica zones do not include the instance's zone ({zone}).")
        if disk["status"] != "READY":
            raise ApiError(400, "resourceNotReady",
                           f"The resource 'projects/{self.project}/{disk_key}' is not ready")
        mode = str(body.get("mode") or "READ_WRITE")
        if mode not in ("READ_WRITE", "READ_ONLY"):
            raise invalid(f"Invalid value for field 'resource.mode': '{mode}'.")
        device = str(body.get("deviceName") or name)
        users = self._users(disk_key)
        me = f"projects/{self.project}/{key}"
        if me in users or any(d["deviceName"] == device for d in vm["disks"]):
            raise ApiError(400, "resourceInUseByAnotherResource",
                           f"The disk resource '{source}' is already being used by '{me}'")
        if users and (mode == "READ_WRITE" or "READ_WRITE" in users.values()):
            raise ApiError(400, "resourceInUseByAnotherResource",
                           f"The disk resource '{source}' is already being used by '{sorted(users)[0]}'")
        self._pending_users.setdefault(disk_key, {})[me] = mode

        def done() -> None:
            self._pending_users.get(disk_key, {}).pop(me, None)
            vm["disks"].append({"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": mode,
                                "source": disk["selfLink"], "deviceName": device, "index": len(vm["disks"]),
                                "boot": False, "autoDelete": False, "interface": "SCSI"})
            disk.setdefault("users", []).append(vm["selfLink"])
        return self._start(f"zones/{zone}", "attachDisk", me, done)

    def _detach(self, key: str, device: str) -> Obj:
        vm = self._instance(key)
        attached = next((d for d in vm["disks"] if d["deviceName"] == device), None)
        if attached is None:
            raise invalid(f"Invalid value for field 'deviceName': '{device}'. No attached disk found with the "
                          f"device name '{device}' on instance '{vm['name']}'.")
        zone = key.split("/")[1]

        def done() -> None:
            if attached in vm["disks"]:
                vm["disks"].remove(attached)
            disk = self.disks.get(_path_of(attached["source"]).split("/", 2)[2])
            if disk is not None:
                disk["users"] = [u for u in disk.get("users") or [] if u != vm["selfLink"]]
                if not disk["users"]:
                    disk.pop("users")
        return self._start(f"zones/{zone}", "detachDisk", f"projects/{self.project}/{key}", done)
