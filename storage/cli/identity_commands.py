"""``stowage create-user`` (a client-certificate kubeconfig) and ``stowage token create`` (a bootstrap token)."""
from __future__ import annotations

from pathlib import Path

import click

from storage.cli.context import global_options, session
from storage.cli.errors import CommandError
from storage.cli.up import KUBECONFIG_FILE, default_data_dir
from storage.cli.workload_commands import parse_duration


@click.command("create-user")
@click.argument("name")
@click.option("--group", "groups", multiple=True, metavar="GROUP", help="A group of the user (repeatable).")
@click.option("--data-dir", default=default_data_dir, show_default="~/.stowage or $STOWAGE_DATA_DIR",
              help="The control plane's data dir: the cluster CA's key lives there, so run this on that host.")
@click.option("-o", "--output", "output", default=None, metavar="PATH",
              help="Where to write the kubeconfig (default: <data-dir>/users/NAME.kubeconfig).")
@click.option("--server", default=None, help="API server URL (default: the one in <data-dir>/kubeconfig).")
@click.option("--days", default=365, show_default=True, help="Validity of the certificate in days.")
def create_user_command(name: str, groups: tuple[str, ...], data_dir: str, output: str | None, server: str | None,
                        days: int) -> None:
    """Issue a client certificate for NAME (CN) in GROUPs (O), signed by the cluster CA, as a kubeconfig."""
    from storage.apiserver.tls import CA_KEY, PKI_DIR, load_or_create_pki
    from storage.client.kubeconfig import load_access, write_kubeconfig

    root = Path(data_dir).expanduser()
    if not (root / PKI_DIR / CA_KEY).exists():
        raise CommandError(f"--data-dir: no cluster CA key in {root / PKI_DIR} (run this on the control-plane host, "
                           "after `stowage up` or `stowage serve` started once)")
    if not name or name.startswith("system:"):
        raise CommandError(f'NAME: Invalid value: "{name}": must be non-empty and not in the reserved "system:" space')
    if days < 1:
        raise CommandError(f"--days: Invalid value: {days}: must be at least 1")
    cluster = load_or_create_pki(root)
    admin = load_access(root / KUBECONFIG_FILE) if (root / KUBECONFIG_FILE).exists() else None
    url = server or (admin.server if admin else None)
    if not url:
        raise CommandError(f"--server: no {root / KUBECONFIG_FILE} to take the server's URL from; pass --server")
    cert, key = cluster.issue_client(name, groups, days=days)
    target = Path(output) if output else root / "users" / f"{name}.kubeconfig"
    write_kubeconfig(target, url, None, name, ca_data=admin.ca_data if admin and admin.ca_data else cluster.ca_pem,
                     client_cert=cert, client_key=key)
    click.echo(f"kubeconfig for user {name} (groups: {', '.join(groups) or 'none'}) written to {target}")


@click.group("token")
def token_group() -> None:
    """Bootstrap tokens, for joining a new host's agent (`stowage agent --bootstrap-kubeconfig`)."""


@token_group.command("create")
@global_options
@click.option("--ttl", default="24h", show_default=True, help="How long the token is valid (0: never expires).")
@click.option("--description", default="", help="Why the token exists.")
@click.option("--bootstrap-kubeconfig", "out", default=None, metavar="PATH",
              help="Also write a bootstrap kubeconfig (server, CA and the token) for `stowage agent`.")
def token_create_command(ttl: str, description: str, out: str | None) -> None:
    """Create a bootstrap token (Secret kube-system/bootstrap-token-<id>) and print it."""
    from storage.api.bootstrap_tokens import new_bootstrap_token
    from storage.client.kubeconfig import load_access, write_kubeconfig

    seconds = int(parse_duration(ttl, "--ttl"))
    token, secret = new_bootstrap_token(seconds, description)
    sess = session()
    sess.client.create(secret)
    if out:
        access = load_access(sess.options.kubeconfig)
        write_kubeconfig(out, access.server, token, "bootstrap", ca_data=access.ca_data, servers=access.servers)
    click.echo(token)
