"""The exporter contract and the registry that picks backends by name.

An exporter takes batches of ``GPUReading`` and delivers them to one backend.
It raises ``ExportError`` (``transient`` says whether a retry can help) and
never retries on its own: delivery, batching and retries live in
``gpuid.delivery`` so every backend behaves the same. Backends are imported
lazily, so a heavy client library is loaded only when its backend is chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from gpuid.config import Settings
from gpuid.errors import ConfigError
from gpuid.records import GPUReading


@runtime_checkable
class Exporter(Protocol):
    """What every backend implements."""

    name: str

    async def open(self) -> None:
        """Connect; may raise a transient ``ExportError`` when the backend is down."""

    async def export(self, batch: Sequence[GPUReading]) -> None:
        """Deliver ``batch`` or raise ``ExportError``; must be safe to retry."""

    async def health(self) -> bool:
        """Whether the backend can take records right now."""

    async def close(self) -> None:
        """Release connections; called once, also after failures."""


# name -> (module, factory attribute, pip extra that brings its client)
REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "stdout": ("gpuid.exporters.stdout", "StdoutExporter", None),
    "memory": ("gpuid.exporters.memory", "MemoryExporter", None),
    "s3": ("gpuid.exporters.s3", "S3Exporter", "s3"),
    "postgres": ("gpuid.exporters.postgres", "PostgresExporter", "postgres"),
    "http": ("gpuid.exporters.http", "HttpExporter", None),  # aiohttp comes with kubernetes-asyncio
}


def build_exporters(settings: Settings) -> list[Exporter]:
    """Instantiate the exporters named in ``settings.exporters`` (config errors raised here)."""
    exporters: list[Exporter] = []
    for name in dict.fromkeys(settings.exporters):
        if name not in REGISTRY:
            raise ConfigError(f"EXPORTER_TYPE: unknown exporter {name!r}; choose from {', '.join(REGISTRY)}")
        module_name, attr, extra = REGISTRY[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            hint = f"; install it with: pip install 'gpuid[{extra}]'" if extra else ""
            raise ConfigError(f"exporter {name!r} needs a missing package ({e.name}){hint}") from e
        exporters.append(getattr(module, attr).from_settings(settings))
    return exporters
