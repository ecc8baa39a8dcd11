"""Provisioners by name: installed ones through the ``stowage.provisioners``
entry-point group (so a third party adds one without editing Stowage), plus
in-process registration (tests, embedded setups).

An entry point names a ``Provisioner`` subclass or a zero-argument factory;
its key is informational, the provisioner's ``name`` is what classes refer to.
"""
from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Any, Callable

import structlog

from provisioners.base import Provisioner

log = structlog.get_logger(__name__)

GROUP = "stowage.provisioners"

# Provisioners shipped with Stowage, loaded like entry points (so a checkout works without reinstalling).
# A backend whose SDK is not installed is skipped with a warning.
BUILTIN: tuple[str, ...] = (
    "provisioners.aws_ebs:AwsEbsProvisioner",
    "provisioners.gce_pd:GcePdProvisioner",
    "provisioners.azure_disk:AzureDiskProvisioner",
    "provisioners.azure_file:AzureFileProvisioner",
    "provisioners.iscsi_tgt:IscsiTgtProvisioner",
    "provisioners.nfs_subdir:NfsSubdirProvisioner",
    "provisioners.rbd:RbdProvisioner",
    "provisioners.glusterfs:GlusterfsProvisioner",
    "provisioners.flexvolume:FlexVolumeAttacher",
    "provisioners.cephfs:CephfsProvisioner",
    "provisioners.backup:BackupSnapshotter",
)

_lock = threading.Lock()
_registered: dict[str, Provisioner] = {}
_loaded: dict[str, Provisioner] | None = None
# Consulted by ``get`` for names nothing registered: provisioners made on demand for a whole family of
# names (every registered CSI driver), in order; each returns None for names it does not serve.
_resolvers: list[Callable[[str], Provisioner | None]] = []


def add_resolver(resolver: Callable[[str], Provisioner | None]) -> None:
    with _lock:
        if resolver not in _resolvers:
            _resolvers.append(resolver)


def register(provisioner: Provisioner) -> None:
    """Make ``provisioner`` available under its ``name`` and aliases in this process (overrides an entry point)."""
    with _lock:
        for name in provisioner.names():
            _registered[name] = provisioner


def unregister(name: str) -> None:
    with _lock:
        gone = _registered.pop(name, None)
        if gone is not None:
            for alias in gone.names():
                if _registered.get(alias) is gone:
                    del _registered[alias]


def _load_entry_points() -> dict[str, Provisioner]:
    from importlib.metadata import EntryPoint

    found: dict[str, Provisioner] = {}
    builtin = [EntryPoint(name=spec, value=spec, group=GROUP) for spec in BUILTIN]
    for ep in [*builtin, *entry_points(group=GROUP)]:
        try:
            factory: Callable[[], Any] = ep.load()
            provisioner = factory()
        except Exception as exc:  # one broken plugin must not hide the others
            log.warning("provisioner_load_failed", entry_point=ep.name, error=str(exc))
            continue
        if not isinstance(provisioner, Provisioner):
            log.warning("provisioner_not_a_provisioner", entry_point=ep.name)
            continue
        for name in provisioner.names():
            found[name] = provisioner
    return found


def get(name: str) -> Provisioner | None:
    global _loaded
    with _lock:
        if name in _registered:
            return _registered[name]
        if _loaded is None:
            _loaded = _load_entry_points()
        found = _loaded.get(name)
        resolvers = list(_resolvers) if found is None else []
    for resolver in resolvers:  # outside the lock: a resolver may ask a driver over the network
        found = resolver(name)
        if found is not None:
            break
    return found


def all_provisioners() -> list[Provisioner]:
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load_entry_points()
        merged = dict(_loaded)
        merged.update(_registered)
        unique: dict[int, Provisioner] = {id(p): p for p in merged.values()}
        return list(unique.values())


def find_recycler(pv: dict[str, Any]) -> Provisioner | None:
    for provisioner in all_provisioners():
        if provisioner.supports_recycle and provisioner.can_recycle(pv):
            return provisioner
    return None


def _csi_drivers(name: str) -> Provisioner | None:
    try:  # grpcio is the optional `csi` extra
        from provisioners import csi
    except ImportError:
        return None
    return csi.resolve(name)


add_resolver(_csi_drivers)  # CS4: a StorageClass naming a registered CSI driver is served by it
