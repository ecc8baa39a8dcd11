"""The ``stowage`` command: kubectl habits for Stowage's API, plus ``up`` and ``serve``.

Expected failures print one line on stderr and exit 1; only bugs show a traceback.
"""
from __future__ import annotations

import sys

import click
import httpx

from storage.cli.context import global_options, session
from storage.cli.edits import EditError
from storage.cli.errors import CommandError, server_error_line, transport_error_line
from storage.cli.manifests import ManifestError
from storage.cli.read_commands import api_resources_command, describe_command, get_command, version_command
from storage.cli.agent_command import agent_command, down_command
from storage.cli.identity_commands import create_user_command, token_group
from storage.cli.logs_command import logs_command
from storage.cli.backup_commands import backup_group, snapshot_group
from storage.cli.bench.command import bench_command
from storage.cli.maintenance import restore_command, rotate_secrets_command
from storage.cli.workload_commands import rollout_command, scale_command
from storage.cli.up import serve_command, up_command
from storage.cli.write_commands import (
    annotate_command,
    apply_command,
    create_command,
    delete_command,
    label_command,
    patch_command,
)
from storage.errors import StowageError


@click.group("stowage", context_settings={"help_option_names": ["-h", "--help"]})
@global_options
def cli() -> None:
    """Stowage: persistent storage for stateful workloads, the Kubernetes way.

    Start a local control plane with `stowage up`, then use the commands
    below as you would use kubectl.
    """


for _command in (
    apply_command, create_command, get_command, describe_command, delete_command, patch_command,
    label_command, annotate_command, version_command, api_resources_command, up_command, serve_command,
    agent_command, down_command, logs_command, scale_command, rollout_command,
    backup_group, restore_command, rotate_secrets_command, create_user_command, token_group, snapshot_group,
    bench_command,
):
    cli.add_command(_command)




def main(argv: list[str] | None = None) -> int:
    server = ""
    try:
        with cli.make_context("stowage", list(sys.argv[1:] if argv is None else argv)) as ctx:
            try:
                cli.invoke(ctx)
            finally:
                sess = ctx.meta.get("stowage.session")
                server = getattr(sess, "server", "") or ""
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except (CommandError, ManifestError, EditError) as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except StowageError as exc:
        click.echo(server_error_line(exc), err=True)
        return 1
    except httpx.TransportError as exc:
        click.echo(transport_error_line(exc, server), err=True)
        return 1
    except FileNotFoundError as exc:
        click.echo(f"error: {exc.strerror}: {exc.filename}" if exc.filename else f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
