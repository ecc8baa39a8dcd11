"""What the Ceph provisioners (RBD, CephFS) and their node plugins share: where a cluster is, who
talks to it, and the Python bindings.

* Monitors come from the StorageClass (in-tree ``monitors``) or from a cluster id looked up in
  ceph-csi's ConfigMap (``config.json``: ``[{"clusterID": ..., "monitors": [...], "cephFS":
  {"subvolumeGroup": ...}, "rbd": {"radosNamespace": ...}}]``).
* Credentials come from Secrets in either layout: in-tree (``key``, the user named by the class or
  the source) or ceph-csi (``userID``/``userKey``, ``adminID``/``adminKey``).
* The bindings are Debian's ``python3-rados``/``python3-rbd``/``python3-cephfs``, built for the
  system Python's ABI; a virtual environment or another build of the same Python version loads
  them from the system's directory (``import_binding``).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Mapping

from storage.errors import PermanentError

# ceph-csi's ConfigMap and its key (deploy/csi-config-map-sample.yaml).
CSI_CONFIG_MAP = "ceph-csi-config"
CSI_CONFIG_KEY = "config.json"
# Where Stowage looks for that ConfigMap unless told otherwise (``STOWAGE_CEPH_CSI_CONFIG=ns/name``).
DEFAULT_CSI_CONFIG_NAMESPACE = "kube-system"

SYSTEM_BINDING_DIRS = (Path("/usr/lib/python3/dist-packages"),)

# librados' first-time setup in ``rados.Rados(...)`` (its process-wide context, crypto) is not safe to run
# from two threads at once: it crashed the process when two controller workers provisioned together.
# Hold this while constructing a Rados handle (not while connecting, which may wait for monitors).
RADOS_INIT_LOCK = threading.RLock()


def csi_config_location() -> tuple[str, str]:
    """(namespace, name) of ceph-csi's cluster map."""
    configured = os.environ.get("STOWAGE_CEPH_CSI_CONFIG", "")
    if "/" in configured:
        namespace, _, name = configured.partition("/")
        return namespace, name
    return DEFAULT_CSI_CONFIG_NAMESPACE, CSI_CONFIG_MAP


def import_binding(name: str, search: tuple[Path, ...] = SYSTEM_BINDING_DIRS) -> ModuleType:
    """``rados``, ``rbd`` or ``cephfs``: importable as is, or Debian's extension module for this
    Python's ABI loaded from the system's dist-packages (without putting that whole directory,
    with the system's other packages, on ``sys.path``)."""
    with RADOS_INIT_LOCK:  # another thread may be half-way through loading the same extension module
        return _import_binding(name, search)


def _import_binding(name: str, search: tuple[Path, ...]) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    if name == "rbd":
        _import_binding("rados", search)  # rbd's module imports rados at load time
    for directory in search:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                spec = importlib.util.spec_from_file_location(name, candidate)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except Exception:
                    del sys.modules[name]
                    raise
                return module
    raise PermanentError(
        f"the Ceph Python binding '{name}' is not installed (Debian: apt install python3-{name})"
    )


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str
    monitors: tuple[str, ...]
    subvolume_group: str = ""
    rados_namespace: str = ""


def parse_csi_config(text: str, source: str = CSI_CONFIG_MAP) -> dict[str, ClusterInfo]:
    """ceph-csi's ``config.json`` by cluster id; a malformed map is a PermanentError naming it."""
    try:
        entries = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        raise PermanentError(f"ConfigMap {source} key {CSI_CONFIG_KEY}: not JSON ({exc.msg})") from None
    if not isinstance(entries, list):
        raise PermanentError(f"ConfigMap {source} key {CSI_CONFIG_KEY}: must be a JSON list of clusters")
    clusters: dict[str, ClusterInfo] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("clusterID"), str) or not entry["clusterID"]:
            raise PermanentError(f"ConfigMap {source} key {CSI_CONFIG_KEY}[{index}].clusterID: Required value")
        monitors = entry.get("monitors")
        if not isinstance(monitors, list) or not monitors or not all(isinstance(m, str) and m for m in monitors):
            raise PermanentError(
                f"ConfigMap {source} key {CSI_CONFIG_KEY}[{index}].monitors: must be a non-empty list of addresses")
        cephfs = entry.get("cephFS") if isinstance(entry.get("cephFS"), dict) else {}
        rbd = entry.get("rbd") if isinstance(entry.get("rbd"), dict) else {}
        clusters[entry["clusterID"]] = ClusterInfo(
            cluster_id=entry["clusterID"], monitors=tuple(monitors),
            subvolume_group=str(cephfs.get("subvolumeGroup") or ""),
            rados_namespace=str(rbd.get("radosNamespace") or ""))
    return clusters


def split_monitors(value: str | list[str] | tuple[str, ...], field_name: str = "monitors") -> tuple[str, ...]:
    """The in-tree ``monitors`` parameter ("a:6789,b:6789") or a source's list."""
    items = value.split(",") if isinstance(value, str) else list(value)
    monitors = tuple(str(m).strip() for m in items if str(m).strip())
    if not monitors:
        raise PermanentError(f"{field_name}: Required value: at least one Ceph monitor address")
    return monitors


@dataclass(frozen=True)
class Credentials:
    user: str  # without the "client." prefix, as Ceph's --id
    key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.user:
            raise PermanentError("Ceph user: Required value")
        if not self.key:
            raise PermanentError(f"the Secret for Ceph user {self.user} has no key")


def credentials_from_secret(data: Mapping[str, str | bytes] | None, *, user: str = "", role: str = "user",
                            secret: str = "") -> Credentials:
    """A Ceph identity from a Secret in either layout. ``role`` is "user" or "admin" (ceph-csi's
    ``userID``/``userKey`` or ``adminID``/``adminKey``); an in-tree Secret has only ``key`` and the
    user comes from the class or source (``user``). Error messages name the Secret, never a value."""
    if data is None:
        raise PermanentError(f"Secret {secret or '(unnamed)'} not found")

    def text(value: str | bytes | None) -> str:
        if value is None:
            return ""
        return (value.decode() if isinstance(value, bytes) else str(value)).strip()

    key = text(data.get(f"{role}Key")) or text(data.get("key"))
    name = text(data.get(f"{role}ID")) or user
    if not key and role == "admin" and text(data.get("userKey")):
        # ceph-csi's RBD Secret has only userID/userKey, used for provisioning too (its CephFS one has adminID/adminKey).
        key, name = text(data.get("userKey")), text(data.get("userID")) or user
    if not key:
        raise PermanentError(f"Secret {secret or '(unnamed)'} has no {role}Key or key")
    if not name:
        raise PermanentError(f"Secret {secret or '(unnamed)'} has no {role}ID and no user was named")
    return Credentials(user=name.removeprefix("client."), key=key)


def new_rados(rados: ModuleType, user: str, conf: dict[str, str]) -> Any:
    """A ``rados.Rados`` handle made under RADOS_INIT_LOCK (not yet connected)."""
    with RADOS_INIT_LOCK:
        return rados.Rados(rados_id=user, conf=conf)


def rados_conf(monitors: tuple[str, ...], credentials: Credentials) -> dict[str, str]:
    """Configuration for ``rados.Rados(rados_id=..., conf=...)``: the key travels in memory, never on disk."""
    return {"mon_host": ",".join(monitors), "key": credentials.key, "client_mount_timeout": "10",
            "rados_mon_op_timeout": "10", "rados_osd_op_timeout": "30"}


@contextmanager
def client_files(monitors: tuple[str, ...], credentials: Credentials, parent: Path | None = None) -> Iterator[tuple[Path, Path]]:
    """(ceph.conf, keyring) for a command-line client (rbd-fuse, ceph-fuse, rbd map), in a private
    0700 directory that is removed when the block ends: the keyring is the only place a key is ever
    written in clear, and only while the command that needs it starts."""
    directory = Path(tempfile.mkdtemp(prefix="stowage-ceph-", dir=parent))
    try:
        keyring = directory / "keyring"
        conf = directory / "ceph.conf"
        fd = os.open(keyring, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"[client.{credentials.user}]\n\tkey = {credentials.key}\n")
        conf.write_text(
            "[global]\n"
            f"mon host = {','.join(monitors)}\n"
            f"keyring = {keyring}\n"
            "client mount timeout = 10\n"
            # Clients started by the agent must not write into the cluster's or the host's default dirs.
            "admin socket = \n"
            "log file = /dev/null\n"
        )
        yield conf, keyring
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def require(params: Mapping[str, Any], name: str, context: str) -> str:
    value = str(params.get(name) or "").strip()
    if not value:
        raise PermanentError(f"{context} parameter {name}: Required value")
    return value
