"""The exporter contract and the registry that picks backends by name.

An exporter takes batches of records (``GPUReading``, and ``GpuChange`` from
``gpuid.fleet``) and delivers them to one backend. When it cannot, it says what
the failure may cost, with one of three errors: ``ExportError`` (transient: the
same records later), ``RecordError`` (these records, by ``indexes`` when it
knows them, can never be stored) or ``LaneError`` (the backend is
misconfigured: keep every record, retry slowly). It never retries on its own
and never drops anything: batching, retries, bisection and parking live in
``gpuid.delivery`` so every backend behaves the same. Its ``timeout`` bounds one
``open`` or ``export``; delivery cancels an attempt that outlives it. Backends
are imported lazily, so a heavy client library is loaded only when its backend
is chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gpuid.errors import ConfigError
from gpuid.records import Record

if TYPE_CHECKING:
    from gpuid.exporters.http import HttpSettings
    from gpuid.exporters.postgres.settings import PostgresSettings
    from gpuid.exporters.s3client import S3Settings


@dataclass(frozen=True)
class ExporterSettings:
    """Which exporters run, and the settings of each selected one (parsed only when selected)."""

    names: tuple[str, ...] = ("stdout",)
    cluster: str = ""  # stamped into S3 keys
    s3: S3Settings | None = None
    postgres: PostgresSettings | None = None
    http: HttpSettings | None = None


DEFAULT_TIMEOUT = 60.0  # seconds, for an exporter that names no timeout of its own


@runtime_checkable
class Exporter(Protocol):
    """What every backend implements (and, optionally, ``timeout``: seconds one call may take)."""

    name: str

    async def open(self) -> None:
        """Connect; raises ``ExportError`` when the backend is down, ``LaneError`` when misconfigured."""

    async def export(self, batch: Sequence[Record]) -> None:
        """Deliver ``batch`` or raise ``ExportError``/``RecordError``/``LaneError``; must be safe to retry.

        After a ``RecordError`` delivery sends the other records again, so a backend
        may have stored them already.
        """

    async def health(self) -> bool:
        """Whether the backend can take records right now."""

    async def close(self) -> None:
        """Release connections; called once, also after failures."""


def attempt_timeout(exporter: Exporter) -> float:
    """Seconds one ``open`` or ``export`` of ``exporter`` may take: its ``timeout``, else 60."""
    timeout = getattr(exporter, "timeout", None)
    return float(timeout) if isinstance(timeout, int | float) and timeout > 0 else DEFAULT_TIMEOUT


def batch_limit(exporter: Exporter, default: int) -> int:
    """Most records per batch for ``exporter``: its own ``batch_size`` if it has one, else ``default``."""
    size = getattr(exporter, "batch_size", None)
    return size if isinstance(size, int) and size > 0 else default


# name -> (module, factory attribute, pip extra that brings its client)
REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "stdout": ("gpuid.exporters.stdout", "StdoutExporter", None),
    "s3": ("gpuid.exporters.s3", "S3Exporter", "s3"),
    "postgres": ("gpuid.exporters.postgres.exporter", "PostgresExporter", "postgres"),
    "http": ("gpuid.exporters.http", "HttpExporter", None),
}


def check_names(names: Sequence[str]) -> None:
    """``ConfigError`` unless every name is a known exporter."""
    for name in names:
        if name not in REGISTRY:
            raise ConfigError(f"EXPORTER_TYPE: unknown exporter {name!r}; choose from {', '.join(REGISTRY)}")


def build_exporters(settings: ExporterSettings) -> list[Exporter]:
    """Instantiate the selected exporters (a missing client library is a config error here)."""
    check_names(settings.names)
    exporters: list[Exporter] = []
    for name in dict.fromkeys(settings.names):
        module_name, attr, extra = REGISTRY[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            hint = f"; install it with: pip install 'gpuid[{extra}]'" if extra else ""
            raise ConfigError(f"exporter {name!r} needs a missing package ({e.name}){hint}") from e
        exporters.append(getattr(module, attr).from_settings(settings))
    return exporters
