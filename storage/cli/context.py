"""Shared plumbing for commands: global flags, the session, kind lookup, error reporting."""
from __future__ import annotations

import sys
from typing import Any, Callable, TypeVar

import click

from storage.api.registry import ResourceInfo, by_name
from storage.cli.errors import CommandError, server_error_line
from storage.cli.session import Options, Session
from storage.errors import StowageError

F = TypeVar("F", bound=Callable[..., Any])


def _store_kubeconfig(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _options(ctx).kubeconfig = value


def _store_namespace(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        opts = _options(ctx)
        opts.namespace = value
        opts.namespace_explicit = True


def _store_all(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _options(ctx).all_namespaces = True


def _options(ctx: click.Context) -> Options:
    root = ctx.find_root()
    if not isinstance(root.obj, Options):
        root.obj = Options()
    return root.obj


def global_options(f: F) -> F:
    """kubectl accepts its global flags before or after the command; so do we."""
    f = click.option("--kubeconfig", expose_value=False, callback=_store_kubeconfig, metavar="PATH",
                     help="Kubeconfig file (else $KUBECONFIG, else the default).")(f)
    f = click.option("-n", "--namespace", expose_value=False, callback=_store_namespace,
                     help='Namespace to use (default "default").')(f)
    f = click.option("-A", "--all-namespaces", is_flag=True, expose_value=False, callback=_store_all,
                     help="Across all namespaces.")(f)
    return f


def session() -> Session:
    ctx = click.get_current_context()
    root = ctx.find_root()
    opts = _options(ctx)
    sess = root.meta.get("stowage.session")
    if sess is None:
        sess = Session(opts)
        root.meta["stowage.session"] = sess
    return sess


def resolve_kind(name: str) -> ResourceInfo:
    info = by_name(name)
    if info is None:
        raise CommandError(f'the server doesn\'t have a resource type "{name}"')
    return info


def split_kind_names(args: tuple[str, ...] | list[str]) -> list[tuple[ResourceInfo, list[str]]]:
    """``pvc a b`` / ``pvc/a pv/b`` / ``pv,pvc`` into (resource, names) groups, in order."""
    if not args:
        raise CommandError("you must specify the type of resource")
    if all("/" in a for a in args):
        out: list[tuple[ResourceInfo, list[str]]] = []
        for arg in args:
            kind, _, name = arg.partition("/")
            if not name:
                raise CommandError(f'arguments in resource/name form must have a single resource and name: "{arg}"')
            info = resolve_kind(kind)
            if out and out[-1][0] is info:
                out[-1][1].append(name)
            else:
                out.append((info, [name]))
        return out
    if any("/" in a for a in args):
        raise CommandError("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form")
    kinds = [resolve_kind(k) for k in args[0].split(",") if k]
    names = list(args[1:])
    if len(kinds) > 1 and names:
        raise CommandError("you may only specify a single resource type when naming objects")
    return [(info, names) for info in kinds]


class Failures:
    """Collects per-object errors so a command can finish the other objects first, like kubectl."""

    def __init__(self) -> None:
        self.count = 0

    def server(self, err: StowageError, context: str = "") -> None:
        self.count += 1
        click.echo(server_error_line(err, context), err=True)

    def local(self, message: str) -> None:
        self.count += 1
        click.echo(f"error: {message}", err=True)

    def exit_if_any(self) -> None:
        if self.count:
            sys.stdout.flush()
            raise SystemExit(1)

