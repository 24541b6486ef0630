"""structlog set-up: one place, JSON lines or console lines, to stderr or a file.

Library code gets loggers with `structlog.get_logger("damond.<area>")` and logs events as
snake_case facts (`state_changed`, `write_rejected`). Hot paths count and log summaries,
or go through a `RateLimit` (printk_ratelimit's burst-per-interval rule).
"""
from __future__ import annotations

import logging
import sys
import threading
import time

import structlog

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "console")
_configured = False


def configure(level: str = "info", json: bool | None = None, stream=None, fmt: str | None = None) -> None:
    """Configure structlog once for the process (later calls reconfigure).

    fmt "json"/"console" wins over `json`; neither given: JSON unless `stream` is a tty.
    """
    global _configured
    stream = stream or sys.stderr
    if fmt is not None:
        json = fmt == "json"
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


def open_log_file(path: str):
    """The stream for --log-file: appended to, line buffered."""
    return open(path, "a", buffering=1, encoding="utf-8", errors="replace")


class RateLimit:
    """At most `burst` events per `interval_s` (as printk_ratelimit); `allow()` returns
    (allowed, how many were suppressed since the last allowed one)."""

    def __init__(self, burst: int = 10, interval_s: float = 5.0):
        self.burst, self.interval_s = burst, interval_s
        self._t0, self._n, self._missed = 0.0, 0, 0
        self._mutex = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        now = time.monotonic()
        with self._mutex:
            if now - self._t0 >= self.interval_s:
                self._t0, self._n = now, 0
            if self._n < self.burst:
                self._n += 1
                missed, self._missed = self._missed, 0
                return True, missed
            self._missed += 1
            return False, 0


def get_logger(name: str, **bind):
    return structlog.get_logger(name).bind(**bind) if bind else structlog.get_logger(name)
