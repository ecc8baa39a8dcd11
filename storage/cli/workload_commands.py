"""Workload verbs: ``scale`` and ``rollout status|history|undo|restart|pause|resume``.

The arithmetic (status lines, history rows, the undo patch) lives in
``statefulset.cli_support`` for StatefulSets and ``storage.cli.deployment_support``
for Deployments; this module only reads, waits and prints.
"""
from __future__ import annotations

import queue
import re
import sys
import threading
import time
from typing import Any, Callable

import click

from statefulset import cli_support
from statefulset.revision import sort_revisions, template_of
from storage.api.registry import ResourceInfo, by_plural
from storage.api.timestamps import now
from storage.cli import deployment_support
from storage.cli.context import global_options, resolve_kind, session
from storage.cli.errors import CommandError
from storage.api.durations import duration_seconds
from storage.cli.output import dump_yaml, type_name
from storage.cli.session import Session
from storage.errors import BadRequest, Conflict, NotFound

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
SCALABLE = ("statefulsets", "replicasets", "replicationcontrollers", "deployments")
ROLLABLE = ("statefulsets", "deployments")
PAUSABLE = ("deployments",)
# A safety net under the watches: re-read the set this often even when no event arrives.
RESYNC_SECONDS = 30.0
# Each attempt re-reads the object; more than this many racing writers is not a realistic burst.
CONFLICT_RETRIES = 8

def parse_duration(value: str, flag: str = "--timeout") -> float:
    """Go's duration syntax (``5m``, ``1h30m``, ``90s``, ``0``) in seconds; a bare number is seconds."""
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        seconds = duration_seconds(text)
    except ValueError:
        raise CommandError(f'{flag}: invalid duration "{value}": use a number with a unit, e.g. 30s, 5m or 1h') from None
    if seconds < 0:
        raise CommandError(f'{flag}: invalid duration "{value}": must not be negative')
    return seconds


def _kind_and_name(args: tuple[str, ...], allowed: tuple[str, ...], verb: str) -> tuple[ResourceInfo, str]:
    """``sts NAME`` or ``sts/NAME``, restricted to the kinds the verb supports."""
    if len(args) == 1 and "/" in args[0]:
        kind, _, name = args[0].partition("/")
    elif len(args) == 2 and "/" not in args[0]:
        kind, name = args
    elif not args:
        raise CommandError("you must specify the type of resource and a name, e.g. sts/web or sts web")
    else:
        raise CommandError(f"expected one object as KIND NAME or KIND/NAME, got: {' '.join(args)}")
    info = resolve_kind(kind)
    if info.plural not in allowed:
        supported = ", ".join(p for p in allowed if by_plural(p) is not None)
        raise CommandError(f'{verb} is not supported for {info.plural}: supported kinds are {supported}')
    if not name:
        raise CommandError("you must specify a name")
    return info, name


# --- scale ------------------------------------------------------------------

@click.command("scale")
@click.argument("args", nargs=-1)
@click.option("--replicas", type=int, required=True, help="The new desired number of replicas.")
@click.option("--current-replicas", type=int, default=-1,
              help="Precondition: only scale if the current replica count is this.")
@global_options
def scale_command(args: tuple[str, ...], replicas: int, current_replicas: int) -> None:
    """Set the replica count of a Deployment, StatefulSet, ReplicaSet or ReplicationController: scale deploy NAME --replicas N."""
    info, name = _kind_and_name(args, SCALABLE, "scale")
    try:
        patch = cli_support.scale_patch(replicas)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    sess = session()
    namespace = sess.namespace_for(info)
    if current_replicas >= 0:
        current = sess.client.get(info.plural, name, namespace)
        have = (current.get("spec") or {}).get("replicas")
        have = 1 if have is None else int(have)
        if have != current_replicas:
            raise CommandError(f"Expected replicas to be {current_replicas}, was {have}")
        # The read and the write must see the same object, or the precondition means nothing.
        patch = {**patch, "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}}
    # Through /scale, as kubectl does: only the replica count is written.
    sess.client.patch(info.plural, name, patch, namespace=namespace, patch_type="merge", subresource="scale")
    click.echo(f"{type_name(info)}/{name} scaled")


# --- rollout ----------------------------------------------------------------

@click.group("rollout")
def rollout_command() -> None:
    """Watch, list, undo, restart, pause or resume the rollout of a Deployment or StatefulSet."""


def _statefulset(args: tuple[str, ...], verb: str,
                 allowed: tuple[str, ...] = ROLLABLE) -> tuple[Session, ResourceInfo, str, str]:
    info, name = _kind_and_name(args, allowed, f"rollout {verb}")
    sess = session()
    return sess, info, sess.namespace_for(info), name


def selector_string(selector: dict[str, Any] | None) -> str:
    """A LabelSelector object as the query-string form (``app=web,tier in (a,b)``)."""
    selector = selector or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms)


class _Progress:
    """kubectl's status lines: one per change on a pipe, one live line on a terminal."""

    def __init__(self) -> None:
        self._last = ""
        self._status: Any = None
        if sys.stdout.isatty():
            from rich.console import Console

            self._status = Console().status("")
            self._status.start()

    def show(self, message: str, final: bool = False) -> None:
        if self._status is not None and not final:
            self._status.update(message.rstrip("\n"))
            return
        if message != self._last:
            self.close()
            click.echo(message, nl=False)
            sys.stdout.flush()
            self._last = message

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _pump(changes: "queue.Queue[str]", stop: threading.Event, watch: Callable[[], Any], label: str) -> None:
    """Feed ``changes`` with a token per event until ``stop``; a broken or expired watch is reopened."""
    while not stop.is_set():
        try:
            for _ in watch():
                changes.put(label)
                if stop.is_set():
                    return
        except Exception:  # noqa: BLE001 - expired, refused or cut: all mean "reopen and re-read"
            pass
        changes.put(label)
        if stop.wait(1.0):  # a server that just went away is not hammered
            return


def _rollout_line(sts: dict[str, Any]) -> tuple[str, bool]:
    try:
        if sts.get("kind") == "Deployment":
            return deployment_support.rollout_status(sts)
        return cli_support.rollout_status(sts)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _open_watches(sess: Session, info: ResourceInfo, namespace: str, sts: dict[str, Any],
                  changes: "queue.Queue[str]", stop: threading.Event) -> None:
    from storage.client import Client
    from storage.client.kubeconfig import load_access

    name = sts["metadata"]["name"]
    pods = by_plural("pods")
    assert pods is not None
    # Own clients: a streaming watch holds its connection, and the main loop keeps reading meanwhile.
    access = load_access(sess.options.kubeconfig)
    selector = selector_string((sts.get("spec") or {}).get("selector"))

    def set_watch() -> Any:
        client = Client.from_access(access)
        return client.watch(info.plural, namespace=namespace, field_selector=f"metadata.name={name}")

    def pod_watch() -> Any:
        client = Client.from_access(access)
        return client.watch(pods.plural, namespace=namespace, label_selector=selector or None)

    for label, fn in (("set", set_watch), ("pods", pod_watch)):
        threading.Thread(target=_pump, args=(changes, stop, fn, label), name=f"rollout-watch-{label}",
                         daemon=True).start()


@rollout_command.command("status")
@click.argument("args", nargs=-1)
@click.option("-w", "--watch", type=bool, default=True, show_default=True,
              help="Wait until the rollout finishes (false: print the status once).")
@click.option("--timeout", default="0s", show_default=True,
              help="How long to wait before giving up (0: forever), e.g. 30s, 5m.")
@global_options
def rollout_status_command(args: tuple[str, ...], watch: bool, timeout: str) -> None:
    """Show the status of a Deployment's or StatefulSet's rollout, waiting until it completes."""
    limit = parse_duration(timeout)
    sess, info, namespace, name = _statefulset(args, "status")
    sts = sess.get(info, namespace, name)
    message, done = _rollout_line(sts)
    if done or not watch:
        click.echo(message, nl=False)
        return
    changes: "queue.Queue[str]" = queue.Queue()
    stop = threading.Event()
    # Watches first, then a fresh read: a change between the two is never missed.
    _open_watches(sess, info, namespace, sts, changes, stop)
    deadline = time.monotonic() + limit if limit > 0 else None
    progress = _Progress()
    try:
        progress.show(message)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise CommandError("timed out waiting for the condition")
            try:
                changes.get(timeout=RESYNC_SECONDS if remaining is None else min(remaining, RESYNC_SECONDS))
            except queue.Empty:
                pass
            while not changes.empty():  # a burst of events needs one read, not one per event
                changes.get_nowait()
            try:
                sts = sess.get(info, namespace, name)
            except NotFound:
                raise CommandError(f'{info.singular} "{name}" was deleted while waiting for its rollout') from None
            message, done = _rollout_line(sts)
            progress.show(message, final=done)
            if done:
                return
    finally:
        stop.set()
        progress.close()


def _revisions(sess: Session, namespace: str, sts: dict[str, Any]) -> list[dict[str, Any]]:
    """The set's ControllerRevisions: those it controls (by uid), found through its selector."""
    info = by_plural("controllerrevisions")
    assert info is not None
    selector = selector_string((sts.get("spec") or {}).get("selector"))
    items, _ = sess.list(info, namespace, selector or None)
    uid = sts["metadata"].get("uid")
    owned = []
    for rev in items:
        for ref in (rev.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "StatefulSet" and (
                ref.get("uid") == uid if uid and ref.get("uid") else ref.get("name") == sts["metadata"]["name"]
            ):
                owned.append(rev)
                break
    return owned


@rollout_command.command("history")
@click.argument("args", nargs=-1)
@click.option("--revision", type=int, default=0, help="Show the pod template of this revision.")
@global_options
def rollout_history_command(args: tuple[str, ...], revision: int) -> None:
    """List a Deployment's or StatefulSet's revisions (REVISION, CHANGE-CAUSE), or show one with --revision."""
    if revision < 0:
        raise CommandError(f"--revision: must be a revision number (1 or more), got {revision}")
    sess, info, namespace, name = _statefulset(args, "history")
    sts = sess.get(info, namespace, name)
    if info.plural == "deployments":
        _deployment_history(sess, namespace, sts, revision)
        return
    revisions = _revisions(sess, namespace, sts)
    if not revision:
        if not revisions:
            click.echo(f"No rollout history found in statefulset \"{name}\"")
            return
        click.echo(cli_support.history_table(sts, revisions) + "\n", nl=False)
        return
    found = [r for r in revisions if int(r.get("revision") or 0) == revision]
    if not found:
        raise CommandError(f"unable to find the specified revision {revision}")
    template = template_of(found[-1])
    click.echo(f"statefulset.apps/{name} with revision #{revision}")
    click.echo("Pod Template:")
    click.echo(_indent(dump_yaml(template), "  "), nl=False)


def _indent(text: str, pad: str) -> str:
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template as compared for undo: the revision hash label is the controller's, not the user's."""
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.pop("controller-revision-hash", None)
    meta = {**(template.get("metadata") or {}), "labels": labels}
    if not labels:
        meta.pop("labels")
    out = {**template, "metadata": meta}
    if not meta:
        out.pop("metadata")
    return out


@rollout_command.command("undo")
@click.argument("args", nargs=-1)
@click.option("--to-revision", type=int, default=0, help="The revision to go back to (default: the previous one).")
@global_options
def rollout_undo_command(args: tuple[str, ...], to_revision: int) -> None:
    """Roll a Deployment's or StatefulSet's pod template back to an earlier revision."""
    if to_revision < 0:
        raise CommandError(f"--to-revision: must be a revision number (1 or more), got {to_revision}")
    sess, info, namespace, name = _statefulset(args, "undo")
    sts = sess.get(info, namespace, name)
    if info.plural == "deployments":
        _deployment_undo(sess, info, namespace, sts, to_revision)
        return
    revisions = _revisions(sess, namespace, sts)
    try:
        patch = cli_support.undo_patch_for(sts, revisions, to_revision)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    wanted = dict(((patch.get("spec") or {}).get("template") or {}))
    wanted.pop("$patch", None)
    if _without_hash(wanted) == _without_hash((sts.get("spec") or {}).get("template") or {}):
        target = to_revision or int(sort_revisions(revisions)[-2].get("revision") or 0)
        click.echo(f"statefulset.apps/{name} skipped rollback (current template already matches revision {target})")
        return
    # The precondition makes the undo apply to the set that was read, not to one changed meanwhile.
    patch = {**patch, "metadata": {"resourceVersion": sts["metadata"]["resourceVersion"]}}
    try:
        sess.patch(info, namespace, name, patch, "strategic")
    except Conflict:
        raise CommandError(f'statefulset "{name}" changed while rolling back; run the undo again') from None
    click.echo(cli_support.rolled_back_message(sts), nl=False)


@rollout_command.command("restart")
@click.argument("args", nargs=-1)
@global_options
def rollout_restart_command(args: tuple[str, ...]) -> None:
    """Replace every pod of a Deployment or StatefulSet by stamping its template with the time."""
    sess, info, namespace, name = _statefulset(args, "restart")
    if info.plural == "deployments" and (sess.get(info, namespace, name).get("spec") or {}).get("paused"):
        raise CommandError("can't restart paused deployment (run rollout resume first)")
    stamp = now()
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    sess.patch(info, namespace, name, patch, "merge")
    click.echo(f"{type_name(info)}/{name} restarted")


def _replica_sets(sess: Session, namespace: str, deploy: dict[str, Any]) -> list[dict[str, Any]]:
    info = by_plural("replicasets")
    assert info is not None
    selector = selector_string((deploy.get("spec") or {}).get("selector"))
    items, _ = sess.list(info, namespace, selector or None)
    return deployment_support.owned_sets(deploy, items)


def _deployment_history(sess: Session, namespace: str, deploy: dict[str, Any], revision: int) -> None:
    name = deploy["metadata"]["name"]
    sets = _replica_sets(sess, namespace, deploy)
    if not revision:
        if not sets:
            click.echo(f'No rollout history found in deployment "{name}"')
            return
        click.echo(deployment_support.history_table(deploy, sets), nl=False)
        return
    try:
        template = deployment_support.revision_template(deploy, sets, revision)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    click.echo(f"deployment.apps/{name} with revision #{revision}")
    click.echo("Pod Template:")
    click.echo(_indent(dump_yaml(template), "  "), nl=False)


def _deployment_undo(sess: Session, info: ResourceInfo, namespace: str, deploy: dict[str, Any],
                     to_revision: int) -> None:
    name = deploy["metadata"]["name"]
    if (deploy.get("spec") or {}).get("paused"):
        raise CommandError(f'you cannot rollback a paused deployment; resume it first with '
                           f'\'stowage rollout resume deployment/{name}\' and try again')
    sets = _replica_sets(sess, namespace, deploy)
    try:
        target = deployment_support.undo_target(deploy, sets, to_revision)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    revision = int((target["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision") or 0)
    if deployment_support.template_matches(deploy, target):
        click.echo(f"deployment.apps/{name} skipped rollback (current template already matches revision {revision})")
        return
    patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": deploy["metadata"]["resourceVersion"]},
             *deployment_support.undo_patch(deploy, target)]
    try:
        sess.patch(info, namespace, name, patch, "json")
    except BadRequest:
        raise CommandError(f'deployment "{name}" changed while rolling back; run the undo again') from None
    click.echo(f"deployment.apps/{name} rolled back")


def _set_paused(args: tuple[str, ...], paused: bool) -> None:
    verb = "pause" if paused else "resume"
    sess, info, namespace, name = _statefulset(args, verb, PAUSABLE)
    current = sess.get(info, namespace, name)
    if bool((current.get("spec") or {}).get("paused")) == paused:
        state = "already paused" if paused else "not paused"
        raise CommandError(f'{info.plural}.{info.group} "{name}" is {state}')
    sess.patch(info, namespace, name, {"spec": {"paused": paused}}, "merge")
    click.echo(f"{type_name(info)}/{name} {'paused' if paused else 'resumed'}")


@rollout_command.command("pause")
@click.argument("args", nargs=-1)
@global_options
def rollout_pause_command(args: tuple[str, ...]) -> None:
    """Stop a Deployment from rolling out template changes until it is resumed."""
    _set_paused(args, True)


@rollout_command.command("resume")
@click.argument("args", nargs=-1)
@global_options
def rollout_resume_command(args: tuple[str, ...]) -> None:
    """Let a paused Deployment roll out its template again."""
    _set_paused(args, False)
