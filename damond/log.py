"""structlog set-up: one place, JSON lines when stderr is not a terminal, console otherwise.

Library code gets loggers with `structlog.get_logger("damond.<area>")` and logs events as
snake_case facts (`state_changed`, `write_rejected`). Hot paths count and log summaries.
"""
from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def configure(level: str = "info", json: bool | None = None, stream=None) -> None:
    """Configure structlog once for the process (later calls reconfigure)."""
    global _configured
    stream = stream or sys.stderr
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str, **bind):
    return structlog.get_logger(name).bind(**bind) if bind else structlog.get_logger(name)
