"""The exporter contract and the registry that picks backends by name.

An exporter takes batches of records (``GPUReading``, and ``GpuChange`` from
``gpuid.fleet``) and delivers them to one backend. It raises ``ExportError``
(``transient`` says whether a retry can help) and never retries on its own:
delivery, batching and retries live in ``gpuid.delivery`` so every backend
behaves the same. Backends are imported
lazily, so a heavy client library is loaded only when its backend is chosen.
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


@runtime_checkable
class Exporter(Protocol):
    """What every backend implements."""

    name: str

    async def open(self) -> None:
        """Connect; may raise a transient ``ExportError`` when the backend is down."""

    async def export(self, batch: Sequence[Record]) -> None:
        """Deliver ``batch`` or raise ``ExportError``; must be safe to retry."""

    async def health(self) -> bool:
        """Whether the backend can take records right now."""

    async def close(self) -> None:
        """Release connections; called once, also after failures."""


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
