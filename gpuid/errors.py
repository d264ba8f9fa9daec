"""The one exception tree of gpuid.

Every failure gpuid can explain is a ``GpuidError``; callers catch the branch
they can act on. ``transient`` tells retry loops whether trying again can help,
so a 401 or a bad config is never retried forever::

    GpuidError
    ├── ConfigError        settings missing or invalid: exit code 2
    ├── ExecError          a command in a pod failed: transport, deadline, exit code
    ├── ParseError         nvidia-smi output that cannot be understood
    ├── ApiError           the Kubernetes API server answered with an error
    │   └── ExpiredError   the watch's resourceVersion is gone (410): re-list
    ├── ExportError        a backend did not take a batch (transient: retry)
    │   ├── RecordError    these records can never be stored: drop exactly them
    │   └── LaneError      backend misconfigured: park the lane, keep its records
    ├── SpoolCorruptError  a spool segment cannot be read back
    └── BugReportError     one bug-report collection failed
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
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, transient=transient)
        self.exit_code = exit_code
        self.stderr = stderr
        self.timed_out = timed_out
        self.retry_after = retry_after  # the API server's Retry-After: wait at least this long


class ParseError(GpuidError):
    """``nvidia-smi`` output could not be understood."""


class ApiError(GpuidError):
    """The Kubernetes API server answered with an error."""

    transient = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, transient=transient)
        self.status = status
        self.retry_after = retry_after  # the API server's Retry-After: wait at least this long


class ExportError(GpuidError):
    """A backend could not take a batch of records; on its own, a *transient* failure (retry it)."""

    transient = True


class RecordError(ExportError):
    """Some records can never be stored (a value the backend refuses): drop exactly those.

    ``indexes`` names the offending records of the batch when the exporter knows them; when it
    does not, delivery bisects the batch to find them.
    """

    transient = False

    def __init__(self, message: str, *, indexes: tuple[int, ...] = ()) -> None:
        super().__init__(message, transient=False)
        self.indexes = indexes


class LaneError(ExportError):
    """The backend is misconfigured (credentials, schema, bucket, token): park the lane, keep every record."""

    transient = False


class ExpiredError(ApiError):
    """The watch's resourceVersion is too old (410 Gone): the caller re-lists."""


class SpoolCorruptError(GpuidError):
    """A spool segment on disk could not be read back into records."""


class BugReportError(GpuidError):
    """A bug-report collection failed; ``result`` is its metric label (``failed`` or ``timeout``)."""

    def __init__(self, message: str, *, result: str = "failed") -> None:
        super().__init__(message)
        self.result = result
