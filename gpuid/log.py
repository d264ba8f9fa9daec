"""Structured logging: JSON lines on stderr, console rendering on a TTY.

stdout belongs to the records, so every log line goes to stderr. Each line has
``timestamp``, ``level`` and ``event``, plus ``node``/``pod``/``error`` where
they apply, so ``jq 'select(.level=="error")'`` finds every failure.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is at that moment (test captures swap it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = error = critical = exception = msg


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog once for the process; ``fmt`` is json, console or auto."""
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    factory: Any = structlog.PrintLoggerFactory(stream) if stream else (lambda *_: _StderrLogger())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer(separators=(",", ":"))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (aiohttp, kubernetes_asyncio): warnings and up, as JSON lines too.
    logging.basicConfig(level=logging.WARNING, handlers=[_ToStructlog()], force=True)


class _ToStructlog(logging.Handler):
    """Re-emits stdlib log records through structlog so every stderr line has one format."""

    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger(record.name).log(record.levelno, record.getMessage(), logger=record.name)
