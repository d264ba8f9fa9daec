"""An exporter that keeps records in memory: a test double, injected into the App, never selectable.

Tests read what the pipeline delivered from ``records`` (readings) and
``changes`` (``gpu_changed``) instead of patching anything; ``fail_next``
makes it refuse batches to exercise retries.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpuid.errors import ExportError
from gpuid.records import GpuChange, GPUReading, Record


class MemoryExporter:
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.records: list[GPUReading] = []
        self.changes: list[GpuChange] = []
        self.batches = 0
        self.fail_next = 0
        self.fail_transient = True
        self.closed = False

    async def open(self) -> None:
        return None

    async def export(self, batch: Sequence[Record]) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ExportError("memory exporter told to fail", transient=self.fail_transient)
        self.records.extend(r for r in batch if isinstance(r, GPUReading))
        self.changes.extend(r for r in batch if isinstance(r, GpuChange))
        self.batches += 1

    async def health(self) -> bool:
        return self.fail_next == 0

    async def close(self) -> None:
        self.closed = True
