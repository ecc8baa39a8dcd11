"""Commands that change objects: apply, create, delete, patch, label, annotate."""
from __future__ import annotations

import copy
import time
from typing import Any, Callable

import click
import yaml

from storage.api.limits import LimitExceeded, load_yaml
from storage.api.registry import ResourceInfo
from storage.cli.context import Failures, global_options, resolve_kind, session, split_kind_names
from storage.cli.edits import EditError, applied, edit_map, parse_key_values, same_object
from storage.cli.errors import CommandError
from storage.cli.manifests import Manifest, read_manifests, resource_for
from storage.cli.output import object_ref, type_name
from storage.errors import AlreadyExists, Conflict, Gone, NotFound, StowageError

# Enough for any realistic burst of concurrent writers; each attempt re-reads the object.
CONFLICT_RETRIES = 8
# A waiting delete's watch ends this often (server side) and reads the object again.
WAIT_WATCH_SECONDS = 60


def _target(manifest: Manifest) -> tuple[ResourceInfo, dict[str, Any], str]:
    """Resource, object and namespace a manifest is written to (the -n flag fills a missing namespace)."""
    info = resource_for(manifest)
    opts = session().options
    obj = copy.deepcopy(manifest.obj)
    meta = obj.setdefault("metadata", {})
    if not info.namespaced:
        meta.pop("namespace", None)
        return info, obj, ""
    own = meta.get("namespace")
    if own and opts.namespace_explicit and own != opts.namespace:
        raise CommandError(
            f'the namespace from the provided object "{own}" does not match the namespace "{opts.namespace}". '
            f"You must pass '--namespace={own}' to perform this operation."
        )
    namespace = own or opts.namespace
    meta["namespace"] = namespace
    return info, obj, namespace


def _manifests(files: tuple[str, ...], recursive: bool) -> list[Manifest]:
    if not files:
        raise CommandError("must specify one of -f and -k")
    return read_manifests(files, recursive)


def apply_one(info: ResourceInfo, obj: dict[str, Any], namespace: str) -> tuple[str, dict[str, Any]]:
    """Create or merge-update one object; returns ("created" | "configured" | "unchanged", the object)."""
    sess = session()
    name = obj["metadata"].get("name")
    for _ in range(CONFLICT_RETRIES):
        existing: dict[str, Any] | None = None
        if name:
            try:
                existing = sess.get(info, namespace, name)
            except NotFound:
                existing = None
        if existing is None:
            try:
                return "created", sess.create(info, obj, namespace)
            except AlreadyExists:
                continue  # created by someone else meanwhile: merge into theirs
        wanted = applied(existing, obj)
        if same_object(wanted, existing):
            return "unchanged", existing
        try:
            return "configured", sess.update(info, wanted, namespace)
        except Conflict:
            continue
    raise Conflict(f'{info.plural} "{name}": changed by others {CONFLICT_RETRIES} times in a row; try again')


@click.command("apply")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR|-", help="Manifests to apply.")
@click.option("-R", "--recursive", is_flag=True, help="Read directories recursively.")
@click.option("-o", "--output", type=click.Choice(["name"]), help="Print only kind/name.")
@global_options
def apply_command(files: tuple[str, ...], recursive: bool, output: str | None) -> None:
    """Create objects, or update them to match the manifests."""
    failures = Failures()
    for manifest in _manifests(files, recursive):
        info, obj, namespace = _target(manifest)
        try:
            outcome, result = apply_one(info, obj, namespace)
        except StowageError as err:
            failures.server(err, f'error when applying "{manifest.source}"')
            continue
        ref = object_ref(result if result.get("metadata", {}).get("name") else obj, info)
        click.echo(ref if output == "name" else f"{ref} {outcome}")
    failures.exit_if_any()


@click.command("create")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR|-", help="Manifests to create.")
@click.option("-R", "--recursive", is_flag=True)
@click.option("-o", "--output", type=click.Choice(["name"]))
@global_options
def create_command(files: tuple[str, ...], recursive: bool, output: str | None) -> None:
    """Create objects from manifests; an existing object is an error."""
    failures = Failures()
    sess = session()
    for manifest in _manifests(files, recursive):
        info, obj, namespace = _target(manifest)
        try:
            result = sess.create(info, obj, namespace)
        except StowageError as err:
            failures.server(err, f'error when creating "{manifest.source}"')
            continue
        ref = object_ref(result, info)
        click.echo(ref if output == "name" else f"{ref} created")
    failures.exit_if_any()


IMMEDIATE_DELETION_WARNING = ("Warning: Immediate deletion does not wait for confirmation that the running resource "
                              "has been terminated. The resource may continue to run on the cluster indefinitely.")


def delete_grace_period(grace_period: int, force: bool, now: bool) -> int | None:
    """kubectl's rules for ``--grace-period``, ``--force`` and ``--now`` (G5): the seconds to send, None for
    the object's own. 0 needs ``--force`` (without it 0 becomes 1); ``--force`` alone means 0."""
    if now:
        if grace_period != -1:
            raise CommandError("--now and --grace-period cannot be specified together")
        grace_period = 1
    if grace_period == 0 and not force:
        grace_period = 1  # kubectl's guard against an accidental immediate deletion
    if force and grace_period < 0:
        grace_period = 0
    if force and grace_period > 0:
        raise CommandError("--force and --grace-period greater than 0 cannot be specified together")
    return None if grace_period < 0 else grace_period


@click.command("delete")
@click.argument("args", nargs=-1)
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR|-")
@click.option("-R", "--recursive", is_flag=True)
@click.option("-l", "--selector", help="Delete the objects matching this label selector.")
@click.option("--all", "all_", is_flag=True, help="Delete every object of the kind in the namespace.")
@click.option("--ignore-not-found", is_flag=True, help="A missing object is not an error.")
@click.option("--grace-period", type=int, default=-1, show_default=True,
              help="Seconds a pod gets to stop (SIGTERM, then SIGKILL); -1: the pod's own; 0 needs --force.")
@click.option("--force", is_flag=True,
              help="With --grace-period 0 (the default with --force): remove at once, without waiting for the node.")
@click.option("--now", is_flag=True, help="Same as --grace-period=1: stop at once.")
@click.option("--wait", type=click.BOOL, default=True, is_flag=False, flag_value=True, show_default=True,
              help="Wait until the objects are gone (--wait=false returns at once).")
@click.option("--timeout", default="0s", show_default=True, help="Give up waiting after this long (0: no limit).")
@global_options
def delete_command(args: tuple[str, ...], files: tuple[str, ...], recursive: bool, selector: str | None,
                   all_: bool, ignore_not_found: bool, grace_period: int, force: bool, now: bool, wait: bool,
                   timeout: str) -> None:
    """Delete objects by name, by manifest, by label selector or all of a kind."""
    from storage.cli.workload_commands import parse_duration

    grace = delete_grace_period(grace_period, force, now)
    limit = parse_duration(timeout)
    if grace == 0:
        click.echo(IMMEDIATE_DELETION_WARNING, err=True)
    sess = session()
    failures = Failures()
    targets: list[tuple[ResourceInfo, str, str]] = []
    if files:
        if args:
            raise CommandError("pass either -f or KIND [NAME...], not both")
        for manifest in _manifests(files, recursive):
            info, obj, namespace = _target(manifest)
            targets.append((info, namespace, obj["metadata"].get("name", "")))
    else:
        for info, names in split_kind_names(args):
            namespace = sess.namespace_for(info)
            if names:
                if selector or all_:
                    raise CommandError("name cannot be provided when a selector or --all is specified")
                targets.extend((info, namespace, n) for n in names)
                continue
            if not (selector or all_):
                raise CommandError("resource(s) were provided, but no name was specified (use --all or -l)")
            scope = None if (info.namespaced and sess.options.all_namespaces) else namespace
            items, _ = sess.list(info, scope, selector)
            targets.extend((info, (i.get("metadata") or {}).get("namespace") or "", i["metadata"]["name"]) for i in items)
            if not items:
                click.echo("No resources found", err=True)
    deleted: list[tuple[ResourceInfo, str, str, str]] = []
    for info, namespace, name in targets:
        try:
            last = sess.delete(info, namespace, name, grace)
        except NotFound as err:
            if not ignore_not_found:
                failures.server(err)
            continue
        except StowageError as err:
            failures.server(err)
            continue
        deleted.append((info, namespace, name, str((last.get("metadata") or {}).get("uid") or "")))
        click.echo(f'{type_name(info)} "{name}" {"force deleted" if grace == 0 else "deleted"}')
    if wait:
        deadline = time.monotonic() + limit if limit > 0 else None
        for info, namespace, name, uid in deleted:
            if not _wait_deleted(sess, info, namespace, name, uid, deadline):
                failures.local(f"timed out waiting for the condition on {info.plural}/{name}")
    failures.exit_if_any()


def _wait_deleted(sess: Any, info: ResourceInfo, namespace: str, name: str, uid: str, deadline: float | None) -> bool:
    """Until the object (that uid) is gone, as kubectl's --wait: a read, then a watch from it."""
    while True:
        try:
            current = sess.get(info, namespace, name)
        except NotFound:
            return True
        if uid and (current.get("metadata") or {}).get("uid") != uid:
            return True  # a new object under the same name: ours is gone
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        try:
            for event in sess.client.watch(info.plural, namespace=namespace or None,
                                           resource_version=current["metadata"].get("resourceVersion"),
                                           field_selector=f"metadata.name={name}",
                                           timeout=WAIT_WATCH_SECONDS if left is None else min(left, WAIT_WATCH_SECONDS)):
                gone = (event.get("object") or {}).get("metadata") or {}
                if event.get("type") == "DELETED" and (not uid or gone.get("uid") == uid):
                    return True
        except Gone:
            continue  # compacted: read again


def _kind_and_name(kind: str, name: str | None) -> tuple[ResourceInfo, str]:
    if name is None and "/" in kind:
        kind, _, name = kind.partition("/")
    if not name:
        raise CommandError("you must specify a name")
    return resolve_kind(kind), name


@click.command("patch")
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-p", "--patch", "patch_text", required=True, help="The patch, as JSON (or YAML).")
@click.option("--type", "patch_type", type=click.Choice(["strategic", "merge", "json"]), default="strategic",
              show_default=True)
@global_options
def patch_command(kind: str, name: str | None, patch_text: str, patch_type: str) -> None:
    """Change fields of one object with a merge, JSON or strategic merge patch."""
    info, name = _kind_and_name(kind, name)
    try:
        body = load_yaml(patch_text)  # JSON is YAML; kubectl takes both
    except LimitExceeded as exc:
        raise CommandError(f"--patch: {exc}") from None
    except yaml.YAMLError as exc:
        raise CommandError(f"--patch: not valid JSON or YAML: {str(exc).splitlines()[0]}") from None
    if patch_type == "json" and not isinstance(body, list):
        raise CommandError("--patch: a json patch must be a list of operations")
    if patch_type != "json" and not isinstance(body, dict):
        raise CommandError("--patch: a merge patch must be a JSON object")
    sess = session()
    namespace = sess.namespace_for(info)
    before = sess.get(info, namespace, name)
    after = sess.patch(info, namespace, name, body, patch_type)
    unchanged = (after.get("metadata") or {}).get("resourceVersion") == (before.get("metadata") or {}).get("resourceVersion")
    click.echo(f"{type_name(info)}/{name} patched" + (" (no change)" if unchanged else ""))


def _edit_meta_command(field: str, what: str, past: str) -> Callable[..., None]:
    def command(args: tuple[str, ...], overwrite: bool, selector: str | None, all_: bool) -> None:
        if not args:
            raise CommandError("you must specify the type of resource")
        kinds_and_names = [a for a in args if "=" not in a and not a.endswith("-")]
        specs = [a for a in args if a not in kinds_and_names]
        if not specs:
            raise CommandError(f"at least one {what} update is required")
        try:
            sets, removes = parse_key_values(specs, what)
        except EditError as err:
            raise CommandError(str(err)) from None
        sess = session()
        failures = Failures()
        for info, names in split_kind_names(kinds_and_names):
            namespace = sess.namespace_for(info)
            if not names:
                if not (selector or all_):
                    raise CommandError("resource(s) were provided, but no name was specified (use --all or -l)")
                names = [i["metadata"]["name"] for i in sess.list(info, namespace or "", selector)[0]]
            for name in names:
                try:
                    changed = _edit_one(info, namespace, name, field, sets, removes, overwrite, what)
                except EditError as err:
                    failures.local(str(err))
                    continue
                except StowageError as err:
                    failures.server(err)
                    continue
                click.echo(f"{type_name(info)}/{name} {past if changed else 'not ' + past}")
        failures.exit_if_any()

    return command


def _edit_one(info: ResourceInfo, namespace: str, name: str, field: str, sets: dict[str, str],
              removes: list[str], overwrite: bool, what: str) -> bool:
    sess = session()
    for _ in range(CONFLICT_RETRIES):
        obj = sess.get(info, namespace, name)
        meta = obj.setdefault("metadata", {})
        new, changed = edit_map(meta.get(field), sets, removes, overwrite, what)
        if not changed:
            return False
        meta[field] = new
        try:
            sess.update(info, obj, namespace)
            return True
        except Conflict:
            continue
    raise Conflict(f'{info.plural} "{name}": changed by others {CONFLICT_RETRIES} times in a row; try again')


def _meta_command(name: str, field: str, what: str, past: str, help_text: str) -> click.Command:
    command = _edit_meta_command(field, what, past)
    command.__doc__ = help_text
    decorated = click.argument("args", nargs=-1)(command)
    decorated = click.option("--overwrite", is_flag=True, help=f"Allow replacing an existing {what} value.")(decorated)
    decorated = click.option("-l", "--selector", help="Objects matching this label selector.")(decorated)
    decorated = click.option("--all", "all_", is_flag=True, help="Every object of the kind.")(decorated)
    decorated = global_options(decorated)
    return click.command(name, help=help_text)(decorated)


label_command = _meta_command(
    "label", "labels", "label", "labeled",
    "Set (k=v) or remove (k-) labels: label KIND NAME k=v k2- [--overwrite].",
)
annotate_command = _meta_command(
    "annotate", "annotations", "annotation", "annotated",
    "Set (k=v) or remove (k-) annotations: annotate KIND NAME k=v k2- [--overwrite].",
)
