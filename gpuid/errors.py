"""The one exception tree of gpuid.

Every failure gpuid can explain is a ``GpuidError``; callers catch the branch
they can act on. ``transient`` tells retry loops whether trying again can help,
so a 401 or a bad config is never retried forever.
"""

from __future__ import annotations


class GpuidError(Exception):
    """Base of every error gpuid raises on purpose."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class ConfigError(GpuidError):
    """Settings are missing or invalid; gpuid exits with code 2."""


class ExecError(GpuidError):
    """Running a command inside a pod failed (transport, deadline, exit code)."""

    transient = True

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        stderr: str = "",
        timed_out: bool = False,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message, transient=transient)
        self.exit_code = exit_code
        self.stderr = stderr
        self.timed_out = timed_out


class ParseError(GpuidError):
    """``nvidia-smi`` output could not be understood."""


class ApiError(GpuidError):
    """The Kubernetes API server answered with an error."""

    transient = True

    def __init__(self, message: str, *, status: int | None = None, transient: bool | None = None) -> None:
        super().__init__(message, transient=transient)
        self.status = status


class ExportError(GpuidError):
    """A backend refused or could not take a batch of records."""

    transient = True
