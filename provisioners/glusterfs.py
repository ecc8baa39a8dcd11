"""GlusterFS volumes (``kubernetes.io/glusterfs``), made like Kubernetes' in-tree provisioner.

Two modes, chosen by the class:

* ``resturl`` set: Heketi's REST API (``POST /volumes``, the 202 + ``Location`` polling flow,
  ``DELETE /volumes/{id}``), with an HS256 JWT as ``restuser`` when ``restauthenabled`` (GF3).
* no ``resturl``: the ``gluster`` CLI against a glusterd (``glusterSocket``, else the local
  glusterd), one volume per claim with bricks under ``brickRoot`` on ``brickHosts`` (GF2).

Either way the volume is named from the claim (``pvc-<claim uid>``, or Kubernetes'
``<volumenameprefix>_<namespace>_<claim>_<claim uid>``): provisioning again after a crash finds
it (CLI: a volume created but not started is started). The PV names a Service+Endpoints
``glusterfs-dynamic-<claim>`` in the claim's namespace that lists the servers; the provisioning
controller creates them from ``ProvisionResult.objects`` (GF4). The PV carries the GID annotation
``pv.beta.kubernetes.io/gid`` (GF8).

Class parameters, besides Kubernetes' (``resturl``, ``restauthenabled``, ``restuser``,
``restuserkey``, ``secretNamespace``, ``secretName``, ``clusterid``, ``gidMin``, ``gidMax``,
``volumetype``, ``volumeoptions``, ``volumenameprefix``, ``snapfactor``, ``customepnameprefix``):

* ``glusterSocket``: path of glusterd's unix socket (CLI mode; default ``/var/run/glusterd.socket``,
  the CLI's own default);
* ``brickHosts``: comma-separated brick hosts (CLI mode; default ``127.1``); also the servers the
  Endpoints list, resolved to IPv4 addresses;
* ``brickRoot``: directory under which each volume's bricks go, ``<brickRoot>/<volume>/brick<N>``
  (CLI mode; required). Brick directories on this host are removed with the volume.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import structlog

from provisioners.base import ProvisionRequest, ProvisionResult, Provisioner, SecretReader, current_secrets
from storage.errors import PermanentError, TemporaryError
from storage.system.executor import CommandTimeout, Executor, default_executor

log = structlog.get_logger(__name__)

GiB = 1024**3
ANN_GID = "pv.beta.kubernetes.io/gid"
ANN_MODE = "glusterfs.stowage.io/mode"  # cli | heketi
ANN_SOCKET = "glusterfs.stowage.io/socket"
ANN_BRICK_ROOT = "glusterfs.stowage.io/brick-root"
ANN_RESTURL = "glusterfs.stowage.io/resturl"
ANN_RESTUSER = "glusterfs.stowage.io/restuser"
ANN_SECRET = "glusterfs.stowage.io/secret"  # namespace/name of the Heketi key
ANN_HEKETI_ID = "gluster.kubernetes.io/heketi-volume-id"
ANN_DESCRIPTION = "Description"
DESCRIPTION = "Gluster-Internal: Dynamically provisioned PV"
DYNAMIC_EP_PREFIX = "glusterfs-dynamic"
DEFAULT_GID_MIN, DEFAULT_GID_MAX = 2000, 2147483647
CLI_TIMEOUT = 60.0
BRICK_ROOT_MODE = 0o2777
DEFAULT_SOCKET = "/var/run/glusterd.socket"  # where the gluster CLI looks without --glusterd-sock
HEKETI_TIMEOUT = 10.0
HEKETI_POLL_DEADLINE = 300.0

KNOWN = ("resturl", "restauthenabled", "restuser", "restuserkey", "secretNamespace", "secretName", "clusterid",
         "gidMin", "gidMax", "volumetype", "volumeoptions", "volumenameprefix", "snapfactor", "customepnameprefix",
         "glusterSocket", "brickHosts", "brickRoot")


def volume_name_for(req: ProvisionRequest, prefix: str) -> str:
    """``pvc-<uid>``, or with ``volumenameprefix`` Kubernetes' ``<prefix>_<namespace>_<claim>_<uid>``."""
    if not prefix:
        return req.volume_name
    meta = req.claim.get("metadata") or {}
    return f"{prefix}_{meta.get('namespace') or 'default'}_{meta.get('name')}_{meta.get('uid')}"


def parse_volume_type(value: str) -> tuple[str, list[int]]:
    """``replicate:N``, ``disperse:D:R`` or ``none`` -> (kind, numbers), as Kubernetes parses them."""
    value = (value or "replicate:3").strip()
    kind, _, rest = value.partition(":")
    kind = kind.lower()
    try:
        numbers = [int(x) for x in rest.split(":")] if rest else []
    except ValueError:
        raise PermanentError(f"parameter volumetype={value!r}: counts must be integers") from None
    if kind == "none" and not numbers:
        return "none", []
    if kind == "replicate" and len(numbers) == 1 and numbers[0] >= 1:
        return "replicate", numbers
    if kind == "disperse" and len(numbers) == 2 and numbers[0] > numbers[1] >= 1:
        return "disperse", numbers
    raise PermanentError(f"parameter volumetype={value!r} must be 'none', 'replicate:N' or 'disperse:DATA:REDUNDANCY'"
                         " (more data bricks than redundancy bricks, at least one of each)")


def allocate_gid(volume: str, gid_min: int, gid_max: int) -> int:
    """A GID in [gid_min, gid_max] derived from the volume name (stable across retries). Kubernetes
    keeps a table of used GIDs per class; a provisioner here sees no other PVs, so GIDs of two
    volumes may coincide (a documented difference)."""
    digest = int.from_bytes(hashlib.sha256(volume.encode()).digest()[:8], "big")
    return gid_min + digest % (gid_max - gid_min + 1)


def capacity_gib(requested_bytes: int) -> int:
    return max(1, -(-requested_bytes // GiB))


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


class GlusterfsProvisioner(Provisioner):
    name = "kubernetes.io/glusterfs"
    known_parameters = frozenset(KNOWN)

    def __init__(self, executor: Executor | None = None, secrets: SecretReader | None = None) -> None:
        self.executor = executor or default_executor()
        self._fallback_secrets = secrets

    # ---- parameters --------------------------------------------------------------------------

    def check_parameters(self, parameters: dict[str, str]) -> None:
        known = {k.lower() for k in KNOWN}
        unknown = sorted(k for k in parameters if k.lower() not in known)
        if unknown:
            raise PermanentError(f"invalid parameter(s) for provisioner {self.name}: "
                                 f"{', '.join(repr(u) for u in unknown)} (known: {', '.join(KNOWN)})")

    @staticmethod
    def _params(req: ProvisionRequest) -> dict[str, str]:
        by_lower = {k.lower(): k for k in KNOWN}
        return {by_lower[k.lower()]: str(v) for k, v in req.parameters.items()}

    @staticmethod
    def _gid_range(p: dict[str, str]) -> tuple[int, int]:
        try:
            low = int(p.get("gidMin") or DEFAULT_GID_MIN)
            high = int(p.get("gidMax") or DEFAULT_GID_MAX)
        except ValueError:
            raise PermanentError("parameters gidMin/gidMax must be integers") from None
        if not DEFAULT_GID_MIN <= low <= high <= DEFAULT_GID_MAX:
            raise PermanentError(f"parameters gidMin={low}, gidMax={high}: need {DEFAULT_GID_MIN} <= gidMin <= gidMax"
                                 f" <= {DEFAULT_GID_MAX}")
        return low, high

    # ---- provision ----------------------------------------------------------------------------

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        self.check_parameters(req.parameters)
        p = self._params(req)
        bad = [m for m in req.access_modes if m not in ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany")]
        if bad:
            raise PermanentError(f"accessModes {bad} not supported by {self.name}"
                                 " (ReadWriteOnce, ReadOnlyMany, ReadWriteMany)")
        if req.volume_mode == "Block":
            raise PermanentError(f"volumeMode Block is not supported by {self.name}")
        prefix = p.get("volumenameprefix", "")
        if "_" in prefix:
            raise PermanentError(f"parameter volumenameprefix={prefix!r} must not contain '_'")
        kind, numbers = parse_volume_type(p.get("volumetype", ""))
        gid = allocate_gid(req.volume_name, *self._gid_range(p))
        volume = volume_name_for(req, prefix)
        size_gib = capacity_gib(req.requested_bytes)
        if p.get("resturl"):
            hosts, annotations, volume = self._provision_heketi(req, p, volume, size_gib, kind, numbers, gid)
        else:
            hosts, annotations = self._provision_cli(p, volume, kind, numbers, gid)
        claim_meta = req.claim.get("metadata") or {}
        namespace, claim_name = claim_meta.get("namespace") or "default", str(claim_meta.get("name") or "")
        ep_name = f"{p.get('customepnameprefix') or DYNAMIC_EP_PREFIX}-{claim_name}"
        if len(ep_name) > 63:
            ep_name = ep_name[:63].rstrip("-")
        labels = {"gluster.kubernetes.io/provisioned-for-pvc": claim_name}
        objects = [
            {"apiVersion": "v1", "kind": "Endpoints",
             "metadata": {"name": ep_name, "namespace": namespace, "labels": labels},
             "subsets": [{"addresses": [{"ip": h} for h in hosts], "ports": [{"port": 1, "protocol": "TCP"}]}]},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": ep_name, "namespace": namespace, "labels": labels},
             "spec": {"ports": [{"port": 1, "protocol": "TCP", "targetPort": 1}]}},
        ]
        source = {"glusterfs": {"endpoints": ep_name, "path": volume, "endpointsNamespace": namespace}}
        annotations.update({ANN_GID: str(gid), ANN_DESCRIPTION: DESCRIPTION, "gluster.org/type": "file",
                            "kubernetes.io/createdby": "heketi-dynamic-provisioner" if p.get("resturl")
                            else "gluster-cli-dynamic-provisioner"})
        return ProvisionResult.finished(source, f"{size_gib}Gi", annotations=annotations, objects=objects)

    # ---- CLI mode -----------------------------------------------------------------------------

    def _cli(self, socket_path: str, *args: str, check: bool = True) -> Any:
        argv = ["gluster", "--mode=script", "--log-file=/dev/null"]
        if socket_path:
            argv.append(f"--glusterd-sock={socket_path}")
        try:
            return self.executor.run([*argv, *args], timeout=CLI_TIMEOUT, check=check)
        except CommandTimeout as exc:
            raise TemporaryError(f"glusterd at {_where(socket_path)}: {exc}", delay=5.0) from None

    def _reachable(self, socket_path: str) -> None:
        """TemporaryError naming glusterd's endpoint and the error when it does not answer (GF9)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(3.0)
                s.connect(socket_path or DEFAULT_SOCKET)
        except OSError as exc:
            raise TemporaryError(f"glusterd at {_where(socket_path)} is unreachable: {exc.strerror or exc}",
                                 delay=10.0) from None

    def _volume_info(self, socket_path: str, volume: str) -> dict[str, str] | None:
        """``gluster volume info`` as key -> value (Status, Type, ...), or None when there is no such volume."""
        proc = self._cli(socket_path, "volume", "info", volume, check=False)
        text = (proc.stdout or "") + (proc.stderr or "")
        if proc.returncode != 0:
            if "does not exist" in text:
                return None
            if "Connection failed" in text:
                raise TemporaryError(f"glusterd at {_where(socket_path)} is unreachable: {text.strip()}", delay=10.0)
            raise TemporaryError(f"gluster volume info {volume} failed: {text.strip()[:300]}", delay=5.0)
        info: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() and key.strip() not in info:
                info[key.strip()] = value.strip()
        return info

    def _provision_cli(self, p: dict[str, str], volume: str, kind: str, numbers: list[int],
                       gid: int) -> tuple[list[str], dict[str, str]]:
        socket_path = p.get("glusterSocket", "")
        brick_root = p.get("brickRoot", "")
        if not brick_root or not os.path.isabs(brick_root):
            raise PermanentError("parameter brickRoot: an absolute path is required without resturl")
        hosts = [h.strip() for h in (p.get("brickHosts") or "127.1").split(",") if h.strip()]
        for opt in ("clusterid", "snapfactor"):
            if p.get(opt):
                raise PermanentError(f"parameter {opt} needs Heketi (resturl)")
        options = _volume_options(p.get("volumeoptions", ""))
        self._reachable(socket_path)
        info = self._volume_info(socket_path, volume)
        if info is None:
            count = numbers[0] if kind == "replicate" else sum(numbers) if kind == "disperse" else 1
            bricks = [f"{hosts[i % len(hosts)]}:{brick_root}/{volume}/brick{i}" for i in range(count)]
            # glusterd makes a brick's last directory only: the volume's own directory is ours.
            os.makedirs(os.path.join(brick_root, volume), exist_ok=True)
            layout: list[str] = []
            if kind == "replicate" and count > 1:
                layout = ["replica", str(count)]
            elif kind == "disperse":
                layout = ["disperse-data", str(numbers[0]), "redundancy", str(numbers[1])]
            proc = self._cli(socket_path, "volume", "create", volume, *layout, *bricks, "force", check=False)
            if proc.returncode != 0:
                text = ((proc.stdout or "") + (proc.stderr or "")).strip()
                if "already exists" not in text:  # a concurrent attempt made it: carry on with it
                    raise TemporaryError(f"gluster volume create {volume} failed: {text[:300]}", delay=5.0)
            log.info("glusterfs.volume_created", volume=volume, bricks=bricks)
            info = self._volume_info(socket_path, volume) or {}
        # Options, then start: each step is repeated on a retry until the volume is Started (GF2).
        for key, value in [("storage.owner-gid", str(gid)), *options]:
            proc = self._cli(socket_path, "volume", "set", volume, key, value, check=False)
            if proc.returncode != 0:
                raise PermanentError(f"gluster volume set {volume} {key} {value} failed: "
                                     f"{((proc.stdout or '') + (proc.stderr or '')).strip()[:300]}")
        if info.get("Status") != "Started":
            proc = self._cli(socket_path, "volume", "start", volume, check=False)
            text = ((proc.stdout or "") + (proc.stderr or "")).strip()
            if proc.returncode != 0 and "already started" not in text:
                raise TemporaryError(f"gluster volume start {volume} failed: {text[:300]}", delay=5.0)
        # The volume's root is each brick's root. Group-owned by the GID with setgid, as Heketi does;
        # writable by all too, because pods run in user namespaces and a FUSE mount cannot be idmapped:
        # a pod's root is an unprivileged host uid there (GF8).
        for brick in sorted(glob.glob(os.path.join(glob.escape(brick_root), glob.escape(volume), "brick*"))):
            os.chmod(brick, BRICK_ROOT_MODE)
        servers = _ipv4_addresses(hosts)
        annotations = {ANN_MODE: "cli", ANN_BRICK_ROOT: brick_root}
        if socket_path:
            annotations[ANN_SOCKET] = socket_path
        return servers, annotations

    def _delete_cli(self, pv: dict[str, Any], volume: str) -> None:
        ann = (pv.get("metadata") or {}).get("annotations") or {}
        socket_path = ann.get(ANN_SOCKET, "")
        self._reachable(socket_path)
        info = self._volume_info(socket_path, volume)
        if info is not None:
            if info.get("Status") == "Started":
                proc = self._cli(socket_path, "volume", "stop", volume, "force", check=False)
                text = ((proc.stdout or "") + (proc.stderr or "")).strip()
                if proc.returncode != 0 and "not in started state" not in text:
                    raise TemporaryError(f"gluster volume stop {volume} failed: {text[:300]}", delay=5.0)
            proc = self._cli(socket_path, "volume", "delete", volume, check=False)
            text = ((proc.stdout or "") + (proc.stderr or "")).strip()
            if proc.returncode != 0 and "does not exist" not in text:
                raise TemporaryError(f"gluster volume delete {volume} failed: {text[:300]}", delay=5.0)
            log.info("glusterfs.volume_deleted", volume=volume)
        brick_root = ann.get(ANN_BRICK_ROOT, "")
        # Only the directory this provisioner named after the volume: <brickRoot>/<volume>.
        if brick_root and os.path.isabs(brick_root) and "/" not in volume and volume not in ("", ".", ".."):
            shutil.rmtree(os.path.join(brick_root, volume), ignore_errors=True)

    # ---- Heketi mode --------------------------------------------------------------------------

    def _heketi_auth(self, p: dict[str, str], namespace_default: str = "default") -> tuple[str, str]:
        """(user, key) for Heketi's JWT; ("", "") when auth is off. The key comes from the Secret
        (``secretNamespace``/``secretName``, key ``key``) or ``restuserkey``, as Kubernetes."""
        if not _truthy(p.get("restauthenabled", "false" if not p.get("restuser") else "true")):
            return "", ""
        user = p.get("restuser", "")
        if not user:
            raise PermanentError("parameter restuser is required when restauthenabled is true")
        if p.get("secretName"):
            reader = current_secrets() or self._fallback_secrets
            data = reader(p.get("secretNamespace") or namespace_default, p["secretName"]) if reader else None
            if data is None:
                raise TemporaryError(f"Secret {p.get('secretNamespace') or namespace_default}/{p['secretName']}"
                                     " for the Heketi key not found", delay=10.0)
            key = data.get("key") or ""
            if not key:
                raise PermanentError(f"Secret {p['secretName']} has no data key 'key'")
            return user, key
        key = p.get("restuserkey", "")
        if not key:
            raise PermanentError("parameter secretName (or restuserkey) is required when restauthenabled is true")
        return user, key

    def _provision_heketi(self, req: ProvisionRequest, p: dict[str, str], volume: str, size_gib: int, kind: str,
                          numbers: list[int], gid: int) -> tuple[list[str], dict[str, str], str]:
        """(servers, PV annotations, the volume's name in Gluster)."""
        if p.get("glusterSocket") or p.get("brickRoot") or p.get("brickHosts"):
            raise PermanentError("parameters glusterSocket, brickHosts, brickRoot apply only without resturl")
        client = HeketiClient(p["resturl"], *self._heketi_auth(p))
        found = client.find_volume(volume)
        if found is None:
            durability: dict[str, Any] = {"type": kind}
            if kind == "replicate":
                durability["replicate"] = {"replica": numbers[0]}
            elif kind == "disperse":
                durability["disperse"] = {"data": numbers[0], "redundancy": numbers[1]}
            body: dict[str, Any] = {"size": size_gib, "name": volume, "durability": durability, "gid": gid}
            if p.get("clusterid"):
                body["clusters"] = [c.strip() for c in p["clusterid"].split(",") if c.strip()]
            if p.get("snapfactor"):
                try:
                    factor = float(p["snapfactor"])
                except ValueError:
                    raise PermanentError("parameter snapfactor must be a number between 1 and 100") from None
                if not 1 <= factor <= 100:
                    raise PermanentError("parameter snapfactor must be a number between 1 and 100")
                body["snapshot"] = {"enable": True, "factor": factor}
            options = _volume_options(p.get("volumeoptions", ""))
            if options:
                body["glustervolumeoptions"] = [f"{k} {v}" for k, v in options]
            found = client.create_volume(body)
        hosts = client.cluster_storage_ips(found.get("cluster", ""))
        if not hosts:
            raise TemporaryError(f"Heketi at {client.url}: cluster {found.get('cluster')} has no nodes", delay=10.0)
        annotations = {ANN_MODE: "heketi", ANN_RESTURL: client.url, ANN_HEKETI_ID: str(found.get("id") or "")}
        if client.user:
            annotations[ANN_RESTUSER] = client.user
        if p.get("secretName"):
            annotations[ANN_SECRET] = f"{p.get('secretNamespace') or 'default'}/{p['secretName']}"
        return hosts, annotations, str(found.get("name") or volume)

    def _delete_heketi(self, pv: dict[str, Any]) -> None:
        ann = (pv.get("metadata") or {}).get("annotations") or {}
        volume_id = ann.get(ANN_HEKETI_ID, "")
        if not volume_id:
            return
        params: dict[str, str] = {"resturl": ann.get(ANN_RESTURL, "")}
        if ann.get(ANN_RESTUSER):
            params.update(restauthenabled="true", restuser=ann[ANN_RESTUSER])
            namespace, _, name = ann.get(ANN_SECRET, "").partition("/")
            if not name:
                raise PermanentError("the PV names no Secret with the Heketi key (a class with restuserkey):"
                                     " delete the Heketi volume by hand")
            params.update(secretNamespace=namespace, secretName=name)
        HeketiClient(params["resturl"], *self._heketi_auth(params)).delete_volume(volume_id)

    # ---- delete -------------------------------------------------------------------------------

    def delete(self, pv: dict[str, Any]) -> None:
        if not self.owns(pv):
            return
        ann = (pv.get("metadata") or {}).get("annotations") or {}
        volume = str(((pv.get("spec") or {}).get("glusterfs") or {}).get("path") or "")
        if ann.get(ANN_MODE) == "heketi":
            self._delete_heketi(pv)
        elif volume:
            self._delete_cli(pv, volume)


def _where(socket_path: str) -> str:
    return f"unix:{socket_path or DEFAULT_SOCKET}"


def _volume_options(value: str) -> list[tuple[str, str]]:
    """``volumeoptions``: comma-separated ``key value`` pairs, as Kubernetes."""
    pairs = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, val = item.partition(" ")
        if not val.strip():
            raise PermanentError(f"parameter volumeoptions: {item!r} is not 'key value'")
        pairs.append((key.strip(), val.strip()))
    return pairs


def _ipv4_addresses(hosts: list[str]) -> list[str]:
    """Endpoints need IP addresses: brick hosts resolved (``127.1`` -> ``127.0.0.1``), once each."""
    found: list[str] = []
    for host in hosts:
        try:
            address = socket.gethostbyname(host)
        except OSError as exc:
            raise TemporaryError(f"brick host {host!r} does not resolve: {exc}", delay=10.0) from None
        if address not in found:
            found.append(address)
    return found


class HeketiClient:
    """The few calls of Heketi's REST API the provisioner needs."""

    def __init__(self, url: str, user: str = "", key: str = "") -> None:
        self.url = url.rstrip("/")
        self.user = user
        self._key = key

    def _token(self, method: str, path: str) -> str:
        import jwt  # PyJWT

        now = int(time.time())
        # Heketi checks iss (the user), iat, exp and qsh, the SHA-256 of "METHOD&PATH".
        qsh = hashlib.sha256(f"{method}&{path}".encode()).hexdigest()
        return jwt.encode({"iss": self.user, "iat": now, "exp": now + 600, "qsh": qsh}, self._key, algorithm="HS256")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.user:
            req.add_header("Authorization", "bearer " + self._token(method, urllib.parse.urlsplit(path).path))

        class _NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None  # 303 See Other from an async poll is handled below

        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=HEKETI_TIMEOUT) as resp:
                status, headers, raw = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            status, headers, raw = exc.code, dict(exc.headers or {}), exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TemporaryError(f"Heketi at {self.url} is unreachable: {reason}", delay=10.0) from None
        text = raw.decode(errors="replace")
        try:
            parsed: Any = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = text
        return status, headers, parsed

    def _check(self, status: int, parsed: Any, what: str) -> None:
        if status in (401, 403):
            raise PermanentError(f"Heketi at {self.url} refused {what}: {str(parsed).strip()[:200]} (check restuser and key)")
        if status >= 500 or status == 429:
            raise TemporaryError(f"Heketi at {self.url}: {what} failed ({status}): {str(parsed).strip()[:200]}", delay=10.0)
        if status >= 400:
            raise PermanentError(f"Heketi at {self.url}: {what} failed ({status}): {str(parsed).strip()[:200]}")

    def _wait(self, location: str, what: str) -> tuple[int, dict[str, str], Any]:
        """Follow Heketi's async flow: GET the queue location until it answers 303 (done, with the
        result's Location) or 204 (done, nothing to fetch)."""
        deadline = time.monotonic() + HEKETI_POLL_DEADLINE
        delay = 0.05
        while True:
            status, headers, parsed = self.request("GET", location)
            if status == 303:
                return status, headers, parsed
            if status == 204:
                return status, headers, parsed
            if status != 200:
                self._check(status, parsed, what)
                raise TemporaryError(f"Heketi at {self.url}: {what}: unexpected status {status}", delay=5.0)
            if time.monotonic() + delay > deadline:
                raise TemporaryError(f"Heketi at {self.url}: {what} still pending after {HEKETI_POLL_DEADLINE:g}s",
                                     delay=10.0)
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    def find_volume(self, name: str) -> dict[str, Any] | None:
        status, _, parsed = self.request("GET", "/volumes")
        self._check(status, parsed, "listing volumes")
        for volume_id in (parsed or {}).get("volumes") or []:
            status, _, info = self.request("GET", f"/volumes/{volume_id}")
            if status == 404:
                continue
            self._check(status, info, f"reading volume {volume_id}")
            if (info or {}).get("name") == name:
                return info
        return None

    def create_volume(self, body: dict[str, Any]) -> dict[str, Any]:
        status, headers, parsed = self.request("POST", "/volumes", body)
        self._check(status, parsed, f"creating volume {body.get('name')}")
        if status != 202 or not _header(headers, "Location"):
            raise TemporaryError(f"Heketi at {self.url}: creating volume answered {status} without a Location",
                                 delay=5.0)
        status, headers, parsed = self._wait(_header(headers, "Location"), f"creating volume {body.get('name')}")
        if status == 303 and _header(headers, "Location"):
            status, _, parsed = self.request("GET", _header(headers, "Location"))
            self._check(status, parsed, "reading the new volume")
        if not isinstance(parsed, dict) or not parsed.get("id"):
            raise TemporaryError(f"Heketi at {self.url}: no volume in the answer to the create", delay=5.0)
        return parsed

    def delete_volume(self, volume_id: str) -> None:
        status, headers, parsed = self.request("DELETE", f"/volumes/{volume_id}")
        if status == 404:
            return  # already gone
        self._check(status, parsed, f"deleting volume {volume_id}")
        if status == 202 and _header(headers, "Location"):
            self._wait(_header(headers, "Location"), f"deleting volume {volume_id}")

    def cluster_storage_ips(self, cluster_id: str) -> list[str]:
        """The storage addresses of the cluster's nodes (what Kubernetes' Endpoints list)."""
        status, _, cluster = self.request("GET", f"/clusters/{cluster_id}")
        self._check(status, cluster, f"reading cluster {cluster_id}")
        ips: list[str] = []
        for node_id in (cluster or {}).get("nodes") or []:
            status, _, node = self.request("GET", f"/nodes/{node_id}")
            self._check(status, node, f"reading node {node_id}")
            for ip in ((node or {}).get("hostnames") or {}).get("storage") or []:
                if ip not in ips:
                    ips.append(str(ip))
        return ips


def _header(headers: dict[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""
