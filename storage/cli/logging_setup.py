"""Logging of every ``stowage`` command: structured, on stderr, INFO unless $STOWAGE_LOG_LEVEL says otherwise."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from storage.cli.errors import CommandError

LOG_LEVEL_ENV = "STOWAGE_LOG_LEVEL"


def configure_logging(fmt: str) -> None:
    """Structured logs on stderr; JSON for machines, a console renderer for people.

    The level is $STOWAGE_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR; default INFO).
    """
    name = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise CommandError(f"${LOG_LEVEL_ENV}: unknown level {name!r}: use DEBUG, INFO, WARNING or ERROR")
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
    )
    # Libraries (uvicorn, SQLAlchemy) stay at WARNING unless DEBUG is asked for.
    logging.basicConfig(level=logging.DEBUG if level <= logging.DEBUG else logging.WARNING, stream=sys.stderr, force=True)
