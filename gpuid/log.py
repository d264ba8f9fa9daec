"""Structured logging: JSON lines on stderr, console rendering on a TTY, crashes included.

stdout belongs to the records, so every log line goes to stderr. Each line has
``timestamp``, ``level`` and ``event``, plus ``node``/``pod``/``error`` where
they apply, so ``jq 'select(.level=="error")'`` finds every failure. What
would otherwise reach stderr as a raw Python traceback (an uncaught exception,
an error the event loop only reports, a library's stdlib log record) is one
line of the same shape too: ``level=error``, ``error``, ``error_type`` and a
compact ``traceback`` (``file:line function`` frames, innermost last).
Exception groups are unwrapped: each cause is its own line, never "unhandled
errors in a TaskGroup".
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FORMATS = ("json", "console", "auto")
_FRAMES = 8
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

log = structlog.get_logger("gpuid")


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
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (aiohttp, kubernetes_asyncio): warnings and up, as JSON lines too.
    logging.basicConfig(level=logging.WARNING, handlers=[_ToStructlog()], force=True)
    logging.captureWarnings(True)  # Python's warnings too, instead of raw text on stderr


def early_format(values: Mapping[str, str]) -> str:
    """``LOG_FORMAT`` before the settings are validated (a bad value falls back to auto)."""
    fmt = values.get("LOG_FORMAT", "auto").strip().lower()
    return fmt if fmt in FORMATS else "auto"


def leaf_errors(error: BaseException) -> list[BaseException]:
    """The errors inside ``error``, exception groups (nested ones too) unwrapped."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaf_errors(inner)]
    return [error]


def compact_traceback(tb: TracebackType | None) -> str:
    """gpuid's own ``file.py:12 function`` frames, then the innermost one, on one line."""
    frames = traceback.extract_tb(tb)
    shown = [f for f in frames if f.filename.startswith(_PACKAGE)][-_FRAMES:]
    if frames and (not shown or shown[-1] is not frames[-1]):
        shown.append(frames[-1])  # where it broke, inside a library
    return " > ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in shown)


def error_fields(error: BaseException, *, with_traceback: bool = True) -> dict[str, str]:
    fields = {"error": str(error) or type(error).__name__, "error_type": type(error).__name__}
    if with_traceback and error.__traceback__ is not None:
        fields["traceback"] = compact_traceback(error.__traceback__)
    return fields


def log_errors(event: str, error: BaseException, *, with_traceback: bool = True, **extra: Any) -> None:
    """One ``level=error`` line per cause of ``error`` (each member of an exception group)."""
    for leaf in leaf_errors(error):
        log.error(event, **error_fields(leaf, with_traceback=with_traceback), **extra)


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        return
    error.__traceback__ = error.__traceback__ or tb
    log_errors("gpuid crashed", error)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _excepthook(args.exc_type, args.exc_value, args.exc_traceback)


def install_crash_handlers() -> None:
    """Uncaught exceptions (main thread or any other) become JSON lines instead of tracebacks."""
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's last resort (a task's error nobody retrieved, a failing callback)."""
    error = context.get("exception")
    task = context.get("task") or context.get("future")
    extra: dict[str, Any] = {"task": task.get_name()} if isinstance(task, asyncio.Task) else {}
    message = str(context.get("message") or "")
    if isinstance(error, BaseException):
        log_errors("unexpected error in the event loop", error, message=message, **extra)
    else:
        log.error("unexpected error in the event loop", error=message, error_type="", **extra)


class _ToStructlog(logging.Handler):
    """Re-emits stdlib log records through structlog so every stderr line has one format."""

    def emit(self, record: logging.LogRecord) -> None:
        extra: dict[str, Any] = {"logger": record.name}
        if record.exc_info and record.exc_info[1] is not None:
            extra |= error_fields(record.exc_info[1])
        structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **extra)
