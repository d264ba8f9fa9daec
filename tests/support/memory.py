"""An exporter that keeps records in memory: a test double, injected into the App, never selectable.

Tests read what the pipeline delivered from ``records`` instead of patching
anything; ``fail_next`` makes it refuse batches to exercise retries.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpuid.errors import ExportError
from gpuid.records import GPUReading


class MemoryExporter:
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.records: list[GPUReading] = []
        self.batches = 0
        self.fail_next = 0
        self.fail_transient = True
        self.closed = False

    async def open(self) -> None:
        return None

    async def export(self, batch: Sequence[GPUReading]) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ExportError("memory exporter told to fail", transient=self.fail_transient)
        self.records.extend(batch)
        self.batches += 1

    async def health(self) -> bool:
        return self.fail_next == 0

    async def close(self) -> None:
        self.closed = True
