"""NFS subdirectory provisioner: one directory per claim on an existing export.

Answers to both community provisioners' names and parameters:

* ``k8s-sigs.io/nfs-subdir-external-provisioner`` (and ``cluster.local/...``, its Helm default):
  ``pathPattern`` (``${.PVC.namespace}``, ``${.PVC.name}``, ``${.PVC.labels.KEY}``,
  ``${.PVC.annotations.KEY}``; default, and when the pattern expands to nothing, the directory
  ``<namespace>-<claim>-<pv name>``), ``onDelete`` (delete | retain), ``archiveOnDelete`` (default
  true: rename to ``archived-<dir>`` beside it), and the claim annotations ``nfs.io/createMode``
  (octal, default 0777), ``nfs.io/createUID`` / ``nfs.io/createGID`` (default 0).
  That provisioner takes the server and export from its Deployment's environment; here they are
  the class parameters ``server`` and ``path``.
* ``nfs.csi.k8s.io`` (csi-driver-nfs): ``server``, ``share``, ``subDir`` (``${pvc.metadata.name}``,
  ``${pvc.metadata.namespace}``, ``${pv.metadata.name}``; default the PV name), ``mountPermissions``
  (octal; 0 = leave the mode), ``onDelete`` (delete | retain | archive to ``<share>/archived-<subDir>``;
  default delete).

The PV gets ``nfs: {server, path: <export>/<dir>}`` and the class's mountOptions (NF3-NF5).
Directories are made over the NFS protocol itself (libnfs, NFSv3), which needs no kernel client,
or in a local directory when this host has the export mounted or on disk
(``STOWAGE_NFS_LOCAL_EXPORTS="server:/export=/local/dir;..."``), which is how nfs-subdir works
from inside its pod. ``STOWAGE_NFS_NETNS`` names a network namespace (``/proc/PID/ns/net``)
through which the NFS servers are reached. Recycle scrubs a volume's contents (NF7), for any
``nfs`` PV.
"""
from __future__ import annotations

import errno
import os
import posixpath
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

import structlog

from provisioners.base import ProvisionRequest, ProvisionResult, Provisioner
from storage.errors import PermanentError, TemporaryError

log = structlog.get_logger(__name__)

SUBDIR_NAME = "k8s-sigs.io/nfs-subdir-external-provisioner"
CSI_NAME = "nfs.csi.k8s.io"
ANN_SHARE = "nfs.stowage.io/share"  # the export the directory was made on
ANN_ON_DELETE = "nfs.stowage.io/on-delete"  # delete | retain | archive, decided at provision time
ANN_ARCHIVE_TO = "nfs.stowage.io/archive-to"  # where archive renames the directory, relative to the export
LOCAL_EXPORTS_ENV = "STOWAGE_NFS_LOCAL_EXPORTS"
NETNS_ENV = "STOWAGE_NFS_NETNS"
ARCHIVE_PREFIX = "archived-"
DEFAULT_SUBDIR_PATTERN = "${.PVC.namespace}-${.PVC.name}-${.PV.name}"
# Claim annotations nfs-subdir reads for the new directory's mode and owner.
ANN_CREATE_MODE, ANN_CREATE_UID, ANN_CREATE_GID = "nfs.io/createMode", "nfs.io/createUID", "nfs.io/createGID"

_PATTERN = re.compile(r"\$\{\s*([^}]*?)\s*\}")


class ExportTree(Protocol):
    """Directory operations on one export, paths relative to its root."""

    def makedirs(self, path: str, mode: int = 0o777) -> None: ...
    def chmod(self, path: str, mode: int) -> None: ...
    def chown(self, path: str, uid: int, gid: int) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def remove_tree(self, path: str, *, keep_top: bool = False) -> None: ...
    def exists(self, path: str) -> bool: ...
    def close(self) -> None: ...


class LocalTree:
    """The export as a local directory (mounted, or the exported directory itself)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def _p(self, path: str) -> Path:
        return self.root / path.strip("/")

    def makedirs(self, path: str, mode: int = 0o777) -> None:
        self._p(path).mkdir(mode=mode, parents=True, exist_ok=True)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._p(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._p(path), uid, gid)

    def rename(self, old: str, new: str) -> None:
        os.rename(self._p(old), self._p(new))

    def remove_tree(self, path: str, *, keep_top: bool = False) -> None:
        target = self._p(path)
        if target.is_symlink() or target.is_file():
            target.unlink()
            return
        if not target.exists():
            return
        for child in target.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        if not keep_top:
            target.rmdir()

    def exists(self, path: str) -> bool:
        return os.path.lexists(self._p(path))

    def close(self) -> None:
        pass


def parse_local_exports(text: str) -> dict[tuple[str, str], str]:
    """``"server:/export=/local/dir;..."`` -> {(server, /export): /local/dir}."""
    found: dict[tuple[str, str], str] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        remote, sep, local = item.partition("=")
        server, colon, share = remote.rpartition(":")
        if not (sep and colon and server and share.startswith("/") and local.startswith("/")):
            raise PermanentError(f"{LOCAL_EXPORTS_ENV}: {item!r} is not server:/export=/local/dir")
        found[(server.strip("[]"), _norm(share))] = local
    return found


def _norm(path: str) -> str:
    return posixpath.normpath("/" + path.strip()).replace("//", "/")


def _safe_relative(path: str, field: str) -> str:
    """A relative path with no ``..`` (a directory must never land outside the export)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PermanentError(f"parameter {field!r}: {path!r} leaves the export ('..' is not allowed)")
    return "/".join(parts)


def expand_path_pattern(pattern: str, claim: dict[str, Any], pv_name: str) -> str:
    """nfs-subdir's ``${.PVC.x}`` and csi-driver-nfs's ``${pvc.metadata.x}`` / ``${pv.metadata.name}`` (NF2)."""
    meta = claim.get("metadata") or {}

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in (".PVC.namespace", "pvc.metadata.namespace"):
            return str(meta.get("namespace") or "")
        if key in (".PVC.name", "pvc.metadata.name"):
            return str(meta.get("name") or "")
        if key in (".PV.name", "pv.metadata.name"):
            return pv_name
        for prefix, field in ((".PVC.labels.", "labels"), (".PVC.annotations.", "annotations")):
            if key.startswith(prefix):
                # A missing label or annotation expands to nothing, as nfs-subdir's template does.
                return str((meta.get(field) or {}).get(key[len(prefix):], ""))
        raise PermanentError(f"unknown variable ${{{key}}} in the directory pattern {pattern!r}")

    return _PATTERN.sub(value, pattern)


class NfsSubdirProvisioner(Provisioner):
    name = SUBDIR_NAME
    aliases = frozenset({CSI_NAME, "cluster.local/nfs-subdir-external-provisioner"})
    supports_recycle = True
    known_parameters = frozenset({"server", "path", "share", "subDir", "pathPattern", "onDelete",
                                  "archiveOnDelete", "mountPermissions"})

    def __init__(self, *, local_exports: dict[tuple[str, str], str] | None = None, netns: str | None = None,
                 timeout_ms: int = 10_000) -> None:
        env = os.environ.get(LOCAL_EXPORTS_ENV, "")
        self.local_exports = local_exports if local_exports is not None else (parse_local_exports(env) if env else {})
        self.netns = netns if netns is not None else (os.environ.get(NETNS_ENV) or None)
        self.timeout_ms = timeout_ms

    # Reaching an export

    def _open(self, server: str, share: str) -> ExportTree:
        local = self.local_exports.get((server.strip("[]"), _norm(share)))
        if local:
            return LocalTree(local)
        from storage.system import libnfs

        try:
            return libnfs.NfsClient(server.strip("[]"), _norm(share), netns=self.netns, timeout_ms=self.timeout_ms)
        except libnfs.NfsError as exc:
            raise TemporaryError(f"NFS server {server}: cannot mount export {share}: {exc.strerror}", delay=10.0) from None
        except OSError as exc:  # libnfs not installed, or the namespace is gone
            raise TemporaryError(f"NFS server {server}: no NFS client to reach export {share}: {exc}", delay=30.0) from None

    @staticmethod
    def _backend_error(server: str, what: str, exc: OSError) -> TemporaryError:
        return TemporaryError(f"NFS server {server}: {what}: {exc.strerror or exc}", delay=10.0)

    # Provisioning

    def _settings(self, req: ProvisionRequest) -> tuple[str, str, str, str, int]:
        """(server, share, directory relative to the share, on-delete action, chmod mode or 0)."""
        params = req.parameters
        self.check_parameters(params)
        csi = req.storage_class.get("provisioner") == CSI_NAME
        server = (params.get("server") or "").strip()
        if not server:
            raise PermanentError(f"parameter 'server' is required for provisioner {req.storage_class.get('provisioner')}")
        share = params.get("share") or params.get("path") or ""
        if not share.startswith("/"):
            field = "share" if csi else "path"
            raise PermanentError(f"parameter {field!r} must be the export's absolute path, got {share!r}")
        if params.get("subDir") and params.get("pathPattern"):
            raise PermanentError("parameters 'subDir' and 'pathPattern' are exclusive")
        if params.get("subDir"):
            pattern, field = params["subDir"], "subDir"
        elif params.get("pathPattern"):
            pattern, field = params["pathPattern"], "pathPattern"
        elif csi:
            pattern, field = "${pv.metadata.name}", "subDir"
        else:
            pattern, field = DEFAULT_SUBDIR_PATTERN, "pathPattern"
        directory = _safe_relative(expand_path_pattern(pattern, req.claim, req.volume_name), field)
        if not directory and not csi:
            # nfs-subdir falls back to its default name when the pattern expands to nothing.
            directory = _safe_relative(expand_path_pattern(DEFAULT_SUBDIR_PATTERN, req.claim, req.volume_name), field)
        if not directory:
            raise PermanentError(f"parameter {field!r}: {pattern!r} expands to an empty directory name")
        on_delete = self._on_delete(params, csi)
        mode_text = params.get("mountPermissions") or ("0777" if not csi else "0")
        try:
            mode = int(mode_text, 8)
        except ValueError:
            raise PermanentError(f"parameter 'mountPermissions': {mode_text!r} is not an octal mode") from None
        if not 0 <= mode <= 0o7777:
            raise PermanentError(f"parameter 'mountPermissions': {mode_text!r} is out of range")
        return server, _norm(share), directory, on_delete, mode

    @staticmethod
    def _claim_ownership(claim: dict[str, Any]) -> tuple[int | None, int, int]:
        """nfs-subdir's createMode/createUID/createGID claim annotations: (mode or None, uid, gid).
        As upstream, an unparsable mode is ignored (logged) and unparsable ids count as 0."""
        annotations = (claim.get("metadata") or {}).get("annotations") or {}
        mode: int | None = None
        if ANN_CREATE_MODE in annotations:
            try:
                mode = int(str(annotations[ANN_CREATE_MODE]), 8)
            except ValueError:
                log.warning("nfs_subdir.create_mode_ignored", value=annotations[ANN_CREATE_MODE])

        def ident(key: str) -> int:
            try:
                return int(str(annotations.get(key, "0")))
            except ValueError:
                return 0
        return mode, ident(ANN_CREATE_UID), ident(ANN_CREATE_GID)

    @staticmethod
    def _on_delete(params: dict[str, str], csi: bool) -> str:
        value = (params.get("onDelete") or "").lower()
        # nfs-subdir knows delete and retain and archives otherwise; "archive" is accepted for both.
        allowed = ("delete", "retain", "archive")
        if value and value not in allowed:
            raise PermanentError(f"parameter 'onDelete': {params['onDelete']!r} is not one of {', '.join(allowed)}")
        if value:
            return value
        if csi:
            return "delete"
        archive = (params.get("archiveOnDelete") or "true").lower()
        if archive not in ("true", "false", "1", "0", "t", "f"):
            raise PermanentError(f"parameter 'archiveOnDelete': {params['archiveOnDelete']!r} is not a boolean")
        return "archive" if archive in ("true", "1", "t") else "delete"

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        if req.volume_mode == "Block":
            raise PermanentError(f"provisioner {self.name} cannot provision volumeMode Block")
        server, share, directory, on_delete, mode = self._settings(req)
        csi = req.storage_class.get("provisioner") == CSI_NAME
        owner: tuple[int, int] | None = None
        if not csi:
            create_mode, uid, gid = self._claim_ownership(req.claim)
            mode = create_mode if create_mode is not None else mode
            owner = (uid, gid)
        tree = self._open(server, share)
        try:
            tree.makedirs(directory, 0o777)  # existing already: a retry after a crash (NF1)
            if mode:
                tree.chmod(directory, mode)
            if owner is not None:
                tree.chown(directory, *owner)
        except OSError as exc:
            raise self._backend_error(server, f"cannot make directory {directory} on export {share}", exc) from None
        finally:
            tree.close()
        log.info("nfs_subdir.provisioned", volume=req.volume_name, server=server, share=share, directory=directory)
        requested = req.claim["spec"]["resources"]["requests"]["storage"]
        path = posixpath.join(share, directory)
        annotations = {ANN_SHARE: share, ANN_ON_DELETE: on_delete}
        if on_delete == "archive":
            parent, base = posixpath.split(directory)
            annotations[ANN_ARCHIVE_TO] = ARCHIVE_PREFIX + directory if csi else posixpath.join(parent, ARCHIVE_PREFIX + base)
        return ProvisionResult.finished({"nfs": {"server": server, "path": path}}, str(requested), annotations=annotations)

    # Deleting and recycling

    @staticmethod
    def _location(pv: dict[str, Any]) -> tuple[str, str, str] | None:
        """(server, share, directory relative to it) of a PV this provisioner made."""
        source = (pv.get("spec") or {}).get("nfs") or {}
        annotations = (pv.get("metadata") or {}).get("annotations") or {}
        server, path, share = source.get("server"), source.get("path"), annotations.get(ANN_SHARE)
        if not (server and path and share):
            return None
        path, share = _norm(path), _norm(share)
        if not path.startswith(share.rstrip("/") + "/"):
            return None
        return str(server), share, path[len(share.rstrip("/")) + 1:]

    def delete(self, pv: dict[str, Any]) -> None:
        if not self.owns(pv):
            return
        name = (pv.get("metadata") or {}).get("name")
        location = self._location(pv)
        if location is None:
            log.warning("nfs_subdir.delete_refused", volume=name, reason="no nfs path under the recorded export")
            return
        server, share, directory = location
        action = ((pv.get("metadata") or {}).get("annotations") or {}).get(ANN_ON_DELETE, "delete")
        if action == "retain":
            log.info("nfs_subdir.retained", volume=name, directory=directory)
            return
        tree = self._open(server, share)
        try:
            if action == "archive":
                archived = self._archive_target(pv, directory)
                if tree.exists(directory):
                    if tree.exists(archived):  # archived once before (a name reused): keep both
                        archived = f"{archived}-{name}"
                    if posixpath.dirname(archived):
                        tree.makedirs(posixpath.dirname(archived), 0o777)
                    tree.rename(directory, archived)
                    log.info("nfs_subdir.archived", volume=name, directory=directory, archived=archived)
            else:
                tree.remove_tree(directory)
                log.info("nfs_subdir.deleted", volume=name, directory=directory)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            raise self._backend_error(server, f"cannot {action} directory {directory} on export {share}", exc) from None
        finally:
            tree.close()

    @staticmethod
    def _archive_target(pv: dict[str, Any], directory: str) -> str:
        """Where the directory goes on archive, as recorded at provision time (nfs-subdir: beside it;
        csi-driver-nfs: ``archived-<subDir>`` at the export's root). Never outside the export."""
        recorded = ((pv.get("metadata") or {}).get("annotations") or {}).get(ANN_ARCHIVE_TO, "")
        parent, base = posixpath.split(directory)
        default = posixpath.join(parent, ARCHIVE_PREFIX + base)
        try:
            return _safe_relative(recorded, ANN_ARCHIVE_TO) or default
        except PermanentError:
            return default

    def expand(self, pv: dict[str, Any], new_size: int) -> int:
        return new_size  # a directory has no size of its own

    def can_recycle(self, pv: dict[str, Any]) -> bool:
        source = (pv.get("spec") or {}).get("nfs") or {}
        return bool(source.get("server") and source.get("path"))

    def recycle(self, pv: dict[str, Any]) -> None:
        """Empty the volume's directory, as Kubernetes' recycler pod (``rm -rf /scrub/..?* /scrub/.[!.]* /scrub/*``)."""
        source = (pv.get("spec") or {}).get("nfs") or {}
        server, path = str(source.get("server") or ""), _norm(str(source.get("path") or ""))
        if not server or not source.get("path"):
            raise PermanentError("volume has no nfs server and path to recycle")
        location = self._location(pv)
        if location is not None:
            tree, inside = self._open(location[0], location[1]), location[2]
        else:
            tree, inside = self._open_containing(server, path)
        if inside and not tree.exists(inside):
            tree.close()
            raise TemporaryError(f"NFS server {server}: cannot scrub {path}: no such directory", delay=30.0)
        try:
            tree.remove_tree(inside, keep_top=True)
        except OSError as exc:
            raise self._backend_error(server, f"cannot scrub {path}", exc) from None
        finally:
            tree.close()
        log.info("nfs_subdir.recycled", volume=(pv.get("metadata") or {}).get("name"), server=server, path=path)

    def _open_containing(self, server: str, path: str) -> tuple[ExportTree, str]:
        """A static PV names only a path: mount it, or the nearest parent the server exports."""
        candidate, first_error = path, None
        while True:
            try:
                tree = self._open(server, candidate)
                return tree, posixpath.relpath(path, candidate) if path != candidate else ""
            except TemporaryError as exc:
                first_error = first_error or exc  # the volume's own path: the error worth reporting
            if candidate == "/":
                raise first_error
            candidate = posixpath.dirname(candidate)
