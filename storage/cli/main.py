"""The ``stowage`` command: kubectl habits for Stowage's API, plus ``up`` and ``serve``.

Expected failures print one line on stderr and exit 1; only bugs show a traceback.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

# PF60: `stowage agent` runs for the node's lifetime on a memory budget. httpx (for its own command
# line) and structlog (for pretty tracebacks) import rich and pygments when they are installed, about
# 5 MiB resident that the agent never uses; marked absent here, before either is imported, both fall
# back as they do where the packages are missing. Every other command keeps them (bench draws with rich).
# PF96: the same for trio, which httpcore imports when it is installed for its async locks (3.4 MiB; the
# agent's HTTP is synchronous), and watchfiles, which uvicorn imports for its reloader (0.7 MiB).
if sys.argv[1:2] == ["agent"]:
    for _optional in ("rich", "pygments", "trio", "watchfiles"):
        sys.modules.setdefault(_optional, None)  # type: ignore[assignment]

import click
import httpx
import structlog

from storage.cli.context import global_options
from storage.cli.edits import EditError
from storage.cli.errors import CommandError, server_error_line, transport_error_line
from storage.cli.logging_setup import configure_logging
from storage.cli.manifests import ManifestError
from storage.errors import StowageError


# Each command's module is imported when the command is looked up (PF46): `stowage agent` runs for the
# node's lifetime and must not carry every other command's modules (about 2 MiB resident).
COMMANDS: dict[str, tuple[str, str]] = {
    "apply": ("storage.cli.write_commands", "apply_command"),
    "create": ("storage.cli.write_commands", "create_command"),
    "get": ("storage.cli.read_commands", "get_command"),
    "describe": ("storage.cli.read_commands", "describe_command"),
    "delete": ("storage.cli.write_commands", "delete_command"),
    "patch": ("storage.cli.write_commands", "patch_command"),
    "label": ("storage.cli.write_commands", "label_command"),
    "annotate": ("storage.cli.write_commands", "annotate_command"),
    "version": ("storage.cli.read_commands", "version_command"),
    "api-resources": ("storage.cli.read_commands", "api_resources_command"),
    "up": ("storage.cli.up", "up_command"),
    "serve": ("storage.cli.up", "serve_command"),
    "agent": ("storage.cli.agent_command", "agent_command"),
    "down": ("storage.cli.agent_command", "down_command"),
    "logs": ("storage.cli.logs_command", "logs_command"),
    "scale": ("storage.cli.workload_commands", "scale_command"),
    "rollout": ("storage.cli.workload_commands", "rollout_command"),
    "backup": ("storage.cli.backup_commands", "backup_group"),
    "restore": ("storage.cli.maintenance", "restore_command"),
    "rotate-secrets": ("storage.cli.maintenance", "rotate_secrets_command"),
    "create-user": ("storage.cli.identity_commands", "create_user_command"),
    "token": ("storage.cli.identity_commands", "token_group"),
    "snapshot": ("storage.cli.backup_commands", "snapshot_group"),
    "bench": ("storage.cli.bench.command", "bench_command"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> Any:
        if name in self.commands or name not in COMMANDS:
            return super().get_command(ctx, name)
        module, attr = COMMANDS[name]
        command = getattr(importlib.import_module(module), attr)
        self.add_command(command, name)
        return command


@click.group("stowage", cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@global_options
def cli() -> None:
    """Stowage: persistent storage for stateful workloads, the Kubernetes way.

    Start a local control plane with `stowage up`, then use the commands
    below as you would use kubectl.
    """


def main(argv: list[str] | None = None) -> int:
    server = ""
    try:
        # Every command logs on stderr at INFO by default (stdout is for its output); up, serve and agent
        # configure it again with their --log-format. A command run inside one of them (up's apply of
        # its manifests) keeps what that one chose.
        if not structlog.is_configured():
            configure_logging("console")
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
