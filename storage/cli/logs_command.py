"""``stowage logs POD [-c CONTAINER] [-f] [--previous] [--tail N]``: a pod's log through the API server."""
from __future__ import annotations

import os
import sys

import click

from storage.cli.context import global_options, session
from storage.cli.errors import CommandError


def pod_name(arg: str) -> str:
    """``web-0`` or ``pod/web-0`` (``pods/``, ``po/``); other kinds have no log of their own here."""
    if "/" not in arg:
        return arg
    kind, _, name = arg.partition("/")
    if kind not in ("pod", "pods", "po"):
        raise CommandError(f'cannot get the logs of "{kind}": only pods have logs (use POD or pod/POD)')
    if not name:
        raise CommandError(f'arguments in resource/name form must have a single resource and name: "{arg}"')
    return name


@click.command("logs")
@click.argument("pod")
@click.option("-c", "--container", default=None, help="The container whose log to print (required when the pod has several).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the container ends or Ctrl-C.")
@click.option("-p", "--previous", is_flag=True, help="The log of the container's previous, terminated run.")
@click.option("--tail", type=int, default=-1, show_default=True, help="Lines from the end to show; -1 shows all.")
@click.option("--timestamps", is_flag=True, hidden=True, help="Accepted for kubectl compatibility; ignored.")
@global_options
def logs_command(pod: str, container: str | None, follow: bool, previous: bool, tail: int, timestamps: bool) -> None:
    """Print the log of a container in a pod."""
    if tail < -1:
        raise CommandError(f"--tail: must be -1 (all lines) or a count of lines, got {tail}")
    if follow and previous:
        raise CommandError("--follow and --previous cannot be used together")
    name = pod_name(pod)
    sess = session()
    chunks = sess.client.logs(
        name, sess.options.namespace, container=container, follow=follow, previous=previous,
        tail_lines=None if tail == -1 else tail,
    )
    out = sys.stdout.buffer
    try:
        for chunk in chunks:
            out.write(chunk)
            # A followed log is read by people and pipes as it happens, not when a buffer fills.
            out.flush()
    except BrokenPipeError:
        # `stowage logs x | head` closed its end: not a failure. Point stdout at /dev/null so the
        # interpreter's final flush does not complain about the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
