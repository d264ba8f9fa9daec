"""The one exception tree of gpuid, and how long to wait before trying again.

Every failure gpuid can explain is a ``GpuidError``; callers catch the branch
they can act on. ``transient`` tells retry loops whether trying again can help,
so a 401 or a bad config is never retried forever; ``Backoff`` is the one
capped, jittered schedule every retry loop (watch, scans, delivery) uses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


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


@dataclass
class Backoff:
    """Delays of ``base * 2**n`` capped at ``cap``, drawn uniformly from [cap/2, cap]-style jitter."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self.attempt = 0
