"""The node-side volume plugin interface.

A plugin is chosen by the key of the volume source (``emptyDir``, ``local``,
``hostPath``, ...). Two shapes exist:

* ``VolumePlugin``: sets a volume up at a host path and tears it down
  (emptyDir, hostPath, configMap, secret, ...).
* ``DevicePlugin``: a block device reaches the node (``connect``, or an
  attach by the control plane that ``find_device`` waits for); the volume
  manager then formats it safely and mounts it once per node through the
  shared ``Mounter``, and bind-mounts it into each pod. ``disconnect`` runs
  when no pod on the node uses the device any more.

Teardown must work from the path alone: after an agent restart only the pod
directories and the mount table are known (SEMANTICS A5).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from storage.system.executor import Executor, default_executor

VolumeMode = Literal["Filesystem", "Block"]


@dataclass
class VolumeContext:
    """Everything a plugin needs to set up one volume of one pod."""

    pod_uid: str
    pod_namespace: str
    pod_name: str
    volume_name: str
    source: dict[str, Any]  # the inline pod volume source, or the bound PV's spec
    target: Path  # the per-pod path this volume must appear at
    read_only: bool = False
    fs_group: int | None = None
    pv_name: str | None = None
    # Contents the caller resolved through the API: "configMap:<name>",
    # "secret:<name>" -> {key: str|bytes} (None: object missing); "downwardAPI" -> {path: str}.
    data: dict[str, Any] = field(default_factory=dict)
    mode: VolumeMode = "Filesystem"
    executor: Executor = field(default_factory=default_executor)
    # status.attachmentMetadata of this volume's VolumeAttachment to this node (attachable plugins:
    # e.g. {"devicePath": "/dev/xvdba"} or {"lun": "3"}); empty until the control plane attached it.
    attachment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Device:
    path: str  # /dev/...
    fs_type: str | None = None  # requested filesystem (None: default ext4)
    mount_options: tuple[str, ...] = ()
    attached_by_plugin: bool = False


class VolumePlugin(ABC):
    name: ClassVar[str]  # "kubernetes.io/empty-dir"
    source_key: ClassVar[str]  # "emptyDir"

    @property
    def dir_name(self) -> str:
        """Directory name under ``pods/<uid>/volumes/`` (Kubernetes escapes "/" as "~")."""
        return self.name.replace("/", "~")

    def can_support(self, source: dict[str, Any]) -> bool:
        return self.source_key in source

    def spec(self, source: dict[str, Any]) -> dict[str, Any]:
        return source.get(self.source_key) or {}

    @abstractmethod
    def setup(self, ctx: VolumeContext) -> Path:
        """Make the volume available; idempotent. Returns the host path for the runtime."""

    def teardown(self, target: Path, executor: Executor) -> None:
        """Undo ``setup`` given only the target path. The volume manager has
        already unmounted everything under it and removes the directory."""

    #: True when ``release`` must run before the volume manager unmounts the target.
    releases_mounts: ClassVar[bool] = False

    def release(self, target: Path, executor: Executor) -> None:
        """Unmount what ``setup`` mounted at ``target`` before the volume manager's generic unmount,
        for plugins whose mounts can hang (a FUSE daemon that stopped answering): bounded in time."""


class DevicePlugin(VolumePlugin):
    """A plugin whose volumes are block devices formatted and mounted by the volume manager."""

    #: True when the control plane attaches the device (cloud disks): the node only waits for it.
    attachable: ClassVar[bool] = False
    #: The node's ``status.allocatable`` key counting how many such volumes it can take
    #: (Kubernetes' in-tree ``attachable-volumes-aws-ebs`` ...), and its default; None: unlimited.
    attach_limit_key: ClassVar[str | None] = None
    default_attach_limit: ClassVar[int] = 0

    def setup(self, ctx: VolumeContext) -> Path:  # pragma: no cover - the volume manager drives devices
        raise NotImplementedError("device plugins are set up through the volume manager")

    def device_mode(self, ctx: VolumeContext) -> bool:
        """True when this volume is a device (the PV may also name a plain directory)."""
        return True

    @abstractmethod
    def find_device(self, ctx: VolumeContext) -> Device | None:
        """The device if it is already present on this node."""

    def connect(self, ctx: VolumeContext) -> Device:
        """Bring the device to this node (non-attachable plugins). Attachable
        plugins wait for the control plane instead."""
        found = self.find_device(ctx)
        if found is None:
            from storage.errors import TemporaryError

            raise TemporaryError(f"waiting for volume {ctx.pv_name or ctx.volume_name} to be attached", delay=2.0)
        return found

    def disconnect(self, device: str, executor: Executor) -> None:
        """Release the device after its last global mount is gone."""

    def global_name(self, ctx: VolumeContext) -> str:
        """Name of the per-node global mount directory (the PV name)."""
        return ctx.pv_name or f"{ctx.pod_uid}-{ctx.volume_name}"

    def fs_type(self, ctx: VolumeContext) -> str | None:
        return self.spec(ctx.source).get("fsType") or None

    def mount_options(self, ctx: VolumeContext) -> tuple[str, ...]:
        opts = ctx.source.get("mountOptions") or []
        return tuple(str(o) for o in opts)
