"""Desired vs actual volumes of the pods on this node (SEMANTICS A4-A7).

Layout under the data directory (Kubernetes' own)::

    pods/<uid>/volumes/<plugin-dir>/<volume>        filesystem volumes
    pods/<uid>/volumeDevices/<plugin-dir>/<volume>  raw block devices (a bind of the device node)
    plugins/<plugin>/mounts/<pv>                    one mount per device per node
    state/                                          mkfs intent markers

The state is these directories plus the mount table, never memory: after a
restart ``reconstruct`` reads them back and the next ``sync`` keeps what is
still wanted (remounting what is missing) and removes what is orphaned.
Every step is idempotent, so a crash at any point is healed by running
``sync`` again.

Two ways in: ``sync(desired)`` reconciles the whole node (at start-up and now
and then); ``setup_pod`` / ``teardown_pod`` touch one pod only, so their cost
does not grow with the number of pods on the node. Each operation reads the
mount table once and passes that snapshot around. Per-pod operations run
concurrently (a lock per pod and per global mount); ``sync`` runs alone.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import structlog

from storage.agent.volumes_paths import apply_fs_group, resolve_subpath
from storage.errors import BadRequest, StowageError, TemporaryError
from storage.system import loop, mounts
from storage.system.blockdev import resize_filesystem
from storage.system.executor import Executor, default_executor
from storage.system.faults import fault_point
from volume_plugins.base import Device, DevicePlugin, VolumeContext, VolumePlugin
from volume_plugins.mounter import Mounter
from volume_plugins.registry import PluginRegistry

log = structlog.get_logger(__name__)

__all__ = ["VolumeRequest", "PodVolumes", "SyncResult", "ActualVolume", "VolumeManager", "resolve_subpath"]

_SAFE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]{0,251}[A-Za-z0-9])?$")
VOLUMES = "volumes"
# How long a set-up waits for an attached disk's device to appear before the pod backs off (AD2).
DEVICE_WAIT_SECONDS = 10.0
DEVICES = "volumeDevices"


@dataclass(frozen=True)
class VolumeRequest:
    name: str
    plugin_source: dict[str, Any]  # the inline pod volume source, or the bound PV's spec for a claim
    read_only: bool = False
    fs_group: int | None = None
    pv_name: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    mode: Literal["Filesystem", "Block"] = "Filesystem"


@dataclass(frozen=True)
class PodVolumes:
    uid: str
    namespace: str
    name: str
    volumes: list[VolumeRequest] = field(default_factory=list)
    # A pod whose containers are being stopped: what it has stays as it is, nothing is set up
    # again (its claim and volume may be gone already; a hostPath would be created anew).
    keep: bool = False


@dataclass
class SyncResult:
    paths: dict[str, dict[str, str]] = field(default_factory=dict)  # uid -> volume -> host path
    errors: dict[str, dict[str, str]] = field(default_factory=dict)  # uid -> volume -> message
    teardown_errors: dict[str, str] = field(default_factory=dict)  # uid -> message


@dataclass(frozen=True)
class ActualVolume:
    pod_uid: str
    kind: str  # "volumes" | "volumeDevices"
    plugin_dir: str
    name: str
    path: Path
    mounted: bool


class _NodeLock:
    """Many per-pod operations at once, or one whole-node ``sync`` alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            # Claimed before the readers drain, so a steady stream of pods cannot starve a sync.
            self._exclusive = True
            while self._shared:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class _KeyedLocks:
    """One lock per key (pod uid, global volume), created on demand."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def drop(self, key: str) -> None:
        with self._guard:
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                del self._locks[key]


class _DeviceMountFailed(StowageError):
    """Formatting or mounting a device at its global path failed (the kubelet's MountDevice step)."""


def _error_text(exc: Exception) -> str:
    """A failure as the pod's or the log's message: our own errors say it all, others name their type."""
    return str(exc) if isinstance(exc, StowageError) else f"{type(exc).__name__}: {exc}"


def _check_name(value: str, field_name: str) -> str:
    if not _SAFE.match(value or ""):
        raise BadRequest(f'{field_name}: Invalid value: "{value}": must be a DNS-style name (letters, digits, "-", ".", "_")')
    return value


class VolumeManager:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        registry: PluginRegistry,
        *,
        executor: Executor | None = None,
        mounter: Mounter | None = None,
        attachment_of: Callable[[str], dict[str, str] | None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.pods_dir = self.data_dir / "pods"
        self.plugins_dir = self.data_dir / "plugins"
        self.registry = registry
        # PV name -> status.attachmentMetadata of its VolumeAttachment to this node once attached, else
        # None (AD2). Without it (a node run without a control plane's attachments), attachable plugins
        # look for their device from the volume source alone.
        self.attachment_of = attachment_of
        self.executor = executor or default_executor()
        self.mounter = mounter or Mounter(self.data_dir / "state", self.executor)
        for d in (self.pods_dir, self.plugins_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Only a cache for Node status between syncs; rebuilt from disk by reconstruct().
        self._devices: dict[str, str] = {}  # unique volume name -> device path
        self._devices_lock = threading.Lock()
        self._node_lock = _NodeLock()
        self._pod_locks = _KeyedLocks()
        self._global_locks = _KeyedLocks()
        # Global mounts whose unmount failed once their last pod left (guarded by _devices_lock).
        self._uncollected: set[str] = set()

    # ---- paths ---------------------------------------------------------

    def pod_dir(self, uid: str) -> Path:
        return self.pods_dir / _check_name(uid, "pod uid")

    def volume_path(self, uid: str, plugin: VolumePlugin, name: str, mode: str = "Filesystem") -> Path:
        kind = DEVICES if mode == "Block" else VOLUMES
        return self.pod_dir(uid) / kind / plugin.dir_name / _check_name(name, "volume name")

    def global_path(self, plugin: VolumePlugin, global_name: str) -> Path:
        return self.plugins_dir / plugin.name / "mounts" / _check_name(global_name, "volume")

    @staticmethod
    def unique_name(plugin: VolumePlugin, global_name: str) -> str:
        return f"{plugin.name}/{global_name}"

    # ---- actual state --------------------------------------------------

    def reconstruct(self) -> list[ActualVolume]:
        """Read back what exists: pod volume directories and the mount table."""
        found: list[ActualVolume] = []
        table = mounts.MountTable.read()
        mounted = {e.mount_point for e in table.under(self.pods_dir)}
        for pod in sorted(self.pods_dir.iterdir()) if self.pods_dir.exists() else []:
            for kind in (VOLUMES, DEVICES):
                for plugin_dir in sorted((pod / kind).glob("*")):
                    for vol in sorted(plugin_dir.iterdir()):
                        found.append(ActualVolume(pod.name, kind, plugin_dir.name, vol.name, vol,
                                                  os.path.realpath(vol) in mounted))
        devices = {}
        for entry in self._global_mounts(table):
            plugin_name, global_name = self._split_global(entry.mount_point)
            devices[f"{plugin_name}/{global_name}"] = entry.source
        with self._devices_lock:
            self._devices = devices
        log.info("volume_manager.reconstructed", volumes=len(found), global_mounts=len(self._devices))
        return found

    def _global_mounts(self, table: mounts.MountTable | None = None) -> list[mounts.MountEntry]:
        out = []
        for entry in (table or mounts.MountTable.read()).under(self.plugins_dir):
            rel = Path(entry.mount_point).relative_to(os.path.realpath(self.plugins_dir))
            if len(rel.parts) >= 3 and rel.parts[-2] == "mounts":
                out.append(entry)
        return out

    def global_mount_of(self, pv_name: str) -> tuple[str, str] | None:
        """(mount point, device) of a device volume's node-wide mount here, if it is mounted."""
        for entry in self._global_mounts():
            if self._split_global(entry.mount_point)[1] == pv_name:
                return entry.mount_point, entry.source
        return None

    def _split_global(self, mount_point: str) -> tuple[str, str]:
        rel = Path(mount_point).relative_to(os.path.realpath(self.plugins_dir))
        return "/".join(rel.parts[:-2]), rel.parts[-1]

    # ---- whole node ------------------------------------------------------

    def sync(self, desired: list[PodVolumes] | Callable[[], list[PodVolumes]]) -> SyncResult:
        """Converge the whole node on ``desired``: set up every wanted volume, tear down every
        pod not in it, unmount unused global mounts. ``desired`` may be a function, called
        once no per-pod operation is running, so a caller's view cannot race with them."""
        with self._node_lock.exclusive():
            return self._sync(desired() if callable(desired) else desired)

    def _sync(self, desired: list[PodVolumes]) -> SyncResult:
        result = SyncResult()
        wanted_globals: set[str] = set()
        devices: dict[str, str] = {}
        wanted_uids = set()
        # One snapshot for every check: mounts made during this pass are made by this pass,
        # which checks each path once; a stale "not mounted" only costs an idempotent re-check.
        table = mounts.MountTable.read()
        for pod in desired:
            try:
                self.pod_dir(pod.uid)
            except BadRequest as exc:
                result.teardown_errors[pod.uid] = str(exc)
                continue
            wanted_uids.add(pod.uid)
            paths, errors, used = self._setup_pod(pod, table)
            result.paths[pod.uid] = paths
            if errors:
                result.errors[pod.uid] = errors
            wanted_globals.update(used)
            devices.update({k: v for k, v in used.items() if v})
        for pod_dir in sorted(self.pods_dir.iterdir()):
            if pod_dir.name not in wanted_uids:
                try:
                    self._teardown_pod(pod_dir.name, table)
                except Exception as exc:
                    result.teardown_errors[pod_dir.name] = str(exc)
                    log.warning("pod.teardown_failed", uid=pod_dir.name, error=str(exc))
        self._collect_global_mounts(wanted_globals)
        with self._devices_lock:
            self._devices = devices
            # The pass collected every global mount no pod wants; one it could not unmount is still in the
            # table, where the next pass finds it again.
            self._uncollected.clear()
        return result

    # ---- one pod -----------------------------------------------------------

    def setup_pod(self, pod: PodVolumes) -> tuple[dict[str, str], dict[str, str]]:
        """Set up (or check) the volumes of one pod and remove its volumes no longer wanted.
        Returns (volume -> host path, volume -> error message); other pods are not looked at."""
        self.pod_dir(pod.uid)
        with self._node_lock.shared(), self._pod_locks(pod.uid):
            paths, errors, used = self._setup_pod(pod, mounts.MountTable.read())
        with self._devices_lock:
            self._devices.update({k: v for k, v in used.items() if v})
        return paths, errors

    def teardown_pod(self, uid: str) -> None:
        """Unmount and remove everything of one pod, then the global mounts it was the last user of."""
        self.pod_dir(uid)
        with self._node_lock.shared():
            with self._pod_locks(uid):
                released = self._teardown_pod(uid, mounts.MountTable.read())
            self._collect_released(released)
        self._pod_locks.drop(uid)

    def release_pod_volumes(self, uid: str) -> None:
        """Unmount and remove every volume of a pod that stays on the node without running (a
        finished pod, A1), keeping the rest of its directory (logs, runtime state); then the global
        mounts it was the last user of."""
        pod = self.pod_dir(uid)
        errors: dict[str, str] = {}
        with self._node_lock.shared():
            with self._pod_locks(uid):
                table = mounts.MountTable.read()
                released = self._globals_bound_by(pod, table)
                self._remove_stale_volumes(uid, set(), errors, table)
            try:
                self._collect_released(released)
            except StowageError as exc:
                errors["global mounts"] = str(exc)
        if errors:
            raise StowageError("; ".join(f"{k}: {v}" for k, v in sorted(errors.items())))

    def _globals_bound_by(self, pod: Path, table: mounts.MountTable) -> set[str]:
        """Unique names of the global mounts that the pod's paths are bound from."""
        numbers = {e.major_minor for e in table.under(pod)}
        released = set()
        for entry in self._global_mounts(table):
            if entry.major_minor in numbers:
                plugin_name, global_name = self._split_global(entry.mount_point)
                released.add(f"{plugin_name}/{global_name}")
        return released

    def _setup_pod(self, pod: PodVolumes, table: mounts.MountTable) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """(paths, errors, unique global volume -> device) of one pod."""
        if pod.keep:
            # Its global mounts stay while its paths bind them (_collect_global_mounts checks).
            return {}, {}, {}
        paths: dict[str, str] = {}
        errors: dict[str, str] = {}
        used: dict[str, str] = {}
        wanted_paths: set[Path] = set()
        for req in pod.volumes:
            try:
                path, target, unique, device = self._setup(pod, req, table)
                paths[req.name] = str(path)
                wanted_paths.add(target)
                if unique:
                    used[unique] = device or ""
            except Exception as exc:  # one bad volume must not block the pod's others
                message = _error_text(exc)
                if isinstance(exc, _DeviceMountFailed):
                    # The kubelet's wording for the node-wide mount of a device (its events show it).
                    message = f'MountVolume.MountDevice failed for volume "{req.pv_name or req.name}" : {message}'
                errors[req.name] = message
                log.warning("volume.setup_failed", pod=f"{pod.namespace}/{pod.name}", volume=req.name, error=message)
                # Keep whatever is already there for it; a failed update must not tear the volume down.
                for plugin in self.registry.plugins():
                    for mode in ("Filesystem", "Block"):
                        try:
                            wanted_paths.add(self.volume_path(pod.uid, plugin, req.name, mode))
                        except BadRequest:
                            pass
        self._remove_stale_volumes(pod.uid, wanted_paths, errors, table)
        return paths, errors, used

    def _setup(self, pod: PodVolumes, req: VolumeRequest, table: mounts.MountTable) -> tuple[Path, Path, str | None, str | None]:
        """Returns (host path for the runtime, pod path, unique device volume name, device)."""
        plugin = self.registry.find(req.plugin_source)
        ctx = VolumeContext(
            pod_uid=pod.uid, pod_namespace=pod.namespace, pod_name=pod.name, volume_name=req.name,
            source=req.plugin_source, target=self.volume_path(pod.uid, plugin, req.name, req.mode),
            read_only=req.read_only, fs_group=req.fs_group, pv_name=req.pv_name, data=req.data,
            mode=req.mode, executor=self.executor,
        )
        if isinstance(plugin, DevicePlugin) and plugin.device_mode(ctx):
            return self._setup_device(plugin, ctx, table)
        if req.mode == "Block":
            raise BadRequest(f"volume {req.name}: volumeMode Block is not supported by {plugin.name}")
        needs_attachment = getattr(plugin, "needs_attachment", None)  # CSI drivers that attach (CS7)
        if needs_attachment is not None and self.attachment_of is not None and needs_attachment(ctx):
            metadata = self.attachment_of(ctx.pv_name or "")
            if metadata is None:
                raise TemporaryError(f"waiting for volume {ctx.pv_name} to be attached to this node", delay=2.0)
            ctx.attachment = dict(metadata)
        fresh = not ctx.target.exists()
        path = plugin.setup(ctx)
        # A plugin that mounts below its directory (CSI) says itself whether fsGroup applies (fsGroupPolicy).
        applies = getattr(plugin, "applies_fs_group", None)
        if req.fs_group is not None and fresh and not req.read_only and (
                applies(ctx) if applies is not None else path == ctx.target):
            apply_fs_group(path, req.fs_group)
        return path, ctx.target, None, None

    def _setup_device(self, plugin: DevicePlugin, ctx: VolumeContext, table: mounts.MountTable) -> tuple[Path, Path, str, str]:
        device: Device | None
        if plugin.attachable:
            if self.attachment_of is not None and ctx.pv_name:
                metadata = self.attachment_of(ctx.pv_name)
                if metadata is None:  # AD2: nothing is looked for before the control plane says attached
                    raise TemporaryError(f"waiting for volume {ctx.pv_name} to be attached to this node", delay=2.0)
                ctx.attachment = dict(metadata)
                device = self._wait_for_device(plugin, ctx)
                if device is None:
                    raise TemporaryError(f"volume {ctx.pv_name} is attached to this node but its device has not "
                                         "appeared yet", delay=2.0)
            else:
                device = plugin.find_device(ctx)
            if device is None:
                raise TemporaryError(f"waiting for volume {ctx.pv_name or ctx.volume_name} to be attached to this node", delay=2.0)
        else:
            device = plugin.connect(ctx)
        global_name = plugin.global_name(ctx)
        unique = self.unique_name(plugin, global_name)
        target = ctx.target
        if ctx.mode == "Block":
            target.parent.mkdir(parents=True, exist_ok=True)
            if table.top(target) is None:
                if not target.exists():
                    target.touch(mode=0o600)
                mounts.bind_mount(device.path, target, ctx.read_only, executor=self.executor)
                fault_point("after_bind")
            return target, target, unique, device.path
        global_path = self.global_path(plugin, global_name)
        # The global mount's lock spans mount and bind: a teardown collecting the global
        # mount must not unmount it between the two.
        with self._global_locks(unique):
            bound = table.is_mount_point(target)
            if bound and any(e.source == device.path for e in table.at(global_path)):
                return target, target, unique, device.path  # set up already: the common re-check
            try:
                if not plugin.mount_device(ctx, device, global_path):
                    self.mounter.format_and_mount(
                        device.path, global_path, device.fs_type, key=f"{plugin.dir_name}-{global_name}",
                        options=device.mount_options, read_only=ctx.read_only,
                    )
            except StowageError as exc:
                raise _DeviceMountFailed(str(exc)) from exc
            # The pod's own directory, which only this pod's sync mounts (one at a time): the table read for
            # this set-up still answers for it (PF69), and the answer above is that reading's (PF81).
            if not bound:
                target.mkdir(parents=True, exist_ok=True)
                if ctx.fs_group is not None and not ctx.read_only:
                    apply_fs_group(global_path, ctx.fs_group)
                if not plugin.mount_volume(ctx, global_path):
                    mounts.bind_mount(global_path, target, ctx.read_only, executor=self.executor)
                fault_point("after_bind")
        return target, target, unique, device.path

    def _wait_for_device(self, plugin: DevicePlugin, ctx: VolumeContext) -> Device | None:
        """The control plane says attached: the device node (or its udev link) follows within moments,
        as the kubelet's WaitForAttach polls for it. Back-off with a deadline, then the pod's own back-off."""
        deadline = time.monotonic() + DEVICE_WAIT_SECONDS
        delay = 0.05
        while True:
            device = plugin.find_device(ctx)
            if device is not None or time.monotonic() + delay > deadline:
                return device
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    # ---- teardown ------------------------------------------------------

    def _remove_volume_path(self, path: Path) -> None:
        plugin = self.registry.by_dir_name(path.parent.name)
        if plugin is not None:
            plugin.unmount_volume(path, self.executor)
        mounts.unmount_all_under(path, executor=self.executor)
        if mounts.mounts_under(path):
            raise StowageError(f"{path} is still mounted; not removing it")
        if path.is_dir() and not path.is_symlink():
            # Only the pod's own files remain (emptyDir, projected files): never a mount.
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def _remove_stale_volumes(self, uid: str, wanted: set[Path], errors: dict[str, str], table: mounts.MountTable) -> None:
        pod = self.pod_dir(uid)
        for kind in (VOLUMES, DEVICES):
            for plugin_dir in (pod / kind).glob("*"):
                plugin = self.registry.by_dir_name(plugin_dir.name)
                for vol in plugin_dir.iterdir():
                    if vol not in wanted:
                        try:
                            if plugin is not None:
                                plugin.unmount_volume(vol, self.executor)  # before any stat of vol (GF7)
                            self._remove_volume_path(vol)
                        except Exception as exc:
                            errors[vol.name] = f"cleanup failed: {exc}"

    def _teardown_pod(self, uid: str, table: mounts.MountTable) -> set[str]:
        """Unmount and remove everything of a pod that is no longer wanted on this node.
        Returns the unique names of the global mounts its volumes were bound from."""
        pod = self.pod_dir(uid)
        if not pod.exists():
            return set()
        log.info("pod.teardown", uid=uid)
        pod_mounts = table.under(pod)
        released = self._globals_bound_by(pod, table)
        first = True
        done: set[int] = set()
        for kind in (VOLUMES, DEVICES):
            for plugin_dir in sorted((pod / kind).glob("*")):
                plugin = self.registry.by_dir_name(plugin_dir.name)
                for vol in sorted(plugin_dir.iterdir()):
                    if plugin is not None and plugin.unmount_volume(vol, self.executor):
                        # Before any stat of vol: the plugin's mount is gone, look again (GF7).
                        point = mounts.real_without_stat(vol)
                        done.update(e.mount_id for e in table.entries if e.mount_point == point)
                        entries = mounts.mounts_under(vol)
                    else:
                        entries = table.under(vol)
                    done.update(e.mount_id for e in entries)
                    if not mounts.unmount_entries(entries, executor=self.executor):
                        mounts.unmount_all_under(vol, executor=self.executor)
                    if first:
                        fault_point("during_teardown")
                        first = False
                    if plugin is not None:
                        plugin.teardown(vol, self.executor)
        # Anything else mounted under the pod (e.g. by a runtime that crashed) goes too.
        left = [e for e in pod_mounts if e.mount_id not in done]
        if not mounts.unmount_entries(left, executor=self.executor):
            mounts.unmount_all_under(pod, executor=self.executor)
        # One fresh look before deleting anything: rmtree must never reach into a mount.
        if mounts.mounts_under(pod):
            mounts.unmount_all_under(pod, executor=self.executor)
            if mounts.mounts_under(pod):
                raise StowageError(f"{pod} is still mounted; not removing it")
        shutil.rmtree(pod)
        return released

    def collect_pending(self) -> None:
        """Try again the node-wide mounts whose unmount failed after their last pod left (the agent's
        heartbeat calls this): once the pod's directory is gone, nothing else would name them."""
        with self._devices_lock:
            if not self._uncollected:
                return
        with self._node_lock.shared():
            self._collect_released(set())

    def _collect_released(self, released: set[str]) -> None:
        """Unmount the global mounts that ``released`` (and every earlier failure) named and no pod path
        binds any more. A failure is kept for the next call and raised once all were tried."""
        with self._devices_lock:
            names = sorted(released | self._uncollected)
        failed: dict[str, str] = {}
        for unique in names:
            try:
                gone = self._collect_global(unique)
            except Exception as exc:  # EBUSY from a process still in the mount, a driver's error, ...
                failed[unique] = _error_text(exc)
                log.warning("global_mount.collect_failed", volume=unique, error=failed[unique])
                continue
            with self._devices_lock:
                self._uncollected.discard(unique)
                if gone:
                    self._devices.pop(unique, None)
        if failed:
            with self._devices_lock:
                self._uncollected.update(failed)
            raise StowageError("; ".join(f"unmounting {k}: {v}" for k, v in sorted(failed.items())))

    def _collect_global(self, unique: str) -> bool:
        """Unmount one global mount when no pod path binds it any more. True when it is gone."""
        with self._global_locks(unique):
            table = mounts.MountTable.read()
            pod_numbers = {m.major_minor for m in table.under(self.pods_dir)}
            gone = True
            for entry in self._global_mounts(table):
                plugin_name, global_name = self._split_global(entry.mount_point)
                if f"{plugin_name}/{global_name}" != unique:
                    continue
                if entry.major_minor in pod_numbers:
                    gone = False
                else:
                    self._remove_global(entry, plugin_name, global_name)
        return gone

    def _remove_global(self, entry: mounts.MountEntry, plugin_name: str, global_name: str) -> None:
        device = entry.source
        plugin = self.registry.by_name(plugin_name)
        if not (isinstance(plugin, DevicePlugin)
                and plugin.unmount_device(Path(entry.mount_point), device, self.executor)):
            mounts.unmount(entry.mount_point, executor=self.executor, fstype=entry.fstype)
        if os.path.isdir(entry.mount_point):  # a driver's unmountdevice may remove it itself
            os.rmdir(entry.mount_point)
        if isinstance(plugin, DevicePlugin):
            plugin.disconnect(device, self.executor)
        log.info("global_mount.removed", volume=f"{plugin_name}/{global_name}", device=device)

    def _collect_global_mounts(self, wanted: set[str]) -> None:
        """Unmount per-node global mounts that no desired pod uses and no pod path still binds."""
        table = mounts.MountTable.read()
        pod_numbers = {m.major_minor for m in table.under(self.pods_dir)}
        for entry in self._global_mounts(table):
            plugin_name, global_name = self._split_global(entry.mount_point)
            if f"{plugin_name}/{global_name}" in wanted or entry.major_minor in pod_numbers:
                continue
            self._remove_global(entry, plugin_name, global_name)
        # Leftover empty global directories (a crash between mkdir and mount).
        table = mounts.MountTable.read()
        for d in self.plugins_dir.glob("**/mounts/*"):
            if d.is_dir() and not table.is_mount_point(d):
                plugin_name, global_name = self._split_global(str(Path(os.path.realpath(d))))
                if f"{plugin_name}/{global_name}" not in wanted:
                    try:
                        d.rmdir()
                    except OSError:
                        pass

    # ---- node status and expansion ---------------------------------------

    def volumes_in_use(self) -> list[str]:
        """Unique names of device volumes mounted or wanted on this node (Node.status.volumesInUse)."""
        with self._devices_lock:
            names = set(self._devices)
        for entry in self._global_mounts():
            plugin_name, global_name = self._split_global(entry.mount_point)
            names.add(f"{plugin_name}/{global_name}")
        return sorted(names)

    def volumes_attached(self) -> list[dict[str, str]]:
        """Node.status.volumesAttached: unique name and device path."""
        with self._devices_lock:
            found = dict(self._devices)
        for entry in self._global_mounts():
            plugin_name, global_name = self._split_global(entry.mount_point)
            found.setdefault(f"{plugin_name}/{global_name}", entry.source)
        return [{"name": n, "devicePath": d} for n, d in sorted(found.items())]

    def has_global_mount(self, pv_name: str) -> bool:
        """True when a device volume named ``pv_name`` is mounted on this node."""
        return any(self._split_global(e.mount_point)[1] == pv_name for e in self._global_mounts())

    def finish_resize(self, pv_name: str) -> bool:
        """Grow the mounted filesystem of ``pv_name`` to its device (FileSystemResizePending -> done).
        False when the volume is not mounted on this node (the resize waits for the next mount)."""
        _check_name(pv_name, "volume")
        for entry in self._global_mounts():
            plugin_name, global_name = self._split_global(entry.mount_point)
            if global_name != pv_name:
                continue
            # An online resize holds the mount point open: a teardown's unmount of it waits rather than
            # failing with EBUSY. Under the lock, the mount is looked up again (it may just have gone).
            with self._global_locks(f"{plugin_name}/{global_name}"):
                if not any(e.source == entry.source for e in mounts.MountTable.read().at(entry.mount_point)):
                    return False
                if entry.source.startswith("/dev/loop"):
                    loop.refresh_capacity(entry.source, executor=self.executor)
                resize_filesystem(entry.source, entry.mount_point, entry.fstype, executor=self.executor)
            log.info("volume.resized", pv=pv_name, device=entry.source)
            return True
        return False
