"""Commands that only read: get, describe, version, api-resources."""
from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Any

import click

from storage.api.registry import ResourceInfo
from storage.cli import describe as describing
from storage.cli import tables
from storage.cli.context import Failures, global_options, session, split_kind_names
from storage.cli.errors import CommandError
from storage.cli.output import OUTPUT_FORMATS, as_list, dump_json, dump_yaml, object_ref, type_name
from storage.errors import NotFound


def _scope(info: ResourceInfo) -> str | None:
    """The namespace to read: None means every namespace."""
    sess = session()
    if not info.namespaced:
        return ""
    return None if sess.options.all_namespaces else sess.options.namespace


def _fetch(
    info: ResourceInfo, names: list[str], selector: str | None, field_selector: str | None, failures: Failures
) -> tuple[list[dict[str, Any]], str]:
    sess = session()
    namespace = _scope(info)
    if not names:
        return sess.list(info, namespace, selector, field_selector)
    found = []
    for name in names:
        try:
            obj = sess.get(info, namespace or sess.options.namespace if info.namespaced else "", name)
        except NotFound as err:
            failures.server(err)
            continue
        obj.setdefault("kind", info.kind)
        obj.setdefault("apiVersion", info.api_version)
        found.append(obj)
    return found, ""


@click.command("get")
@click.argument("args", nargs=-1, required=True)
@click.option("-l", "--selector", help="Label selector, e.g. app=web,tier!=cache.")
@click.option("--field-selector", help="Field selector, e.g. status.phase=Running (the fields Kubernetes selects on for the kind).")
@click.option("-o", "--output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@click.option("-w", "--watch", is_flag=True, help="After listing, print one row per change until interrupted.")
@click.option("--no-headers", is_flag=True, help="Omit the table header.")
@global_options
def get_command(args: tuple[str, ...], selector: str | None, field_selector: str | None,
                output: str | None, watch: bool, no_headers: bool) -> None:
    """Show objects: get KIND [NAME...], get KIND/NAME..., get KIND1,KIND2."""
    groups = split_kind_names(args)
    if watch and len(groups) > 1:
        raise CommandError("you may only specify a single resource type with --watch")
    failures = Failures()
    sess = session()
    collected: list[dict[str, Any]] = []
    printed_table = False
    single_named = len(groups) == 1 and len(groups[0][1]) == 1
    for info, names in groups:
        objects, list_version = _fetch(info, names, selector, field_selector, failures)
        if output in ("yaml", "json"):
            collected.extend(objects)
        elif output == "name":
            for obj in objects:
                click.echo(object_ref(obj, info))
        elif objects:
            if printed_table:
                click.echo("")
            _print_table(info, objects, output == "wide", no_headers, prefix=len(groups) > 1)
            printed_table = True
        elif not names and not watch and len(groups) == 1:
            where = "" if not info.namespaced or sess.options.all_namespaces else f" in {sess.options.namespace} namespace"
            click.echo(f"No resources found{where}.", err=True)
        if watch:
            _watch(info, list_version, selector, field_selector, output, no_headers or bool(objects))
    if output in ("yaml", "json"):
        body: Any = collected[0] if single_named and len(collected) == 1 else as_list(collected)
        if collected or not failures.count:
            click.echo(dump_yaml(body) if output == "yaml" else dump_json(body), nl=False)
    failures.exit_if_any()


def _print_table(info: ResourceInfo, objects: list[dict[str, Any]], wide: bool, no_headers: bool,
                 prefix: bool = False) -> None:
    with_namespace = info.namespaced and session().options.all_namespaces
    headers, rows = tables.table_rows(info.kind, objects, wide=wide, with_namespace=with_namespace)
    if prefix:
        name_col = headers.index("NAME") if "NAME" in headers else None
        if name_col is not None:
            rows = [[*r[:name_col], f"{type_name(info)}/{r[name_col]}", *r[name_col + 1:]] for r in rows]
    click.echo(tables.render(headers, rows, no_headers), nl=False)


def _watch(info: ResourceInfo, since: str, selector: str | None, field_selector: str | None,
           output: str | None, no_headers: bool) -> None:
    sess = session()
    if not since:
        # Named objects were read one by one; watch from the collection's current version.
        since = sess.list(info, _scope(info), selector, field_selector)[1]
    headers_done = no_headers
    try:
        for _type, obj in sess.watch(info, _scope(info), since, selector, field_selector):
            if output == "name":
                click.echo(object_ref(obj, info))
            elif output == "yaml":
                click.echo("---\n" + dump_yaml(obj), nl=False)
            elif output == "json":
                click.echo(dump_json(obj), nl=False)
            else:
                _print_table(info, [obj], output == "wide", headers_done)
                headers_done = True
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


@click.command("describe")
@click.argument("args", nargs=-1, required=True)
@click.option("-l", "--selector", help="Label selector.")
@global_options
def describe_command(args: tuple[str, ...], selector: str | None) -> None:
    """Describe objects in detail, with their events: describe KIND [NAME...]."""
    failures = Failures()
    sess = session()
    first = True
    for info, names in split_kind_names(args):
        objects, _ = _fetch(info, names, selector, None, failures)
        for obj in objects:
            if not first:
                click.echo("\n")
            first = False
            click.echo(describing.describe(obj, sess), nl=False)
        if not objects and not names:
            click.echo("No resources found.", err=True)
    failures.exit_if_any()


def client_version() -> str:
    try:
        return package_version("stowage")
    except PackageNotFoundError:
        return "unknown"


@click.command("version")
@click.option("--client", "client_only", is_flag=True, help="Only the client version.")
@global_options
def version_command(client_only: bool) -> None:
    """Print the client and server versions."""
    click.echo(f"Client Version: v{client_version()}")
    if client_only:
        return
    info = session().server_version()
    shown = info.get("gitVersion") or info.get("version") or str(info)
    click.echo(f"Server Version: {shown}")


@click.command("api-resources")
@click.option("--namespaced", type=bool, default=None, help="Only namespaced (true) or cluster-scoped (false) kinds.")
@click.option("--no-headers", is_flag=True)
@click.option("-o", "--output", type=click.Choice(["wide", "name"]))
@global_options
def api_resources_command(namespaced: bool | None, no_headers: bool, output: str | None) -> None:
    """List the kinds the server serves, from its discovery documents."""
    rows = []
    for group_version, res in session().discovery():
        if "/" in res.get("name", ""):
            continue  # subresources (status, scale) are not kinds
        if namespaced is not None and bool(res.get("namespaced")) != namespaced:
            continue
        if output == "name":
            group = group_version.split("/")[0] if "/" in group_version else ""
            rows.append([f"{res['name']}.{group}" if group else res["name"]])
            continue
        row = [res["name"], ",".join(res.get("shortNames") or []), group_version,
               "true" if res.get("namespaced") else "false", res.get("kind", "")]
        if output == "wide":
            row.append(",".join(res.get("verbs") or []))
        rows.append(row)
    rows.sort(key=lambda r: (r[2].split("/")[0] if len(r) > 2 and "/" in r[2] else "", r[0]))
    if output == "name":
        for r in rows:
            click.echo(r[0])
        return
    headers = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"] + (["VERBS"] if output == "wide" else [])
    click.echo(tables.render(headers, rows, no_headers), nl=False)
