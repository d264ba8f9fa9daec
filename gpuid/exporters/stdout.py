"""The default exporter: one compact JSON line per GPU on stdout.

stdout carries records only (logs go to stderr), so ``gpuid | jq`` sees one
``{"event": "gpu_reading", ...}`` object per GPU, and one
``{"event": "gpu_changed", ...}`` per change of a node's GPUs, and nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from gpuid.errors import ExportError
from gpuid.exporters import ExporterSettings
from gpuid.records import Record


class StdoutExporter:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @classmethod
    def from_settings(cls, settings: ExporterSettings) -> StdoutExporter:
        return cls()

    async def open(self) -> None:
        return None

    async def export(self, batch: Sequence[Record]) -> None:
        stream = self._stream or sys.stdout
        text = "".join(r.to_json(event=r.EVENT) + "\n" for r in batch)
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError) as e:
            raise ExportError(f"stdout write failed: {e}", transient=False) from e

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        return None
