"""The node side of iSCSI volumes (the ``iscsi`` source), as Kubernetes' in-tree iSCSI plugin.

Not attachable: the node logs in itself in ``connect`` (IS1). For each portal (``targetPortal`` and
``portals``) it runs a sendtargets discovery (with discovery CHAP when ``chapAuthDiscovery``), sets session
CHAP on the node record (``chapAuthSession``), logs in, and waits for
``/dev/disk/by-path/ip-<portal>-iscsi-<iqn>-lun-<lun>`` (IS2-IS3). Several paths: the multipath device
holding them, else the first path (IS4). ``disconnect`` finds the sessions behind the device in sysfs, so it
works from the device alone after an agent restart, and logs out only when no other LUN of the target is
in use on the node (IS5).

iscsiadm takes CHAP secrets only as ``-v`` values (Kubernetes passes them the same way): they are handed to
the Executor as secrets, so logs and errors show ``***``.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.errors import PermanentError, TemporaryError
from storage.system import mounts
from storage.system.devices import DeviceResolver
from storage.system.executor import CommandError, Executor
from volume_plugins.base import Device, DevicePlugin, VolumeContext

log = structlog.get_logger(__name__)

DEFAULT_PORT = 3260
PATH_WAIT_SECONDS = 10.0
DISCOVERY_KEYS = ("discovery.sendtargets.auth.username", "discovery.sendtargets.auth.password",
                  "discovery.sendtargets.auth.username_in", "discovery.sendtargets.auth.password_in")
SESSION_KEYS = ("node.session.auth.username", "node.session.auth.password",
                "node.session.auth.username_in", "node.session.auth.password_in")
NO_INITIATOR = "this node has no iSCSI initiator"


def normalize_portal(portal: str) -> str:
    """``host`` -> ``host:3260`` (Kubernetes' portalMounter); IPv6 stays bracketed."""
    portal = portal.strip()
    if portal.startswith("[") and portal.endswith("]") or ":" not in portal:
        return f"{portal}:{DEFAULT_PORT}"
    return portal


@dataclass(frozen=True)
class IscsiTarget:
    """What one volume logs in to, read from its source."""

    portals: tuple[str, ...]
    iqn: str
    lun: int
    iface: str  # the iface used for every command ("default", the user's, or a per-volume one)
    base_iface: str  # the user's iscsiInterface (what a per-volume iface is copied from)
    initiator_name: str
    chap_discovery: bool
    chap_session: bool

    @property
    def own_iface(self) -> bool:
        return self.iface != self.base_iface


def parse_source(spec: dict[str, Any], volume_name: str) -> IscsiTarget:
    """The source's fields checked, each error naming its field (IS1)."""
    portal = str(spec.get("targetPortal") or "")
    if not portal:
        raise PermanentError("iscsi.targetPortal is required")
    iqn = str(spec.get("iqn") or "")
    if not re.match(r"^(iqn\.\d{4}-\d{2}\.[^ ]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$", iqn):
        raise PermanentError(f"iscsi.iqn {iqn!r} is not an iqn., eui. or naa. name")
    lun = spec.get("lun")
    if not isinstance(lun, int) or isinstance(lun, bool) or not 0 <= lun <= 255:
        raise PermanentError(f"iscsi.lun {lun!r} must be an integer 0..255")
    extra = spec.get("portals") or []
    if not isinstance(extra, list):
        raise PermanentError("iscsi.portals must be a list of host[:port]")
    portals: list[str] = []
    for p in [portal, *extra]:
        n = normalize_portal(str(p))
        if n not in portals:
            portals.append(n)
    base = str(spec.get("iscsiInterface") or "default")
    initiator = str(spec.get("initiatorName") or "")
    # Kubernetes: an initiatorName gets its own iface "<targetPortal>:<volume>", copied from iscsiInterface.
    iface = f"{portals[0]}:{volume_name}" if initiator else base
    return IscsiTarget(tuple(portals), iqn, lun, iface, base, initiator,
                       bool(spec.get("chapAuthDiscovery")), bool(spec.get("chapAuthSession")))


def by_path_name(portal: str, iqn: str, lun: int) -> str:
    return f"ip-{portal}-iscsi-{iqn}-lun-{lun}"


# ---- iscsiadm command lines: built here only (IS2) -------------------------------------------------
def iface_commands(t: IscsiTarget, base_settings: dict[str, str]) -> list[list[str]]:
    cmds = [["iscsiadm", "-m", "iface", "-I", t.iface, "-o", "new"]]
    for key, value in sorted(base_settings.items()):
        if key not in ("iface.iscsi_ifacename", "iface.initiatorname") and value and value != "<empty>":
            cmds.append(["iscsiadm", "-m", "iface", "-I", t.iface, "-o", "update", "-n", key, "-v", value])
    cmds.append(["iscsiadm", "-m", "iface", "-I", t.iface, "-o", "update", "-n", "iface.initiatorname",
                 "-v", t.initiator_name])
    return cmds


def _auth_updates(prefix: list[str], namespace: str, keys: tuple[str, ...], secret: dict[str, str]) -> list[list[str]]:
    cmds = [[*prefix, "-o", "update", "-n", f"{namespace}.authmethod", "-v", "CHAP"]]
    for key in keys:
        if secret.get(key):
            cmds.append([*prefix, "-o", "update", "-n", key, "-v", secret[key]])
    return cmds


def discovery_commands(t: IscsiTarget, portal: str, secret: dict[str, str]) -> list[list[str]]:
    db = ["iscsiadm", "-m", "discoverydb", "-t", "sendtargets", "-p", portal, "-I", t.iface]
    cmds = [[*db, "-o", "new"]]
    if t.chap_discovery:
        cmds += _auth_updates(db, "discovery.sendtargets.auth", DISCOVERY_KEYS, secret)
    cmds.append([*db, "--discover"])
    return cmds


def login_commands(t: IscsiTarget, portal: str, secret: dict[str, str]) -> list[list[str]]:
    node = ["iscsiadm", "-m", "node", "-p", portal, "-T", t.iqn, "-I", t.iface]
    cmds: list[list[str]] = []
    if t.chap_session:
        cmds += _auth_updates(node, "node.session.auth", SESSION_KEYS, secret)
    cmds.append([*node, "--login"])
    # The kubelet logs in; nothing else should bring the session back at boot before it decides to.
    cmds.append([*node, "-o", "update", "-n", "node.startup", "-v", "manual"])
    return cmds


def logout_commands(portal: str, iqn: str, iface: str, own_iface: bool) -> list[list[str]]:
    node = ["iscsiadm", "-m", "node", "-p", portal, "-T", iqn, "-I", iface]
    cmds = [[*node, "--logout"], [*node, "-o", "delete"]]
    if own_iface:
        cmds.append(["iscsiadm", "-m", "iface", "-I", iface, "-o", "delete"])
    return cmds


def _secret_data(ctx: VolumeContext, t: IscsiTarget) -> dict[str, str]:
    if not (t.chap_discovery or t.chap_session):
        return {}
    raw = ctx.data.get(SECRET_DATA_KEY)
    ref = (ctx.source.get("iscsi") or {}).get("secretRef") or {}
    if not ref.get("name"):
        raise PermanentError("iscsi.secretRef is required with chapAuthDiscovery or chapAuthSession")
    if raw is None:
        raise TemporaryError(f"iscsi.secretRef: Secret {ref.get('name')} not found", delay=5.0)
    data = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in raw.items()}
    for flag, keys in ((t.chap_discovery, DISCOVERY_KEYS[:2]), (t.chap_session, SESSION_KEYS[:2])):
        missing = [k for k in keys if flag and not data.get(k)]
        if missing:
            raise PermanentError(f"iscsi.secretRef: Secret {ref.get('name')} has no {', '.join(missing)}")
    return data


class IscsiPlugin(DevicePlugin):
    name = "kubernetes.io/iscsi"
    source_key = "iscsi"

    def __init__(self, resolver: DeviceResolver | None = None, path_wait: float = PATH_WAIT_SECONDS) -> None:
        self.resolver = resolver or DeviceResolver()
        self.path_wait = path_wait

    @property
    def sys_root(self) -> Path:
        return Path(self.resolver.sys_block).parent

    # ---- the initiator ------------------------------------------------------------------------------
    def check_initiator(self, executor: Executor) -> None:
        """PermanentError when this node cannot log in at all (IS11): no iscsiadm, or no iscsi_tcp in the kernel."""
        missing = []
        try:
            executor.run(["iscsiadm", "--version"], timeout=10)
        except CommandError as exc:
            if exc.returncode == 127:
                missing.append("iscsiadm not found: install open-iscsi")
        if not ((self.sys_root / "module" / "iscsi_tcp").exists()
                or (self.sys_root / "class" / "iscsi_transport" / "tcp").exists()):
            missing.append("kernel module iscsi_tcp is not loaded")
        if missing:
            raise PermanentError(f"{NO_INITIATOR} ({'; '.join(missing)})")

    # ---- connect ------------------------------------------------------------------------------------
    def find_device(self, ctx: VolumeContext) -> Device | None:
        t = parse_source(self.spec(ctx.source), ctx.pv_name or ctx.volume_name)
        paths = [p for p in (self.resolver.link(f"by-path/{by_path_name(portal, t.iqn, t.lun)}")
                             for portal in t.portals) if p]
        if not paths:
            return None
        return Device(self._pick(paths, t), self.fs_type(ctx), self.mount_options(ctx), attached_by_plugin=True)

    def connect(self, ctx: VolumeContext) -> Device:
        t = parse_source(self.spec(ctx.source), ctx.pv_name or ctx.volume_name)
        self.check_initiator(ctx.executor)
        secret = _secret_data(ctx, t)
        secrets = tuple(v for k, v in secret.items() if "password" in k and v)
        ex = ctx.executor
        if t.own_iface:
            base = self._iface_settings(ex, t.base_iface)
            for cmd in iface_commands(t, base):
                ex.run(cmd, check=cmd[-1] != "new")  # an iface left from an earlier try is reused
        errors: list[str] = []
        logged_in: list[str] = []
        for portal in t.portals:
            try:
                for cmd in discovery_commands(t, portal, secret):
                    ex.run(cmd, secrets=secrets)
            except CommandError as exc:
                errors.append(f"discovery at {portal}: {exc}")
                ex.run(["iscsiadm", "-m", "discoverydb", "-t", "sendtargets", "-p", portal, "-I", t.iface,
                        "-o", "delete"], check=False)
                continue
            try:
                for cmd in login_commands(t, portal, secret):
                    ex.run(cmd, secrets=secrets)
            except CommandError as exc:
                if exc.returncode != 15:  # 15: already logged in (ISCSI_ERR_SESS_EXISTS)
                    errors.append(f"login to {t.iqn} at {portal}: {exc}")
                    ex.run(["iscsiadm", "-m", "node", "-p", portal, "-T", t.iqn, "-I", t.iface, "-o", "delete"],
                           check=False)
                    continue
            logged_in.append(portal)
        paths = self._wait_for_paths(t, logged_in)
        if not paths:
            reason = "; ".join(errors) or f"no device appeared for LUN {t.lun} within {self.path_wait:g}s"
            raise TemporaryError(f"iSCSI login to {t.iqn} failed: {reason}", delay=5.0)
        device = self._pick(paths, t)
        log.info("iscsi.connected", iqn=t.iqn, lun=t.lun, portals=logged_in, device=device)
        return Device(device, self.fs_type(ctx), self.mount_options(ctx), attached_by_plugin=True)

    def _iface_settings(self, ex: Executor, iface: str) -> dict[str, str]:
        out = ex.run(["iscsiadm", "-m", "iface", "-I", iface, "-o", "show"]).stdout
        settings = {}
        for line in out.splitlines():
            key, sep, value = line.partition(" = ")
            if sep and key.strip().startswith("iface."):
                settings[key.strip()] = value.strip()
        return settings

    def _wait_for_paths(self, t: IscsiTarget, portals: list[str]) -> list[str]:
        """Every logged-in portal's by-path link, waited for with back-off (udev makes them shortly after login)."""
        deadline = time.monotonic() + self.path_wait
        delay = 0.05
        while True:
            found = [p for p in (self.resolver.link(f"by-path/{by_path_name(portal, t.iqn, t.lun)}")
                                 for portal in portals) if p]
            if len(found) == len(portals) or time.monotonic() + delay > deadline:
                return found
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    def _pick(self, paths: list[str], t: IscsiTarget) -> str:
        """One path: itself. Several: the device-mapper device holding them all (multipathd made it), else the first."""
        if len(paths) == 1:
            return paths[0]
        names = {os.path.basename(p) for p in paths}
        sys_block = Path(self.resolver.sys_block)
        for dm in sorted(sys_block.glob("dm-*")):
            slaves = {s.name for s in (dm / "slaves").iterdir()} if (dm / "slaves").is_dir() else set()
            if names & slaves:
                return str(Path(paths[0]).parent / dm.name)
        log.warning("iscsi.no_multipath", iqn=t.iqn, lun=t.lun, paths=paths, using=paths[0])
        return paths[0]

    def fs_type(self, ctx: VolumeContext) -> str | None:
        return self.spec(ctx.source).get("fsType") or "ext4"

    # ---- disconnect ---------------------------------------------------------------------------------
    def sessions_of(self, device: str) -> list[tuple[str, str, str, str]]:
        """(session, portal, iqn, iface) of each path behind ``device`` (a dm device: its slaves), from sysfs."""
        name = os.path.basename(os.path.realpath(device)) if os.path.exists(device) else os.path.basename(device)
        sys_block = Path(self.resolver.sys_block)
        slaves_dir = sys_block / name / "slaves"
        names = sorted(s.name for s in slaves_dir.iterdir()) if slaves_dir.is_dir() else [name]
        found = []
        for n in names:
            session = self._session_of(n)
            if session is None:
                continue
            info = self._session_info(session)
            if info and info not in found:
                found.append(info)
        return found

    def _session_of(self, block_name: str) -> str | None:
        real = os.path.realpath(Path(self.resolver.sys_block) / block_name / "device")
        m = re.search(r"/(session\d+)/", real)
        return m.group(1) if m else None

    def _session_info(self, session: str) -> tuple[str, str, str, str] | None:
        cls = self.sys_root / "class"
        try:
            iqn = (cls / "iscsi_session" / session / "targetname").read_text().strip()
            iface = (cls / "iscsi_session" / session / "ifacename").read_text().strip() or "default"
            conn = next(iter(sorted((cls / "iscsi_connection").glob(f"connection{session[7:]}:*"))))
            address = (conn / "persistent_address").read_text().strip()
            port = (conn / "persistent_port").read_text().strip()
        except (OSError, StopIteration):
            return None
        host = f"[{address}]" if ":" in address else address
        return session, f"{host}:{port}", iqn, iface

    def _session_devices(self, session: str) -> set[str]:
        """Block device names of every LUN of a session (its other volumes)."""
        base = self.sys_root / "class" / "iscsi_session" / session / "device"
        return {p.name for p in base.glob("target*/*:*:*:*/block/*")}

    def _in_use(self, names: set[str]) -> bool:
        """Any of these disks mounted, or held by a mounted multipath device."""
        sys_block = Path(self.resolver.sys_block)
        table = mounts.MountTable.read()
        mounted = {os.path.basename(e.source) for e in table.entries if e.source.startswith("/dev/")}
        for n in names:
            holders = {h.name for h in (sys_block / n / "holders").iterdir()} if (sys_block / n / "holders").is_dir() else set()
            if n in mounted or holders & mounted:
                return True
        return False

    def disconnect(self, device: str, executor: Executor) -> None:
        sessions = self.sessions_of(device)
        if not sessions:
            log.info("iscsi.no_session", device=device)  # logged out already (or never an iSCSI disk)
            return
        mine = {os.path.basename(os.path.realpath(device)) if os.path.exists(device) else os.path.basename(device)}
        sys_block = Path(self.resolver.sys_block)
        slaves = sys_block / next(iter(mine)) / "slaves"
        if slaves.is_dir():
            mine |= {s.name for s in slaves.iterdir()}
            # Flush the multipath map first: a map over logged-out paths queues I/O forever.
            executor.run(["multipath", "-f", device], check=False)
        for session, portal, iqn, iface in sessions:
            others = self._session_devices(session) - mine
            if others and self._in_use(others):
                log.info("iscsi.logout_skipped", iqn=iqn, portal=portal, reason="another LUN of the target is in use")
                continue
            # A per-volume iface (initiatorName) is named "<portal>:<volume>" and goes with its volume.
            own_iface = re.match(r"^.+:\d+:.+$", iface) is not None
            for cmd in logout_commands(portal, iqn, iface, own_iface):
                try:
                    executor.run(cmd)
                except CommandError as exc:
                    if exc.returncode not in (21, 3):  # no session / no record: gone already
                        raise TemporaryError(f"iSCSI logout from {iqn} at {portal} failed: {exc}", delay=5.0) from exc
            log.info("iscsi.logged_out", iqn=iqn, portal=portal, session=session)
