"""The node side of Ceph RBD images (the ``rbd`` source; RB7-RB12).

Three ways to bring an image to the node, chosen once by what the kernel has (RB7) and reported on the
Node (``rbd.stowage.io/mapper``):

* ``krbd``: ``rbd map`` when the kernel has the rbd module (``/sys/bus/rbd``), device ``/dev/rbdN``;
* ``nbd``: ``rbd-nbd map`` when it has nbd (``/sys/module/nbd`` or ``/dev/nbd0``), device ``/dev/nbdN``;
* ``fuse``: otherwise ``rbd-fuse`` exposes the image as a file in a FUSE directory under the agent's
  data dir, and a loop device over that file is the device.

The volume manager then formats (only a blank device) and mounts it, or binds it for Block mode.

Exclusivity (RB9, Kubernetes' in-tree behaviour): before a read-write map the image's watchers and
advisory locks are read; a live user elsewhere refuses the map ("rbd image pool/image is used by ...").
Then a lock ``kubelet_lock_magic_<node>`` is taken, released on disconnect. A lock whose holder has no
watch left (its node died or restarted) is stale and broken. Read-only volumes map read-only and take
no lock (RB10).

The Secret named by ``secretRef`` (in-tree ``key`` or ceph-csi ``userID``/``userKey``) arrives from the
agent in memory; the only copy on disk is the 0600 keyring in a private directory, removed as soon as
the mapper has connected (RB11).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import structlog

from storage.api.ceph import (Credentials, new_rados, client_files, credentials_from_secret, import_binding, rados_conf,
                              split_monitors)
from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.errors import PermanentError, TemporaryError
from storage.system import loop, mounts
from storage.system.executor import CommandError, Executor
from volume_plugins.base import Device, DevicePlugin, VolumeContext

log = structlog.get_logger(__name__)

ANN_MAPPER = "rbd.stowage.io/mapper"
LOCK_PREFIX = "kubelet_lock_magic_"  # Kubernetes' in-tree lock id, followed by the node name
MAP_TIMEOUT_SECONDS = 30.0
UNMOUNT_TIMEOUT_SECONDS = 10.0  # a healthy FUSE unmount takes milliseconds
CONNECT_TIMEOUT_SECONDS = 10
MAPPERS = ("krbd", "nbd", "fuse")


def choose_mapper(root: Path = Path("/"), which: Callable[[str], str | None] = shutil.which) -> str:
    """``krbd``, ``nbd`` or ``fuse``: the first this node can use; "" when it has none."""
    if (root / "sys/bus/rbd").exists() and which("rbd"):
        return "krbd"
    if ((root / "sys/module/nbd").exists() or (root / "dev/nbd0").exists()) and which("rbd-nbd"):
        return "nbd"
    if which("rbd-fuse") and which("losetup"):
        return "fuse"
    return ""


class Commands:
    """Every command line the mappers run, in one place (unit-tested argv). Keys never appear here:
    ``conf`` names a ceph.conf whose ``keyring`` is the 0600 file."""

    @staticmethod
    def krbd_map(conf: str, user: str, pool: str, image: str, read_only: bool) -> list[str]:
        return ["rbd", "map", "-c", conf, "--id", user, *(["--read-only"] if read_only else []), f"{pool}/{image}"]

    @staticmethod
    def krbd_unmap(device: str) -> list[str]:
        return ["rbd", "unmap", device]

    @staticmethod
    def nbd_map(conf: str, user: str, pool: str, image: str, read_only: bool) -> list[str]:
        return ["rbd-nbd", "map", "-c", conf, "--id", user, *(["--read-only"] if read_only else []), f"{pool}/{image}"]

    @staticmethod
    def nbd_unmap(device: str) -> list[str]:
        return ["rbd-nbd", "unmap", device]

    @staticmethod
    def nbd_list() -> list[str]:
        return ["rbd-nbd", "list-mapped", "--format", "json"]

    @staticmethod
    def fuse_mount(conf: str, user: str, pool: str, image: str, directory: str) -> list[str]:
        # -f: rbd-fuse's own daemonizing loses its cluster connection; the plugin runs it in the background.
        return ["rbd-fuse", "-f", "-c", conf, "--id", user, "-p", pool, "-r", image, directory]

    @staticmethod
    def loop_attach(file: str, read_only: bool) -> list[str]:
        return ["losetup", "--find", "--show", *(["--read-only"] if read_only else []), file]

    @staticmethod
    def loop_detach(device: str) -> list[str]:
        return ["losetup", "--detach", device]

    @staticmethod
    def unmount(directory: str, lazy: bool = False) -> list[str]:
        return ["umount", *(["-l"] if lazy else []), directory]


@dataclass(frozen=True)
class Target:
    monitors: tuple[str, ...]
    pool: str
    image: str
    credentials: Credentials
    read_only: bool
    exclusive: bool


def _text(value: Any) -> str:
    return (value.decode() if isinstance(value, bytes) else str(value or "")).strip()


def read_keyring(path: Path, user: str) -> str:
    """The key of ``client.<user>`` in a keyring file already on the node (the source's ``keyring``)."""
    section = ""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise PermanentError(f"rbd.keyring: cannot read {path}: {exc.strerror}") from None
    for line in lines:
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == f"client.{user}" and line.partition("=")[0].strip() == "key":
            return line.partition("=")[2].strip()
    raise PermanentError(f"rbd.keyring: {path} has no key for client.{user}")


class RbdPlugin(DevicePlugin):
    name: ClassVar[str] = "kubernetes.io/rbd"
    source_key: ClassVar[str] = "rbd"

    def __init__(self, resolver: Any = None, *, node_name: str = "", state_dir: Path | None = None,
                 mapper: str | None = None, root: Path = Path("/")) -> None:
        self.node_name = node_name
        self.state_dir = state_dir
        self.mapper = choose_mapper(root) if mapper is None else mapper
        self.root = root
        self._held: dict[str, Target] = {}  # "pool/image" -> what this agent locked, to release it
        self._held_lock = threading.Lock()

    # ---- node identity ----------------------------------------------------

    def bind_node(self, node_name: str, data_dir: Path) -> None:
        self.node_name = self.node_name or node_name
        self.state_dir = self.state_dir or Path(data_dir) / "plugins" / self.name / "rbd"

    def node_annotations(self) -> dict[str, str]:
        return {ANN_MAPPER: self.mapper or "none"}

    def _state(self) -> Path:
        if self.state_dir is None or not self.node_name:
            raise PermanentError("the rbd plugin is not bound to a node (no node name or data dir)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.state_dir

    @property
    def cookie(self) -> str:
        return f"{LOCK_PREFIX}{self.node_name}"

    # ---- the source -------------------------------------------------------

    def fs_type(self, ctx: VolumeContext) -> str | None:
        return self.spec(ctx.source).get("fsType") or "ext4"

    def target(self, ctx: VolumeContext) -> Target:
        spec = self.spec(ctx.source)
        monitors = split_monitors(spec.get("monitors") or [], "rbd.monitors")
        image = str(spec.get("image") or "").strip()
        if not image:
            raise PermanentError("rbd.image: Required value")
        pool = str(spec.get("pool") or "").strip() or "rbd"
        user = str(spec.get("user") or "").strip()
        ref = spec.get("secretRef") or {}
        if ref.get("name"):
            data = ctx.data.get(SECRET_DATA_KEY)
            if data is None:
                raise TemporaryError(f"Secret {ref['name']} for rbd volume {ctx.volume_name} not found", delay=5.0)
            credentials = credentials_from_secret(data, user=user or "admin", secret=str(ref["name"]))
        else:
            user = user or "admin"
            credentials = Credentials(user, read_keyring(Path(spec.get("keyring") or "/etc/ceph/keyring"), user))
        modes = list(ctx.source.get("accessModes") or [])
        read_only = bool(ctx.read_only or spec.get("readOnly")) or modes == ["ReadOnlyMany"]
        return Target(monitors, pool, image, credentials, read_only, exclusive=not read_only)

    # ---- find ----------------------------------------------------------------

    def _fuse_dir(self, pool: str, image: str) -> Path:
        return self._state() / "fuse" / f"{pool}@{image}"

    def find_device(self, ctx: VolumeContext) -> Device | None:
        spec = self.spec(ctx.source)
        pool, image = str(spec.get("pool") or "rbd"), str(spec.get("image") or "")
        device = self._find(pool, image, ctx.executor)
        return Device(device, self.fs_type(ctx), self.mount_options(ctx)) if device else None

    def _find(self, pool: str, image: str, executor: Executor) -> str | None:
        if self.mapper == "krbd":
            for entry in sorted((self.root / "sys/bus/rbd/devices").glob("*")):
                try:
                    if (entry / "pool").read_text().strip() == pool and (entry / "name").read_text().strip() == image:
                        return f"/dev/rbd{entry.name}"
                except OSError:
                    continue
            return None
        if self.mapper == "nbd":
            try:
                listed = json.loads(executor.run(Commands.nbd_list()).stdout or "[]")
            except (CommandError, json.JSONDecodeError):
                return None
            return next((str(m["device"]) for m in listed if m.get("pool") == pool and m.get("image") == image), None)
        directory = self._fuse_dir(pool, image)
        if not mounts.is_mount_point(directory):
            return None
        return loop.find_by_backing_file(directory / image)

    # ---- connect -------------------------------------------------------------

    def connect(self, ctx: VolumeContext) -> Device:
        if not self.mapper:
            raise PermanentError("this node cannot map rbd images: the kernel has no rbd or nbd module and "
                                 "rbd-fuse is not installed")
        target = self.target(ctx)
        found = self.find_device(ctx)
        if found is not None:  # mapped here already (a second pod, or an agent restart): same node, go on
            if ctx.mode == "Block":
                self._remember_block(ctx.target, found.path)
            return found
        if target.exclusive:
            self._claim(target)
        began = time.monotonic()
        try:
            device = self._map(target, ctx.executor)
        except Exception:
            if target.exclusive:
                self._release(f"{target.pool}/{target.image}")
            raise
        if target.exclusive:
            holder = self._lock_holder(target)
            if holder != self.cookie:
                # Another node broke this node's fresh lock before the mapper's watch showed (a race of two
                # first mappings): this node gives way before anything is mounted.
                self.disconnect(device, ctx.executor)
                raise TemporaryError(f"rbd image {target.pool}/{target.image} is used by "
                                     f"{holder.removeprefix(LOCK_PREFIX) or 'another client'}", delay=5.0)
        log.info("rbd.mapped", image=f"{target.pool}/{target.image}", device=device, mapper=self.mapper,
                 read_only=target.read_only, seconds=round(time.monotonic() - began, 3))
        if ctx.mode == "Block":
            self._remember_block(ctx.target, device)
        return Device(device, self.fs_type(ctx), self.mount_options(ctx))

    def _claim(self, target: Target) -> None:
        """RB9: refuse an image another node uses; take this node's lock on it."""
        rbd = import_binding("rbd")
        rados = import_binding("rados")
        where = f"{target.pool}/{target.image}"
        conf = {**rados_conf(target.monitors, target.credentials), "client_mount_timeout": str(CONNECT_TIMEOUT_SECONDS),
                "rbd_blocklist_on_break_lock": "false"}
        cluster = new_rados(rados, target.credentials.user, conf)
        try:
            try:
                cluster.connect(timeout=CONNECT_TIMEOUT_SECONDS)
                ioctx = cluster.open_ioctx(target.pool)
            except rados.Error as exc:
                raise TemporaryError(f"Ceph monitors {','.join(target.monitors)}: {str(exc).replace(target.credentials.key, '***')}",
                                     delay=10.0) from None
            try:
                try:
                    with rbd.Image(ioctx, target.image, read_only=True) as image:  # a read-only open adds no watch
                        watchers = list(image.watchers_list())
                        lockers = (image.list_lockers() or {}).get("lockers") or []
                except rbd.ImageNotFound:
                    raise PermanentError(f"rbd image {where} not found") from None
                others = [(client, cookie) for client, cookie, _addr in lockers if cookie != self.cookie]
                mine = [(client, cookie) for client, cookie, _addr in lockers if cookie == self.cookie]
                if watchers and not mine:
                    holder = ", ".join(c.removeprefix(LOCK_PREFIX) for _, c in others) or \
                        ", ".join(str(w.get("addr")) for w in watchers)
                    raise TemporaryError(f"rbd image {where} is used by {holder}", delay=5.0)
                with rbd.Image(ioctx, target.image) as image:
                    for client, cookie in others:  # no watch left behind it: its holder is gone
                        log.warning("rbd.stale_lock_broken", image=where, holder=cookie.removeprefix(LOCK_PREFIX))
                        image.break_lock(client, cookie)
                    if not mine:
                        try:
                            image.lock_exclusive(self.cookie)
                        except (rbd.ImageBusy, rbd.ImageExists):
                            raise TemporaryError(f"rbd image {where} is used by another node (locked meanwhile)",
                                                 delay=5.0) from None
            finally:
                ioctx.close()
        finally:
            cluster.shutdown()
        with self._held_lock:
            self._held[where] = target

    def _lock_holder(self, target: Target) -> str:
        """The cookie of the image's lock now ("" when unlocked)."""
        rbd = import_binding("rbd")
        rados = import_binding("rados")
        cluster = new_rados(rados, target.credentials.user, {
            **rados_conf(target.monitors, target.credentials), "client_mount_timeout": str(CONNECT_TIMEOUT_SECONDS)})
        try:
            cluster.connect(timeout=CONNECT_TIMEOUT_SECONDS)
            with cluster.open_ioctx(target.pool) as ioctx, rbd.Image(ioctx, target.image, read_only=True) as image:
                lockers = (image.list_lockers() or {}).get("lockers") or []
        except rados.Error as exc:
            raise TemporaryError(f"Ceph monitors {','.join(target.monitors)}: "
                                 f"{str(exc).replace(target.credentials.key, '***')}", delay=10.0) from None
        finally:
            cluster.shutdown()
        return str(lockers[0][1]) if lockers else ""

    def _release(self, where: str) -> None:
        """Drop this node's lock (best effort: a lock left behind is stale once no watch remains)."""
        with self._held_lock:
            target = self._held.pop(where, None)
        if target is None:
            return
        try:
            rbd = import_binding("rbd")
            rados = import_binding("rados")
            cluster = new_rados(rados, target.credentials.user, {
                **rados_conf(target.monitors, target.credentials), "client_mount_timeout": str(CONNECT_TIMEOUT_SECONDS),
                "rbd_blocklist_on_break_lock": "false"})
            try:
                cluster.connect(timeout=CONNECT_TIMEOUT_SECONDS)
                with cluster.open_ioctx(target.pool) as ioctx, rbd.Image(ioctx, target.image) as image:
                    for client, cookie, _addr in (image.list_lockers() or {}).get("lockers") or []:
                        if cookie == self.cookie:
                            image.break_lock(client, cookie)
            finally:
                cluster.shutdown()
            log.info("rbd.lock_released", image=where)
        except Exception as exc:  # the next claim elsewhere treats it as stale
            log.warning("rbd.lock_release_failed", image=where, error=str(exc).replace(target.credentials.key, "***"))

    def _map(self, target: Target, executor: Executor) -> str:
        user = target.credentials.user
        if self.mapper in ("krbd", "nbd"):
            build = Commands.krbd_map if self.mapper == "krbd" else Commands.nbd_map
            with client_files(target.monitors, target.credentials, self._state()) as (conf, _keyring):
                try:
                    proc = executor.run(build(str(conf), user, target.pool, target.image, target.read_only),
                                        secrets=(target.credentials.key,), timeout=MAP_TIMEOUT_SECONDS)
                except CommandError as exc:
                    raise TemporaryError(f"mapping rbd image {target.pool}/{target.image}: "
                                         f"{exc.message.replace(target.credentials.key, '***')}", delay=5.0) from None
            return proc.stdout.strip().splitlines()[-1]
        directory = self._fuse_dir(target.pool, target.image)
        directory.mkdir(parents=True, exist_ok=True)
        if not mounts.is_mount_point(directory):
            self._start_fuse(target, directory)
        backing = directory / target.image
        existing = loop.find_by_backing_file(backing)
        if existing:
            return existing
        try:
            proc = executor.run(Commands.loop_attach(str(backing), target.read_only))
        except CommandError as exc:
            self._stop_fuse(directory, executor)
            raise TemporaryError(f"losetup of rbd image {target.pool}/{target.image}: {exc.message}", delay=5.0) from None
        return proc.stdout.strip().splitlines()[-1]

    def _start_fuse(self, target: Target, directory: Path) -> None:
        log_file = directory.with_suffix(directory.suffix + ".log")
        with client_files(target.monitors, target.credentials, self._state()) as (conf, _keyring), \
                open(log_file, "ab") as out:
            argv = Commands.fuse_mount(str(conf), target.credentials.user, target.pool, target.image, str(directory))
            # Its own session: the FUSE daemon outlives an agent restart, as a kernel mapping would.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
            threading.Thread(target=proc.wait, name=f"rbd-fuse-{proc.pid}", daemon=True).start()
            directory.with_suffix(directory.suffix + ".pid").write_text(str(proc.pid))
            # The keyring stays only until the daemon has connected and mounted (RB11).
            deadline = time.monotonic() + MAP_TIMEOUT_SECONDS
            delay = 0.01
            while not (mounts.is_mount_point(directory) and (directory / target.image).exists()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    if proc.poll() is None:
                        proc.kill()
                    if mounts.is_mount_point(directory):
                        subprocess.run(Commands.unmount(str(directory), lazy=True), capture_output=True, timeout=30)
                    tail = log_file.read_text(errors="replace")[-500:].replace(target.credentials.key, "***")
                    raise TemporaryError(f"rbd-fuse for {target.pool}/{target.image} (monitors "
                                         f"{','.join(target.monitors)}) did not come up: {tail.strip() or 'no output'}",
                                         delay=5.0)
                time.sleep(delay)
                delay = min(0.5, delay * 2)

    # ---- disconnect ----------------------------------------------------------

    def disconnect(self, device: str, executor: Executor) -> None:
        if device.startswith("/dev/loop"):
            backing = loop._backing_file(os.path.basename(device)) or ""
            if self.state_dir is None or not backing.startswith(str(self.state_dir / "fuse") + "/"):
                return  # not ours
            directory = Path(backing).parent
            executor.run(Commands.loop_detach(device), check=False)
            self._stop_fuse(directory, executor)
            pool, _, image = directory.name.partition("@")
        elif device.startswith("/dev/rbd") or device.startswith("/dev/nbd"):
            pool, image = self._mapped_image(device, executor)
            unmap = Commands.krbd_unmap if device.startswith("/dev/rbd") else Commands.nbd_unmap
            executor.run(unmap(device))
        else:
            return
        self._release(f"{pool}/{image}")
        log.info("rbd.unmapped", device=device, image=f"{pool}/{image}")

    def _mapped_image(self, device: str, executor: Executor) -> tuple[str, str]:
        if device.startswith("/dev/rbd"):
            entry = self.root / "sys/bus/rbd/devices" / device.removeprefix("/dev/rbd")
            try:
                return (entry / "pool").read_text().strip(), (entry / "name").read_text().strip()
            except OSError:
                return "", ""
        try:
            listed = json.loads(executor.run(Commands.nbd_list()).stdout or "[]")
        except (CommandError, json.JSONDecodeError):
            return "", ""
        found = next((m for m in listed if m.get("device") == device), {})
        return str(found.get("pool", "")), str(found.get("image", ""))

    def _stop_fuse(self, directory: Path, executor: Executor) -> None:
        """Unmount the FUSE directory; a daemon that hangs (its cluster gone, or stopped) is killed and the
        mount forced (RB9). rbd-fuse exits after its unmount, and its watch on the image goes with it."""
        pid_file = directory.with_suffix(directory.suffix + ".pid")

        def serving() -> list[int]:
            pid = self._daemon(pid_file, directory)
            return [pid] if pid is not None else []

        mounts.unmount_fuse(directory, UNMOUNT_TIMEOUT_SECONDS, executor=executor, daemons=serving, exit_timeout=10.0)
        for leftover in (pid_file, directory.with_suffix(directory.suffix + ".log")):
            leftover.unlink(missing_ok=True)
        try:
            directory.rmdir()
        except OSError:
            pass

    @staticmethod
    def _daemon(pid_file: Path, directory: Path) -> int | None:
        """The rbd-fuse pid recorded for ``directory``, if that process is still that daemon."""
        try:
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if cmdline and cmdline[0].endswith(b"rbd-fuse") and str(directory).encode() in cmdline else None

    # ---- Block mode ----------------------------------------------------------

    def _block_record(self, target: Path) -> Path:
        digest = hashlib.sha256(os.path.realpath(target).encode()).hexdigest()[:32]
        return self._state() / "block" / digest

    def _remember_block(self, target: Path, device: str) -> None:
        record = self._block_record(target)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(device)

    def teardown(self, target: Path, executor: Executor) -> None:
        """A Block-mode volume has no global mount to collect: its device goes with the last pod path."""
        if self.state_dir is None:
            return
        record = self._block_record(target)
        try:
            device = record.read_text().strip()
        except OSError:
            return
        record.unlink(missing_ok=True)
        others = [r for r in record.parent.glob("*") if r.read_text().strip() == device]
        if others or mounts.mounts_of_device(device):
            return
        self.disconnect(device, executor)


__all__ = ["RbdPlugin", "Commands", "choose_mapper", "ANN_MAPPER", "MAPPERS"]
