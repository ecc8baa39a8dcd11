"""The sources of a container's volume mounts that must be resolved safely at each start.

A subPath (inside any volume) and a hostPath (inside an allowed prefix) are paths
the pods themselves can change: another pod sharing the hostPath, or this pod in
its own volume, may swap a directory for a symlink. So at every container start,
first or restart, each is opened beneath its base without following any symlink,
and the opened descriptor is bind-mounted at
``pods/<uid>/volume-subpaths/<container>/<index>`` (as the kubelet does since
CVE-2017-1002101); runc binds that staged mount, which a later swap cannot move.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from storage.errors import PermanentError
from storage.system import mounts, safepath
from volume_plugins.atomic_writer import DATA_DIR
from volume_plugins.host_path import check_type

from .envvars import EnvError, expand
from .oci import api_data_volumes

log = structlog.get_logger(__name__)

STAGING = "volume-subpaths"


class MountRefused(EnvError):
    """A volume mount's path escapes its base: the container must not start (CreateContainerConfigError)."""


def staging_dir(pod_dir: Path, container: str) -> Path:
    return pod_dir / STAGING / container


def _anchor(source: str, host_path_prefixes: list[Path]) -> tuple[Path, str]:
    """(trusted base, path beneath it) of a volume's host path: an allowed hostPath prefix
    and the rest, or the volume directory itself (laid out by the volume manager)."""
    found = safepath.split_under(source, host_path_prefixes) if host_path_prefixes else None
    return found if found is not None else (Path(source), "")


def _is_host_path(source: str, pod_dir: Path, host_path_prefixes: list[Path]) -> bool:
    if not host_path_prefixes:
        return False
    real_pod = Path(os.path.realpath(pod_dir))
    inside_pod = Path(source) == real_pod or real_pod in Path(source).parents or Path(pod_dir) in Path(source).parents
    return not inside_pod and safepath.split_under(source, host_path_prefixes) is not None


def _through_data(volume_fd: int, sub_path: str) -> str:
    """A subPath into a ConfigMap, Secret, downward API or projected volume, as the path it names in the
    volume's current data directory. The atomic writer shows each key as a link ``key -> ..data/key`` and
    ``..data`` as a link to the timestamped directory, so the key's own path crosses two symbolic links and
    is refused; the kubelet resolves it (a bind of the key's current file, which, as in Kubernetes, does
    not follow later updates). Only the writer's own two links are followed: the volume is read-only to
    every pod (SV11), and anything else is left for ``open_beneath`` to refuse."""
    first, _, rest = sub_path.partition("/")
    try:
        key_link = os.readlink(first, dir_fd=volume_fd)
        data_link = os.readlink(DATA_DIR, dir_fd=volume_fd)
    except OSError:
        return sub_path
    if key_link != f"{DATA_DIR}/{first}" or "/" in data_link or not data_link.startswith("..") or data_link in ("..", DATA_DIR):
        return sub_path
    return "/".join(p for p in (data_link, first, rest) if p)


def _open_source(source: str, sub_path: str, field: str, host_path_prefixes: list[Path],
                 api_data: bool = False) -> int:
    if sub_path:
        pure = PurePosixPath(sub_path)
        if pure.is_absolute():
            raise MountRefused(f"{field}: Invalid value: {sub_path!r}: must be a relative path")
        if ".." in pure.parts:
            raise MountRefused(f"{field}: Invalid value: {sub_path!r}: must not contain '..'")
    base, rest = _anchor(source, host_path_prefixes)
    try:
        volume_fd = safepath.open_beneath(base, rest, os.O_PATH | os.O_DIRECTORY if sub_path else os.O_PATH)
    except safepath.PathEscape as exc:
        raise MountRefused(f"{field}: volume path {source} is refused: {exc.strerror}") from None
    except OSError as exc:
        raise MountRefused(f"{field}: volume path {source}: {exc.strerror or exc}") from None
    if not sub_path:
        return volume_fd
    try:
        try:
            return safepath.open_beneath(volume_fd, _through_data(volume_fd, sub_path) if api_data else sub_path)
        except FileNotFoundError:
            # Missing directories are created, as Kubernetes does, each from its parent's fd.
            return safepath.mkdirs_beneath(volume_fd, sub_path, 0o750)
    except safepath.PathEscape as exc:
        raise MountRefused(f"{field}: Invalid value: {sub_path!r}: {exc.strerror}: "
                           "a subPath may not cross a symbolic link nor lead outside the volume") from None
    except OSError as exc:
        raise MountRefused(f"{field}: Invalid value: {sub_path!r}: {exc.strerror or exc}") from None
    finally:
        os.close(volume_fd)


def _stage(fd: int, target: Path, *, bidirectional: bool) -> None:
    """A recursive bind of what ``fd`` holds at ``target``, made a slave of the host's mounts at once (SV13):
    as a peer, every later unmount beneath the copy (the container's end, `stowage down`) would unmount the
    host's own mount at the same place, such as a network namespace's file under /run/netns or another
    pod's volume, for a hostPath of / or /run. A slave still receives the host's new mounts, which
    HostToContainer needs. Bidirectional keeps the copy a peer, as its container's mounts must reach the
    host: whatever removes it (``mounts.unmount_all_under``, ``unmount_entries``) makes it private first
    (``mounts.isolate_tree``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        target.mkdir(exist_ok=True)
    else:
        target.touch(mode=0o600, exist_ok=True)
    safepath.bind_fd(fd, target)
    if not bidirectional:
        safepath.set_propagation(target, safepath.MS_SLAVE)


def stage_volume_mounts(container: dict[str, Any], volumes: dict[str, str], env: list[tuple[str, str]], *,
                        pod_dir: Path, host_path_prefixes: list[Path],
                        pod: dict[str, Any] | None = None) -> list[str | None]:
    """Per entry of ``volumeMounts``: the staged source runc must bind, or None where the
    volume's own directory (the volume manager's, under the pod directory) is safe as is.
    Raises ``MountRefused`` (nothing left staged) when a path escapes, or when what an
    inline hostPath names is no longer of its ``type``."""
    name = container.get("name", "")
    host_types = {v.get("name", ""): str((v.get("hostPath") or {}).get("type") or "")
                  for v in ((pod or {}).get("spec") or {}).get("volumes") or [] if v.get("hostPath")}
    unstage_volume_mounts(pod_dir, name)
    lookup = dict(env).get
    api_data = api_data_volumes(pod or {})
    sources: list[str | None] = []
    try:
        for i, vm in enumerate(container.get("volumeMounts") or []):
            field = f"volumeMounts[{i}]"
            volume = vm.get("name", "")
            if volume not in volumes:
                raise EnvError(f"{field}.name: volume {volume!r} is not ready on this node")
            source = volumes[volume]
            if vm.get("subPath"):
                sub, sub_field = str(vm["subPath"]), f"{field}.subPath"
            elif vm.get("subPathExpr"):
                sub, sub_field = expand(str(vm["subPathExpr"]), lookup), f"{field}.subPathExpr"
            else:
                sub, sub_field = "", field
            if not sub and not _is_host_path(source, pod_dir, host_path_prefixes):
                sources.append(None)
                continue
            fd = _open_source(source, sub, sub_field, host_path_prefixes, api_data=volume in api_data)
            try:
                if not sub and host_types.get(volume):
                    try:
                        check_type(os.fstat(fd).st_mode, host_types[volume], source)
                    except PermanentError as exc:
                        raise MountRefused(f"{field}: {exc}") from None
                target = staging_dir(pod_dir, name) / str(i)
                _stage(fd, target, bidirectional=vm.get("mountPropagation") == "Bidirectional")
            finally:
                os.close(fd)
            sources.append(str(target))
    except BaseException:
        unstage_volume_mounts(pod_dir, name)
        raise
    return sources


def unstage_volume_mounts(pod_dir: Path, container: str) -> None:
    """Unmount and remove a container's staged sources. Never removes through a mount."""
    directory = staging_dir(pod_dir, container)
    if not directory.exists():
        return
    # A staged copy of a tree (the host's "/" for `kubectl debug node/`) holds a copy of every mount
    # beneath it, and each copied mount point stays busy on the host while it exists: the host cannot
    # remove a network namespace's file, say. Made private, so that no unmount in it reaches the host's
    # mounts (SV13), each copy is detached whole in one step; unmounted deepest first, one reading of
    # the mount table per mount, a large one lingered for seconds.
    staged = mounts.mounts_under(directory)
    ids = {e.mount_id for e in staged}
    for point in sorted({e.mount_point for e in staged if e.parent_id not in ids}):
        try:
            safepath.set_propagation(point, safepath.MS_PRIVATE)
            mounts.unmount(point, lazy=True)
        except Exception as exc:  # gone meanwhile, or busy: the pass below decides
            log.info("subpath.detach_skipped", target=point, error=str(exc))
    # Whatever is left (a mount stacked on a staged one), deepest first, each tree made private first.
    mounts.unmount_all_under(directory)
    for entry in sorted(directory.iterdir()):
        if mounts.is_mount_point(entry):
            raise OSError(errno.EBUSY, f"{entry} is still mounted")
        if entry.is_dir() and not entry.is_symlink():
            entry.rmdir()  # empty once unmounted: a non-empty one is an error, not ours to delete
        else:
            entry.unlink()
    directory.rmdir()


def release_staged(pod_dir: Path, container: str) -> None:
    """``unstage_volume_mounts`` for a container that is gone: a failure is logged, and the
    volume manager's teardown of the pod unmounts whatever is left."""
    try:
        unstage_volume_mounts(pod_dir, container)
    except Exception as exc:
        log.warning("subpath.unstage_failed", container=container, error=str(exc))
