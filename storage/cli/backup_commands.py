"""``stowage backup create|list|restore|delete`` and ``stowage snapshot import``: backups of claims to object
storage, as VolumeSnapshots of a class whose driver is ``backup.stowage.io`` (SEMANTICS BC1-BC11).

Everything goes through the API (``Session``); the only other thing touched is the object store in
``snapshot import``, which reads the backup's manifest to learn its size and to prove the handle is right.
``stowage backup FILE`` (a copy of the control plane's own store) still works: a first argument that is not
one of the subcommands goes to ``backup store``.
"""
from __future__ import annotations

import base64
import hashlib
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

import click

from storage.api.quantity import format_quantity, parse_quantity
from storage.api.registry import by_plural
from storage.api.timestamps import format_time
from storage.cli import tables
from storage.cli.context import global_options, session
from storage.cli.errors import CommandError
from storage.cli.maintenance import backup_command as store_backup_command
from storage.errors import AlreadyExists, NotFound, StowageError

BACKUP_DRIVER = "backup.stowage.io"  # provisioners.base.BACKUP_DRIVER; the CLI does not load drivers
SNAPSHOT_API = "snapshot.storage.k8s.io/v1"
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
SECRET_NAME_KEY = "csi.storage.k8s.io/snapshotter-secret-name"
SECRET_NAMESPACE_KEY = "csi.storage.k8s.io/snapshotter-secret-namespace"
STORE_KEY = "store"
CLAIM_LABEL = "backup.stowage.io/claim"
STORE_SCHEMES = ("s3", "gs", "azblob")
_NAME_CHARS = re.compile(r"[^a-z0-9.-]+")

VS = by_plural("volumesnapshots")
VSC = by_plural("volumesnapshotcontents")
VSCLASS = by_plural("volumesnapshotclasses")
PVC = by_plural("persistentvolumeclaims")
SECRET = by_plural("secrets")
assert VS and VSC and VSCLASS and PVC and SECRET


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _store_shown(url: str) -> str:
    """A store URL as listed: scheme://bucket/prefix (the query names only an endpoint and a region)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def check_store_url(url: str, flag: str = "--to") -> None:
    parts = urlsplit(url)
    if parts.scheme not in STORE_SCHEMES or not parts.netloc:
        raise CommandError(f"{flag}: {_store_shown(url)!r} is not an object store URL: use s3://BUCKET/PREFIX, "
                           "gs://BUCKET/PREFIX or azblob://CONTAINER/PREFIX (optionally ?endpoint=...)")
    if parts.username or parts.password:
        raise CommandError(f"{flag}: credentials do not belong in the URL; name a Secret with --secret")


def _require_secret(name: str, namespace: str) -> dict[str, Any]:
    try:
        return session().get(SECRET, namespace, name)
    except NotFound:
        raise CommandError(f'--secret: secret "{name}" not found in namespace "{namespace}"') from None


def ensure_backup_class(store_url: str, secret: str, namespace: str) -> str:
    """The VolumeSnapshotClass for (store, Secret): an existing one with exactly these parameters, else a new
    ``backup-<hash>`` (BC3). Its deletionPolicy is Delete: deleting the backup deletes its data."""
    sess = session()
    wanted = {STORE_KEY: store_url, SECRET_NAME_KEY: secret, SECRET_NAMESPACE_KEY: namespace}
    for cls in sorted(sess.list(VSCLASS, "")[0], key=lambda c: str(_meta(c).get("name"))):
        if cls.get("driver") == BACKUP_DRIVER and (cls.get("parameters") or {}) == wanted:
            return str(_meta(cls)["name"])
    name = "backup-" + hashlib.sha256(f"{store_url}\n{namespace}/{secret}".encode()).hexdigest()[:10]
    body = {"apiVersion": SNAPSHOT_API, "kind": "VolumeSnapshotClass",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "stowage-cli"}},
            "driver": BACKUP_DRIVER, "deletionPolicy": "Delete", "parameters": wanted}
    try:
        sess.create(VSCLASS, body, "")
        click.echo(f"volumesnapshotclass.{SNAPSHOT_GROUP}/{name} created")
    except AlreadyExists:
        existing = sess.get(VSCLASS, "", name)
        if existing.get("driver") != BACKUP_DRIVER or (existing.get("parameters") or {}) != wanted:
            raise CommandError(f"volumesnapshotclass {name} exists with other parameters; name a class with --class")
    return name


def _backup_classes() -> dict[str, dict[str, Any]]:
    return {str(_meta(c).get("name")): c for c in session().list(VSCLASS, "")[0] if c.get("driver") == BACKUP_DRIVER}


def _backup_store(snapshot: dict[str, Any], classes: dict[str, dict[str, Any]],
                  contents: dict[str, dict[str, Any]]) -> str | None:
    """The store a snapshot's backup lives in, or None when the snapshot is not a backup."""
    content = _content_of(snapshot, contents)
    if content is not None and (content.get("spec") or {}).get("driver") == BACKUP_DRIVER:
        handle = (content.get("status") or {}).get("snapshotHandle") or \
            ((content.get("spec") or {}).get("source") or {}).get("snapshotHandle")
        if handle:
            return _store_shown(str(handle))
    cls = classes.get(str((snapshot.get("spec") or {}).get("volumeSnapshotClassName") or ""))
    if cls is not None:
        return _store_shown(str((cls.get("parameters") or {}).get(STORE_KEY) or ""))
    if content is not None and (content.get("spec") or {}).get("driver") == BACKUP_DRIVER:
        return ""
    return None


def _content_of(snapshot: dict[str, Any], contents: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    status, spec = snapshot.get("status") or {}, snapshot.get("spec") or {}
    return contents.get(str(status.get("boundVolumeSnapshotContentName") or "")) or \
        contents.get(str((spec.get("source") or {}).get("volumeSnapshotContentName") or ""))


def size_of(snapshot: dict[str, Any], contents: dict[str, dict[str, Any]]) -> str | None:
    """The snapshot's restoreSize, else its content's (bytes) while the snapshot controller has not copied it."""
    size = (snapshot.get("status") or {}).get("restoreSize")
    if size:
        return str(size)
    content = _content_of(snapshot, contents)
    raw = ((content or {}).get("status") or {}).get("restoreSize")
    return format_quantity(int(raw), prefer_binary=True) if isinstance(raw, int) and raw > 0 else None


def _wait(plural: str, namespace: str, name: str, check: Callable[[dict[str, Any]], str | None],
          timeout: float, what: str) -> dict[str, Any]:
    """Watch one object until ``check`` says "ok" (returns it) or an error message (raised); at most
    ``timeout`` seconds. A watch, not a polling loop: each change is looked at as it happens."""
    sess = session()
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommandError(f"timed out after {int(timeout)}s waiting for {what}")
        for event in sess.client.watch(plural, namespace=namespace, field_selector=f"metadata.name={name}",
                                       timeout=remaining):
            if event.get("type") == "DELETED":
                raise CommandError(f"{what}: the object was deleted")
            last = event.get("object") or {}
            verdict = check(last)
            if verdict == "ok":
                return last
            if verdict:
                raise CommandError(f"{what}: {verdict}")
            if time.monotonic() >= deadline:
                break


def _snapshot_ready(snap: dict[str, Any]) -> str | None:
    status = snap.get("status") or {}
    if status.get("readyToUse") is True:
        return "ok"
    error = (status.get("error") or {}).get("message")
    # The snapshot controller keeps retrying; --wait stops at the first error so the user sees it now.
    return f"failed: {error} (the snapshot controller keeps retrying)" if error else None


def _duration(text: str) -> float:
    from storage.api.backup_schedule import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise CommandError(f"--timeout: {exc}") from None


class _BackupGroup(click.Group):
    """``backup FILE`` (the store) keeps working next to the subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["store", *args]
        return super().parse_args(ctx, args)


@click.group("backup", cls=_BackupGroup)
def backup_group() -> None:
    """Back up claims to object storage, list, restore and delete the backups.

    A backup is a VolumeSnapshot whose class has the driver backup.stowage.io;
    the data goes to S3, GCS or Azure Blob. `stowage backup FILE` (or
    `stowage backup store FILE`) copies Stowage's own store instead.
    """


backup_group.add_command(store_backup_command, "store")


@backup_group.command("create")
@click.argument("claim")
@click.option("--class", "class_name", metavar="VSCLASS", help="A VolumeSnapshotClass with driver backup.stowage.io.")
@click.option("--to", "store_url", metavar="STORE_URL",
              help="s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or azblob://CONTAINER/PREFIX (?endpoint=... for a "
                   "private server); a class for it is made or reused.")
@click.option("--secret", metavar="NAME", help="With --to: the Secret (in the claim's namespace) holding the store's "
                                                "credentials.")
@click.option("--name", "backup_name", metavar="NAME", help="The backup's name (default CLAIM-yyyymmddhhmmss).")
@click.option("--wait", is_flag=True, help="Wait until the backup is ready to use.")
@click.option("--timeout", default="30m", show_default=True, help="How long --wait waits.")
@global_options
def create_backup(claim: str, class_name: str | None, store_url: str | None, secret: str | None,
                  backup_name: str | None, wait: bool, timeout: str) -> None:
    """Back up CLAIM: a VolumeSnapshot of it in a backup class."""
    sess = session()
    namespace = sess.options.namespace
    if bool(class_name) == bool(store_url):
        raise CommandError("give exactly one of --class VSCLASS or --to STORE_URL --secret NAME")
    if store_url and not secret:
        raise CommandError("--to needs --secret NAME: the Secret with the store's credentials")
    if secret and not store_url:
        raise CommandError("--secret goes with --to; a class names its own Secret")
    wait_seconds = _duration(timeout) if wait else 0.0
    sess.get(PVC, namespace, claim)  # NotFound is the server's message: persistentvolumeclaims "x" not found
    if store_url:
        check_store_url(store_url)
        assert secret is not None
        _require_secret(secret, namespace)
        class_name = ensure_backup_class(store_url, secret, namespace)
    else:
        assert class_name is not None
        cls = sess.get(VSCLASS, "", class_name)
        if cls.get("driver") != BACKUP_DRIVER:
            raise CommandError(f"--class: volumesnapshotclass {class_name} has driver {cls.get('driver')!r}, not "
                               f"{BACKUP_DRIVER}: that makes a snapshot, not a backup")
    name = backup_name or f"{claim}-{datetime.now(timezone.utc):%Y%m%d%H%M%S}"
    body = {"apiVersion": SNAPSHOT_API, "kind": "VolumeSnapshot",
            "metadata": {"name": name, "labels": {CLAIM_LABEL: claim if len(claim) <= 63 else claim[:63].rstrip("-.")}},
            "spec": {"volumeSnapshotClassName": class_name, "source": {"persistentVolumeClaimName": claim}}}
    sess.create(VS, body, namespace)
    click.echo(f"volumesnapshot.{SNAPSHOT_GROUP}/{name} created")
    if wait:
        done = _wait("volumesnapshots", namespace, name, _snapshot_ready, wait_seconds, f"backup {name}")
        size = (done.get("status") or {}).get("restoreSize") or "?"
        click.echo(f"volumesnapshot.{SNAPSHOT_GROUP}/{name} ready ({size})")


@backup_group.command("list")
@click.option("--no-headers", is_flag=True, help="Omit the table header.")
@global_options
def list_backups(no_headers: bool) -> None:
    """List backups: NAME, CLAIM, READY, SIZE, CREATED, STORE (-A: every namespace)."""
    sess = session()
    everywhere = sess.options.all_namespaces
    classes = _backup_classes()
    contents = {str(_meta(c).get("name")): c for c in sess.list(VSC, "")[0]}
    snapshots = sess.list(VS, None if everywhere else sess.options.namespace)[0]
    rows = []
    for snap in sorted(snapshots, key=lambda s: (_meta(s).get("namespace") or "", _meta(s).get("name") or "")):
        store = _backup_store(snap, classes, contents)
        if store is None:
            continue
        spec, status = snap.get("spec") or {}, snap.get("status") or {}
        claim = str((spec.get("source") or {}).get("persistentVolumeClaimName") or "<imported>")
        ready = status.get("readyToUse")
        row = [str(_meta(snap).get("name")), claim, "true" if ready is True else "false",
               size_of(snap, contents) or "<unknown>",
               str(status.get("creationTime") or _meta(snap).get("creationTimestamp") or ""), store or "<unknown>"]
        rows.append([str(_meta(snap).get("namespace") or ""), *row] if everywhere else row)
    if not rows:
        where = "" if everywhere else f" in {sess.options.namespace} namespace"
        click.echo(f"No backups found{where}.", err=True)
        return
    headers = ["NAME", "CLAIM", "READY", "SIZE", "CREATED", "STORE"]
    click.echo(tables.render(["NAMESPACE", *headers] if everywhere else headers, rows, no_headers), nl=False)


def _is_backup(snap: dict[str, Any]) -> bool:
    contents: dict[str, dict[str, Any]] = {}
    bound = str((snap.get("status") or {}).get("boundVolumeSnapshotContentName") or
                ((snap.get("spec") or {}).get("source") or {}).get("volumeSnapshotContentName") or "")
    if bound:
        try:
            contents[bound] = session().get(VSC, "", bound)
        except NotFound:
            pass
    return _backup_store(snap, _backup_classes(), contents) is not None


@backup_group.command("restore")
@click.argument("backup")
@click.option("--claim", "new_claim", required=True, metavar="NEWCLAIM", help="The claim to create.")
@click.option("--storage-class", "storage_class", metavar="SC",
              help="Its StorageClass (default: the backed-up claim's, else the default class).")
@click.option("--size", metavar="S", help="Its size, at least the backup's (default: the backup's).")
@click.option("--wait", is_flag=True, help="Wait until the claim is Bound.")
@click.option("--timeout", default="30m", show_default=True, help="How long --wait waits.")
@global_options
def restore_backup(backup: str, new_claim: str, storage_class: str | None, size: str | None, wait: bool,
                   timeout: str) -> None:
    """Restore BACKUP into a new claim: a PVC whose dataSource is the VolumeSnapshot."""
    sess = session()
    namespace = sess.options.namespace
    wait_seconds = _duration(timeout) if wait else 0.0
    snap = sess.get(VS, namespace, backup)
    contents: dict[str, dict[str, Any]] = {}
    content_name = str(((snap.get("spec") or {}).get("source") or {}).get("volumeSnapshotContentName") or
                       (snap.get("status") or {}).get("boundVolumeSnapshotContentName") or "")
    if content_name:
        try:
            contents[content_name] = sess.get(VSC, "", content_name)
        except NotFound:
            pass
    restore_size = size_of(snap, contents)
    if size is not None:
        try:
            wanted = parse_quantity(size)
        except (ValueError, TypeError):
            raise CommandError(f"--size: {size!r} is not a quantity such as 10Gi") from None
        if restore_size and wanted < parse_quantity(str(restore_size)):
            raise CommandError(f"--size: {size} is smaller than the backup ({restore_size})")
    elif restore_size:
        size = str(restore_size)
    else:
        raise CommandError(f"backup {backup} has no size yet (is it ready?); give --size")
    source_claim: dict[str, Any] = {}
    source_name = ((snap.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")
    if source_name:
        try:
            source_claim = sess.get(PVC, namespace, str(source_name))
        except NotFound:
            source_claim = {}
    source_spec = source_claim.get("spec") or {}
    spec: dict[str, Any] = {
        "accessModes": list(source_spec.get("accessModes") or ["ReadWriteOnce"]),
        "resources": {"requests": {"storage": size}},
        "dataSource": {"apiGroup": SNAPSHOT_GROUP, "kind": "VolumeSnapshot", "name": backup},
    }
    chosen_class = storage_class or source_spec.get("storageClassName")
    if chosen_class:
        spec["storageClassName"] = chosen_class
    if source_spec.get("volumeMode"):
        spec["volumeMode"] = source_spec["volumeMode"]
    body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": new_claim}, "spec": spec}
    sess.create(PVC, body, namespace)
    click.echo(f"persistentvolumeclaim/{new_claim} created")
    if wait:
        def bound(claim: dict[str, Any]) -> str | None:
            phase = (claim.get("status") or {}).get("phase")
            return "ok" if phase == "Bound" else ("the claim was lost" if phase == "Lost" else None)

        _wait("persistentvolumeclaims", namespace, new_claim, bound, wait_seconds, f"claim {new_claim}")
        click.echo(f"persistentvolumeclaim/{new_claim} bound")


@backup_group.command("delete")
@click.argument("backups", nargs=-1, required=True)
@global_options
def delete_backup(backups: tuple[str, ...]) -> None:
    """Delete backups (VolumeSnapshots of a backup class); with the class's Delete policy the data goes too."""
    sess = session()
    namespace = sess.options.namespace
    for name in backups:
        snap = sess.get(VS, namespace, name)
        if not _is_backup(snap):
            raise CommandError(f"volumesnapshot {name} is not a backup (its class's driver is not {BACKUP_DRIVER}); "
                               f"use `stowage delete volumesnapshot {name}`")
        sess.delete(VS, namespace, name)
        click.echo(f'volumesnapshot.{SNAPSHOT_GROUP} "{name}" deleted')


# --- snapshot import ---------------------------------------------------------------------------------------


def _secret_data(secret: dict[str, Any]) -> dict[str, str]:
    out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    out.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return out


def imported_name(backup_id: str) -> str:
    """A VolumeSnapshot name for a backup id: lower case, [a-z0-9.-], at most 253, alphanumeric at both ends."""
    name = _NAME_CHARS.sub("-", backup_id.lower()).strip("-.")[:200].strip("-.")
    return name or "imported-" + hashlib.sha256(backup_id.encode()).hexdigest()[:10]


@click.group("snapshot")
def snapshot_group() -> None:
    """Snapshots across clusters."""


@snapshot_group.command("import")
@click.argument("handle")
@click.option("--secret", required=True, metavar="NAME", help="The Secret (in the namespace) with the store's "
                                                                "credentials.")
@click.option("--name", "snapshot_name", metavar="N", help="The VolumeSnapshot's name (default: from the backup id).")
@global_options
def import_snapshot(handle: str, secret: str, snapshot_name: str | None) -> None:
    """Make a backup another cluster wrote (HANDLE = STORE_URL#BACKUP_ID) a VolumeSnapshot here.

    The manifest is read from the store (its size, and proof the handle is
    right); then a pre-provisioned VolumeSnapshotContent (deletionPolicy Retain:
    deleting it here never deletes the other cluster's data) and a
    VolumeSnapshot bound to it are created.
    """
    sess = session()
    namespace = sess.options.namespace
    if "#" not in handle:
        raise CommandError("HANDLE: expected STORE_URL#BACKUP_ID (a backup's snapshotHandle)")
    try:
        from storage.system.backupstore import open_store, parse_backup_url, read_manifest
    except ImportError as exc:
        raise CommandError(f"the backup engine is not installed: {exc}") from None
    try:
        store_url, backup_id = parse_backup_url(handle)
    except StowageError as exc:
        raise CommandError(f"HANDLE: {exc.message or exc}") from None
    check_store_url(store_url, "HANDLE")
    credentials = _secret_data(_require_secret(secret, namespace))
    try:
        manifest = read_manifest(open_store(store_url, credentials), backup_id)
    except NotFound:
        raise CommandError(f"HANDLE: there is no backup {backup_id!r} in {_store_shown(store_url)}") from None
    except StowageError as exc:  # unreachable store, refused credentials, a corrupt manifest: said by the engine
        raise CommandError(f"HANDLE: cannot read backup {backup_id!r} from {_store_shown(store_url)}: "
                           f"{exc.message or exc}") from None
    class_name = ensure_backup_class(store_url, secret, namespace)
    name = snapshot_name or imported_name(backup_id)
    content_name = "snapcontent-imported-" + hashlib.sha256(f"{handle}\n{namespace}/{name}".encode()).hexdigest()[:20]
    content = {
        "apiVersion": SNAPSHOT_API, "kind": "VolumeSnapshotContent", "metadata": {"name": content_name},
        "spec": {"driver": BACKUP_DRIVER, "deletionPolicy": "Retain", "volumeSnapshotClassName": class_name,
                 "source": {"snapshotHandle": handle},
                 "volumeSnapshotRef": {"apiVersion": SNAPSHOT_API, "kind": "VolumeSnapshot", "name": name,
                                       "namespace": namespace}},
    }
    try:
        made = sess.create(VSC, content, "")
        click.echo(f"volumesnapshotcontent.{SNAPSHOT_GROUP}/{content_name} created")
        # What the external-snapshotter learns from the driver for a static content; the manifest says it.
        made["status"] = {"snapshotHandle": handle, "readyToUse": True, "restoreSize": int(manifest.size),
                          "creationTime": int(float(manifest.created) * 1_000_000_000)}
        sess.client.update_status({**made, "kind": "VolumeSnapshotContent"})
    except AlreadyExists:
        existing = sess.get(VSC, "", content_name)
        if ((existing.get("spec") or {}).get("source") or {}).get("snapshotHandle") != handle:
            raise CommandError(f"volumesnapshotcontent {content_name} exists for another backup") from None
    snapshot = {"apiVersion": SNAPSHOT_API, "kind": "VolumeSnapshot", "metadata": {"name": name},
                "spec": {"volumeSnapshotClassName": class_name, "source": {"volumeSnapshotContentName": content_name}}}
    try:
        sess.create(VS, snapshot, namespace)
    except AlreadyExists:
        existing = sess.get(VS, namespace, name)
        if ((existing.get("spec") or {}).get("source") or {}).get("volumeSnapshotContentName") != content_name:
            raise CommandError(f"volumesnapshot {name} already exists in {namespace}; choose another --name") from None
    size = format_quantity(int(manifest.size), prefer_binary=True)
    created = format_time(datetime.fromtimestamp(float(manifest.created), timezone.utc))
    click.echo(f"volumesnapshot.{SNAPSHOT_GROUP}/{name} imported ({size}, taken {created}, from "
               f"{_store_shown(store_url)})")
