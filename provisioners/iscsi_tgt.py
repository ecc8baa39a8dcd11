"""iSCSI LUNs on a Linux target (tgt), made through ``tgtadm`` (the ``iscsi`` source).

There is no standard Kubernetes provisioner for iSCSI; this one is ``stowage.io/iscsi-tgt``. It runs
``tgtadm`` where the control plane runs, so the tgtd it manages must be reachable there through its
control socket (the target host is the control-plane host, or the socket is shared with it). Class
parameters (IS6):

* ``targetPortal`` (required): ``host:port`` nodes log in to; ``portals``: more of them, comma-separated
  (several paths to the same target: the node uses multipath).
* ``backingDir`` (required): where LUN files go, ``<backingDir>/<pv name>.img``, sparse, of the claim's size.
* ``tgtSocket``: tgtd's ``TGT_IPC_SOCKET`` (default: tgt's own); ``controlPort``: its ``-C`` (default 0).
* ``iqnPrefix``: the target is ``<iqnPrefix>:<pv name>`` (default ``iqn.2024-01.io.stowage``).
* ``initiatorAddress``: who may log in (tgt's ACL: an address, a subnet, or ``ALL``, the default).
* ``chapSecretName``/``chapSecretNamespace``: session CHAP. The Secret's ``node.session.auth.username``/
  ``password`` become a tgt account bound to the target (``..._in``: mutual CHAP, an outgoing account);
  the PV gets ``chapAuthSession: true`` and a ``secretRef`` to the same Secret.
* ``fsType``: written into the PV (default ext4).

One target per volume, LUN 1 (LUN 0 is tgt's controller). Its name is the idempotency key: provisioning
again finds it by name in ``tgtadm --mode target --op show`` and completes what a crash left out (P2).
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import structlog

from provisioners.base import ProvisionRequest, ProvisionResult, Provisioner, SecretReader, current_secrets
from storage.errors import PermanentError, TemporaryError
from storage.system.executor import CommandError, Executor, default_executor

log = structlog.get_logger(__name__)

MiB = 1024 * 1024
DEFAULT_IQN_PREFIX = "iqn.2024-01.io.stowage"
LUN = 1
ANN_SOCKET = "stowage.io/iscsi-tgt-socket"
ANN_CONTROL_PORT = "stowage.io/iscsi-tgt-control-port"
ANN_BACKING_FILE = "stowage.io/iscsi-tgt-backing-file"
ANN_CHAP_USER = "stowage.io/iscsi-tgt-chap-user"  # the account names (not secret) bound for this volume
CHAP_USER, CHAP_PASSWORD = "node.session.auth.username", "node.session.auth.password"
CHAP_USER_IN, CHAP_PASSWORD_IN = "node.session.auth.username_in", "node.session.auth.password_in"
_IQN = re.compile(r"^(iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:[a-z0-9.:_-]*)?|eui\.[0-9a-f]{16}|naa\.[0-9a-f]{16,32})$")
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


@dataclass
class TgtTarget:
    tid: int
    name: str
    luns: dict[int, str] = field(default_factory=dict)  # lun -> backing store path
    accounts: list[str] = field(default_factory=list)
    acl: list[str] = field(default_factory=list)
    nexus: int = 0  # connected initiators (I_T nexus entries)


def parse_target_show(text: str) -> list[TgtTarget]:
    """``tgtadm --mode target --op show``: targets with their LUNs, accounts, ACL and sessions."""
    targets: list[TgtTarget] = []
    section = ""
    lun: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"^Target (\d+): (\S+)$", raw)
        if m:
            targets.append(TgtTarget(int(m.group(1)), m.group(2)))
            section, lun = "", None
            continue
        if not targets:
            continue
        t = targets[-1]
        if line in ("System information:", "I_T nexus information:", "LUN information:",
                    "Account information:", "ACL information:"):
            section = line[:-1]
            continue
        if section == "I_T nexus information" and line.startswith("I_T nexus:"):
            t.nexus += 1
        elif section == "LUN information":
            m = re.match(r"^LUN: (\d+)$", line)
            if m:
                lun = int(m.group(1))
            elif lun is not None and line.startswith("Backing store path:"):
                t.luns[lun] = line.split(":", 1)[1].strip()
        elif section == "Account information" and line:
            t.accounts.append(line.split()[0])
        elif section == "ACL information" and line:
            t.acl.append(line)
    return targets


class Tgtadm:
    """``tgtadm`` against one tgtd (its socket and control port)."""

    def __init__(self, socket: str = "", control_port: int = 0, executor: Executor | None = None) -> None:
        self.socket = socket
        self.control_port = control_port
        self.executor = executor or default_executor()

    def argv(self, *args: str) -> list[str]:
        env = ["env", f"TGT_IPC_SOCKET={self.socket}"] if self.socket else []
        return [*env, "tgtadm", "-C", str(self.control_port), "--lld", "iscsi", *args]

    def run(self, *args: str, secrets: tuple[str, ...] = ()) -> str:
        try:
            return self.executor.run(self.argv(*args), secrets=secrets, timeout=60).stdout
        except CommandError as exc:
            # The message names tgtadm, not the env wrapper that carries the socket; argv is masked already.
            shown = CommandError(exc.argv[2:] if exc.argv[0] == "env" else exc.argv, exc.returncode, exc.stdout,
                                 exc.stderr)
            if "can't send the request to the tgt daemon" in exc.stderr or exc.returncode == 107:
                raise TemporaryError(f"tgtd is not reachable through {self.socket or 'its default socket'}"
                                     f".{self.control_port}: {shown}", delay=5.0) from shown
            raise shown from exc

    def targets(self) -> list[TgtTarget]:
        return parse_target_show(self.run("--mode", "target", "--op", "show"))

    def accounts(self) -> list[str]:
        out = self.run("--mode", "account", "--op", "show")
        return [line.strip() for line in out.splitlines()[1:] if line.strip()]


def _split_portals(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def _check_portal(param: str, portal: str) -> None:
    host, sep, port = portal.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PermanentError(f"parameter {param}={portal!r} is not host:port")


class IscsiTgtProvisioner(Provisioner):
    name = "stowage.io/iscsi-tgt"
    known_parameters = frozenset({"targetPortal", "portals", "backingDir", "tgtSocket", "controlPort", "iqnPrefix",
                                  "initiatorAddress", "chapSecretName", "chapSecretNamespace", "fsType"})

    def __init__(self, executor: Executor | None = None, secrets: SecretReader | None = None) -> None:
        self.executor = executor or default_executor()
        self._fallback_secrets = secrets

    # ---- parameters -------------------------------------------------------------------------------
    def _tgt(self, socket: str, control_port: str) -> Tgtadm:
        if not control_port.isdigit():
            raise PermanentError(f"parameter controlPort={control_port!r} is not a number")
        return Tgtadm(socket, int(control_port), self.executor)

    def _chap(self, req: ProvisionRequest, params: dict[str, str]) -> dict[str, str] | None:
        name = params.get("chapSecretName")
        if not name:
            if params.get("chapSecretNamespace"):
                raise PermanentError("parameter chapSecretNamespace is set without chapSecretName")
            return None
        namespace = params.get("chapSecretNamespace") or "default"
        reader = req.secrets or current_secrets() or self._fallback_secrets
        if reader is None:
            raise TemporaryError(f"cannot read Secret {namespace}/{name} (chapSecretName) here", delay=5.0)
        data = reader(namespace, name)
        if data is None:
            raise TemporaryError(f"Secret {namespace}/{name} (chapSecretName) not found", delay=5.0)
        if not data.get(CHAP_USER) or not data.get(CHAP_PASSWORD):
            raise PermanentError(f"Secret {namespace}/{name} (chapSecretName) needs keys {CHAP_USER} and {CHAP_PASSWORD}")
        if bool(data.get(CHAP_USER_IN)) != bool(data.get(CHAP_PASSWORD_IN)):
            raise PermanentError(f"Secret {namespace}/{name} (chapSecretName): {CHAP_USER_IN} and {CHAP_PASSWORD_IN}"
                                 " go together (mutual CHAP)")
        return {"namespace": namespace, "name": name, **data}

    # ---- provision --------------------------------------------------------------------------------
    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        self.check_parameters(req.parameters)
        params = {k: str(v) for k, v in req.parameters.items()}
        portal = params.get("targetPortal", "")
        if not portal:
            raise PermanentError("parameter targetPortal is required: the host:port nodes log in to")
        _check_portal("targetPortal", portal)
        extra = _split_portals(params.get("portals", ""))
        for p in extra:
            _check_portal("portals", p)
        backing_dir = params.get("backingDir", "")
        if not backing_dir or not os.path.isabs(backing_dir):
            raise PermanentError("parameter backingDir is required: an absolute directory on the target host for LUN files")
        prefix = params.get("iqnPrefix") or DEFAULT_IQN_PREFIX
        iqn = f"{prefix}:{req.volume_name}"
        if not _IQN.match(iqn):
            raise PermanentError(f"parameter iqnPrefix={prefix!r} does not make a valid IQN ({iqn!r}): "
                                 "iqn.YYYY-MM.reversed.domain, lower case")
        acl = params.get("initiatorAddress") or "ALL"
        fs_type = params.get("fsType") or "ext4"
        tgt = self._tgt(params.get("tgtSocket", ""), params.get("controlPort", "0"))
        chap = self._chap(req, params)
        size = max(MiB, -(-req.requested_bytes // MiB) * MiB)
        path = os.path.join(backing_dir, f"{req.volume_name}.img")

        with self._lock(tgt):
            target = self._ensure_target(tgt, iqn)
            if not os.path.exists(path):
                os.makedirs(backing_dir, exist_ok=True)
                with open(path, "xb") as f:  # sparse: nothing is written until the initiator does
                    f.truncate(size)
            size = max(size, os.path.getsize(path))
            if LUN not in target.luns:
                tgt.run("--mode", "logicalunit", "--op", "new", "--tid", str(target.tid), "--lun", str(LUN),
                        "--backing-store", path, "--bstype", "rdwr")
            elif target.luns[LUN] != path:
                raise PermanentError(f"target {iqn} exists with LUN {LUN} on {target.luns[LUN]}, not {path}")
            if acl not in target.acl:
                tgt.run("--mode", "target", "--op", "bind", "--tid", str(target.tid), "--initiator-address", acl)
            if chap:
                self._bind_chap(tgt, target, chap)
        log.info("iscsi_tgt.provisioned", volume=req.volume_name, iqn=iqn, tid=target.tid, bytes=size)
        source: dict[str, Any] = {"targetPortal": portal, "iqn": iqn, "lun": LUN, "fsType": fs_type, "readOnly": False}
        if extra:
            source["portals"] = extra
        annotations = {ANN_BACKING_FILE: path, ANN_CONTROL_PORT: str(tgt.control_port)}
        if tgt.socket:
            annotations[ANN_SOCKET] = tgt.socket
        if chap:
            source["chapAuthSession"] = True
            source["secretRef"] = {"name": chap["name"], "namespace": chap["namespace"]}
            annotations[ANN_CHAP_USER] = ",".join(u for u in (chap[CHAP_USER], chap.get(CHAP_USER_IN)) if u)
        return ProvisionResult.finished({"iscsi": source}, f"{size // MiB}Mi", annotations=annotations)

    def _lock(self, tgt: Tgtadm) -> threading.Lock:
        key = f"{tgt.socket}.{tgt.control_port}"
        with _locks_lock:
            return _locks.setdefault(key, threading.Lock())

    def _ensure_target(self, tgt: Tgtadm, iqn: str) -> TgtTarget:
        for _ in range(5):
            targets = tgt.targets()
            found = next((t for t in targets if t.name == iqn), None)
            if found:
                return found
            tid = max((t.tid for t in targets), default=0) + 1
            try:
                tgt.run("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", iqn)
                return TgtTarget(tid, iqn)
            except CommandError as exc:
                if "already exists" not in exc.stderr:  # another control plane took the tid: look again
                    raise
        raise TemporaryError(f"could not find a free target id for {iqn} on tgtd", delay=2.0)

    def _bind_chap(self, tgt: Tgtadm, target: TgtTarget, chap: dict[str, str]) -> None:
        existing = tgt.accounts()
        pairs = [(chap[CHAP_USER], chap[CHAP_PASSWORD], False)]
        if chap.get(CHAP_USER_IN):
            pairs.append((chap[CHAP_USER_IN], chap[CHAP_PASSWORD_IN], True))
        for user, password, outgoing in pairs:
            if user not in existing:
                tgt.run("--mode", "account", "--op", "new", "--user", user, "--password", password, secrets=(password,))
            if user not in target.accounts:
                try:
                    tgt.run("--mode", "account", "--op", "bind", "--tid", str(target.tid), "--user", user,
                            *(["--outgoing"] if outgoing else []))
                except CommandError as exc:
                    # tgt lists the outgoing account among the target's accounts only as "(outgoing)".
                    if not (outgoing and "exist" in exc.stderr):
                        raise

    # ---- delete -----------------------------------------------------------------------------------
    def _from_pv(self, pv: dict[str, Any]) -> tuple[Tgtadm, str, str]:
        annotations = (pv.get("metadata") or {}).get("annotations") or {}
        source = ((pv.get("spec") or {}).get("iscsi")) or {}
        tgt = self._tgt(annotations.get(ANN_SOCKET, ""), annotations.get(ANN_CONTROL_PORT, "0"))
        return tgt, str(source.get("iqn") or ""), annotations.get(ANN_BACKING_FILE, "")

    def delete(self, pv: dict[str, Any]) -> None:
        if not self.owns(pv):
            return
        tgt, iqn, path = self._from_pv(pv)
        if not iqn:
            raise PermanentError(f"PV {pv['metadata']['name']} has no spec.iscsi.iqn: cannot find its target")
        annotations = (pv.get("metadata") or {}).get("annotations") or {}
        users = [u for u in annotations.get(ANN_CHAP_USER, "").split(",") if u]
        with self._lock(tgt):
            targets = tgt.targets()
            found = next((t for t in targets if t.name == iqn), None)
            if found:
                # --force: an initiator still logged in must not keep a released volume alive (as deleting a
                # cloud disk detaches it); the PV is Released, so no pod should be using it.
                tgt.run("--mode", "target", "--op", "delete", "--force", "--tid", str(found.tid))
            still_used = {a for t in targets if t is not found for a in t.accounts}
            for user in users:
                if user not in still_used and user in tgt.accounts():
                    tgt.run("--mode", "account", "--op", "delete", "--user", user)
        if path and os.path.basename(path) == f"{pv['metadata']['name']}.img":
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        log.info("iscsi_tgt.deleted", volume=pv["metadata"]["name"], iqn=iqn)

    # ---- expand -----------------------------------------------------------------------------------
    def expand(self, pv: dict[str, Any], new_size: int) -> int:
        tgt, iqn, path = self._from_pv(pv)
        size = max(MiB, -(-new_size // MiB) * MiB)
        with self._lock(tgt):
            found = next((t for t in tgt.targets() if t.name == iqn), None)
            if found is None or LUN not in found.luns:
                raise PermanentError(f"target {iqn} (LUN {LUN}) of PV {pv['metadata']['name']} is gone from tgtd")
            current = os.path.getsize(found.luns[LUN])
            if current >= size:
                return current
            if found.nexus:
                # tgt reads a LUN's size when the LU is made; remaking it under a logged-in initiator would
                # fail its I/O, so wait until the node has logged out (the pod stopped).
                raise TemporaryError(f"target {iqn} has {found.nexus} initiator(s) logged in: tgt cannot grow a LUN in"
                                     " use; it grows once they log out", delay=30.0)
            with open(found.luns[LUN], "r+b") as f:
                f.truncate(size)
            tgt.run("--mode", "logicalunit", "--op", "delete", "--tid", str(found.tid), "--lun", str(LUN))
            tgt.run("--mode", "logicalunit", "--op", "new", "--tid", str(found.tid), "--lun", str(LUN),
                    "--backing-store", found.luns[LUN], "--bstype", "rdwr")
        log.info("iscsi_tgt.expanded", volume=pv["metadata"]["name"], iqn=iqn, bytes=size)
        return size
